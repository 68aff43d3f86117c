"""Exactly once with many processes: each guarantee is proven by running the competing processes
for real and counting, from the fake server's own ledger, what it accepted twice.

* two processes on one delivery id (the lease and the row claims);
* two retry runners, the first one's lock session terminated mid-run (claims, lost-lock stop);
* four deliveries with overlapping tokens, with opt-out and retry runs in loops (lock order, retries);
* concurrent first soft errors on new tokens (the quarantine counter);
* a retry runner SIGKILLed mid-pass, then the next pass (in flight -> interrupted, never resent);
* a send SIGKILLed with every answer slow: what is in doubt is what had reached the server.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from jobs.runner import run_job
from push import Notification
from push.clock import FakeClock, SystemClock
from push.pipeline import read_report, send_batch
from tables import delivery as dq
from tables import store
from tables.locks import lock_key
from tables.models import QUAR
from tests.concurrency.helpers import Done, env_for, no_traceback, start, wait_until, write_input
from tests.db_plugin import _libpq_url
from tests.faults.helpers import APP, FCM_APP, apns_id, assert_ledger, fault, log_rows, make_config

pytestmark = pytest.mark.timeout(240)


def accepted_twice(fake_server) -> dict[str, int]:
    return {k: v for k, v in fake_server.accepted.items() if v > 1}


def finished(*done: Done, ok: tuple[int, ...] = (0,)) -> None:
    for d in done:
        no_traceback(d)
        assert d.rc in ok, f"{d.name} exited {d.rc}: {d.output[-2000:]}"
        assert "deadlock" not in d.output.lower(), f"{d.name}: a deadlock escaped:\n{d.output[-2000:]}"


# --------------------------------------------------------------------------- one delivery, two runners


def test_two_processes_on_one_delivery_send_each_notification_once(db, fake_server, apns_key, service_account,
                                                                   tmp_path):
    engine, url = db
    fake_server.slow_delay = 0.3
    rows = [("apns", APP, apns_token("slow", i) if i % 25 == 3 else ok_apns_token(i)) for i in range(1500)]
    rows += [("fcm", FCM_APP, ok_fcm_token(i)) for i in range(500)]
    env = env_for(fake_server, apns_key, service_account, url)
    inp = write_input(tmp_path, "twice", rows)
    procs = [start(name, env, tmp_path, CONC_MODE="send", CONC_DELIVERY="twice", CONC_INPUT=inp) for name in "ab"]
    done = [p.wait() for p in procs]
    finished(*done, ok=(0, 3))
    assert 0 in [d.rc for d in done], [d.output[-500:] for d in done]
    for d in done:
        if d.rc == 3:  # the second runner of a live delivery says so in one line and sends nothing
            assert "is being sent by another process" in d.result["error"]
    assert not accepted_twice(fake_server)
    assert_ledger(engine, "twice", len(rows), fake_server.accepted)


# --------------------------------------------------------------------------- retry runners


def seed_retries(engine, delivery: str, tokens: list[str], *, in_doubt: bool = True) -> None:
    """``retry_pending`` rows due now, as a delivery whose first sends lost their connection leaves them."""
    now = SystemClock().now()
    with engine.begin() as conn:
        dq.ensure_delivery(conn, delivery, None, now)
        store.insert_delivery_logs(conn, [{
            "delivery_id": delivery, "seq": i, "token": token, "platform": "apns", "app": APP,
            "status": "retry_pending", "attempts": 1, "failure_type": "undefined", "failure_reason": 3,
            "error_text": "APNs connection lost: " + ("may have been delivered" if in_doubt else "not sent") + "; x",
            "next_retry_at": now - timedelta(minutes=1), "expires_at": now + timedelta(days=1),
            "payload": Notification(token=token, platform="apns", app=APP, title="t", body="b").to_json(),
        } for i, token in enumerate(tokens)], now=now - timedelta(minutes=2))


def retry_tokens(n: int, slow_every: int = 10) -> list[str]:
    return [apns_token("slow", i) if i % slow_every == 1 else ok_apns_token(i) for i in range(n)]


def test_two_retry_runners_with_the_first_lock_session_terminated(pg_engine, _pg_session_url, pg_admin_url,
                                                                  fake_server, apns_key, service_account, tmp_path):
    engine, url = pg_engine, _pg_session_url
    fake_server.slow_delay = 0.5
    seed_retries(engine, "r-lost", retry_tokens(1500))
    env = env_for(fake_server, apns_key, service_account, url, concurrency=20, chunk_size=100)
    first = start("first", env, tmp_path, CONC_MODE="retry")
    wait_until(lambda: len(fake_server.accepted) >= 150, 60, "the first runner to be sending")
    key = lock_key("retry")
    with psycopg.connect(_libpq_url(pg_admin_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = ((%s::bigint >> 32) & 4294967295)::oid AND objid = (%s::bigint & 4294967295)::oid",
            [key, key]).fetchall()
    assert killed, "the first runner's lock session was found and terminated"
    fault("retry runner's lock session terminated", len(killed))
    second = start("second", env, tmp_path, CONC_MODE="retry")
    a, b = first.wait(), second.wait()
    finished(a, b)
    assert not accepted_twice(fake_server), "a retry was accepted twice"
    first_run = a.result["results"][0]
    assert first_run["stopped"] or first_run["status"] == "ok", first_run
    # Whatever is left (the first stopped early) is due again for the next pass; nothing resent twice.
    run_job("retry", engine, make_config(fake_server, apns_key, service_account, url), FakeClock(
        SystemClock().now() + timedelta(minutes=10)))
    rows = log_rows(engine, "r-lost")
    assert Counter(r.status for r in rows) == {"sent": 1500}
    assert all(fake_server.accepted[apns_id("r-lost", r.seq)] == 1 for r in rows)
    # Each was resent once though it may have been delivered before: counted, and collapsible on the device.
    assert read_report(engine, "r-lost").resent_in_doubt == 1500
    assert all(r.headers.get("apns-collapse-id") == r.headers.get("apns-id") for r in fake_server.requests
               if r.provider == "apns")


def test_sigkill_of_a_retry_runner_mid_pass_never_resends_what_was_in_flight(db, fake_server, apns_key,
                                                                             service_account, tmp_path):
    engine, url = db
    # Every answer late: the resends in flight at the kill are waiting for answers, long written (a
    # request still in the killed process's socket buffer is dropped with the socket's reset).
    fake_server.slow_delay = 1.0
    seed_retries(engine, "r-kill", [apns_token("slow", i) for i in range(600)])
    env = env_for(fake_server, apns_key, service_account, url, concurrency=30, chunk_size=400)
    runner = start("runner", env, tmp_path, CONC_MODE="retry")
    wait_until(lambda: len(fake_server.accepted) >= 100, 60, "the runner to be sending")
    time.sleep(0.5)  # mid-wait for a round of answers
    os.kill(runner.popen.pid, signal.SIGKILL)
    assert runner.popen.wait(10) == -signal.SIGKILL
    fault("retry runner SIGKILLed mid-pass")
    time.sleep(1.5)  # the server answers what reached it before the socket died
    in_flight = {r.seq for r in log_rows(engine, "r-kill") if r.status == "retry_pending" and r.next_retry_at is None}
    assert in_flight and len(in_flight) <= 30, len(in_flight)
    seen = {r.headers.get("apns-id") for r in fake_server.requests}
    assert all(apns_id("r-kill", s) in seen for s in in_flight), "only sends that reached the server are in doubt"
    accepted_before = Counter(fake_server.accepted)

    cfg = make_config(fake_server, apns_key, service_account, url)
    # The next pass, once the dead pass's claims are stale: in flight -> interrupted, the rest resent.
    result = run_job("retry", engine, cfg, FakeClock(SystemClock().now() + timedelta(minutes=10)))
    assert result.ok, result.summary()
    rows = {r.seq: r for r in log_rows(engine, "r-kill")}
    for seq in in_flight:
        assert rows[seq].status == "failed" and "interrupted" in rows[seq].error_text
        assert fake_server.accepted[apns_id("r-kill", seq)] == accepted_before[apns_id("r-kill", seq)]
    others = Counter((r.status, r.error_text) for s, r in rows.items() if s not in in_flight)
    assert set(others) <= {("sent", None)}, others
    assert not accepted_twice(fake_server)


# --------------------------------------------------------------------------- shared tokens


def test_four_deliveries_with_shared_tokens_and_jobs_in_loops(pg_engine, _pg_session_url, fake_server, apns_key,
                                                              service_account, tmp_path):
    engine, url = pg_engine, _pg_session_url
    fake_server.slow_delay = 0.2
    pool = ([("apns", APP, ok_apns_token(i)) for i in range(500)]
            + [("apns", APP, apns_token("unregistered", i)) for i in range(100)]
            + [("apns", APP, apns_token("device_token_not_for_topic", i)) for i in range(100)]
            + [("apns", APP, apns_token("slow", i)) for i in range(20)]
            + [("fcm", FCM_APP, ok_fcm_token(i)) for i in range(200)]
            + [("fcm", FCM_APP, fcm_token("unregistered", i)) for i in range(80)])
    env = env_for(fake_server, apns_key, service_account, url, concurrency=40, chunk_size=150)
    procs = []
    for d in range(4):
        rows = list(pool)
        random.Random(d).shuffle(rows)  # each delivery meets the tokens in its own order
        procs.append(start(f"d{d}", env, tmp_path, CONC_MODE="send", CONC_DELIVERY=f"shared-{d}",
                           CONC_TITLE=f"shared-{d}", CONC_INPUT=write_input(tmp_path, f"shared-{d}", rows)))
    procs.append(start("opt-out", env, tmp_path, CONC_MODE="opt-out", CONC_LOOPS="25"))
    procs.append(start("retry", env, tmp_path, CONC_MODE="retry", CONC_LOOPS="10"))
    done = [p.wait() for p in procs]
    finished(*done)
    for d in done[-2:]:
        assert all(r["status"] in ("ok", "skipped") for r in d.result["results"]), d.result
    for d in range(4):
        assert_ledger(engine, f"shared-{d}", len(pool), fake_server.accepted, check_sent_accepted=False)
    assert not accepted_twice(fake_server)


def test_concurrent_first_soft_errors_on_new_tokens_are_all_counted(db, fake_server, apns_key, service_account,
                                                                   tmp_path):
    engine, url = db
    tokens = [apns_token("device_token_not_for_topic", i) for i in range(150)]
    env = env_for(fake_server, apns_key, service_account, url, concurrency=50, chunk_size=150)
    inp = write_input(tmp_path, "soft", [("apns", APP, t) for t in tokens])
    procs = [start(f"s{d}", env, tmp_path, CONC_MODE="send", CONC_DELIVERY=f"soft-{d}", CONC_INPUT=inp)
             for d in range(4)]
    finished(*[p.wait() for p in procs])
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(QUAR.c.token, QUAR.c.error_count)).all())
    assert set(counts) == set(tokens)
    wrong = {t: c for t, c in counts.items() if c != 4}
    assert not wrong, f"{len(wrong)} tokens lost soft errors: {list(wrong.values())[:10]}"


# --------------------------------------------------------------------------- in doubt after a kill


def test_a_killed_send_leaves_in_doubt_only_what_reached_the_server(db, fake_server, apns_key, service_account,
                                                                   tmp_path):
    engine, url = db
    fake_server.slow_delay = 1.0  # every answer late: sends in flight are waiting, not just written
    rows = [("apns", APP, apns_token("slow", i)) for i in range(600)]
    env = env_for(fake_server, apns_key, service_account, url, concurrency=50, chunk_size=200)
    proc = start("send", env, tmp_path, CONC_MODE="send", CONC_DELIVERY="doubt", CONC_INPUT=write_input(
        tmp_path, "doubt", rows))
    wait_until(lambda: len(fake_server.accepted) >= 100, 60, "the send to be under way")
    time.sleep(0.5)  # mid-wait for a round of answers
    os.kill(proc.popen.pid, signal.SIGKILL)
    assert proc.popen.wait(10) == -signal.SIGKILL
    fault("send SIGKILLed with every answer slow")
    time.sleep(1.5)
    before = {r.seq: r for r in log_rows(engine, "doubt")}
    in_doubt = {s for s, r in before.items() if r.status == "pending" and r.attempts > 0}
    assert in_doubt and len(in_doubt) <= 50
    seen = {r.headers.get("apns-id") for r in fake_server.requests}
    never = sorted(s for s in in_doubt if apns_id("doubt", s) not in seen)
    assert not never, f"{len(never)} of {len(in_doubt)} sends in doubt had never reached the server"
    cfg = make_config(fake_server, apns_key, service_account, url, stream_timeout=5.0)
    send_batch([Notification(token=t, platform=p, app=a, title="t", body="b") for p, a, t in rows], cfg, "doubt")
    assert_ledger(engine, "doubt", len(rows), fake_server.accepted)
