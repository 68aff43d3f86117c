"""One delivery sent by many ``push-feedback worker`` processes on Celery (RabbitMQ, Redis), Postgres the ledger.

Every guarantee is checked against the fake server's own ledger of what it accepted:

* 3 workers, one SIGKILLed mid-shard and one SIGTERMed mid-shard, on each broker: one row per
  notification, nothing accepted twice, the report equal to one ``send_batch`` of the same delivery
  (the dead worker's sends in flight aside: recorded ``interrupted``, never resent);
* a shard task delivered twice while its first worker is still sending: nothing accepted twice;
* 4 workers on two deliveries sharing soft-error tokens: every soft error counted, no deadlock escapes.
"""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, ok_apns_token
from push import Notification, read_report, send_batch
from push.pipeline import _reason_label
from push.celery_app import enqueue, make_app
from push.shards import prepare
from tables import shards as sq
from tables.engine import make_engine
from tables.migrate import upgrade
from tables.models import DELIV, DLOG, QUAR
from tests.faults.helpers import APP, assert_ledger, make_config
from tests.scale.helpers import (Worker, interrupt, mixed, no_escapes, start_worker, wait_ready, wait_until,
                                 worker_env)

pytestmark = pytest.mark.timeout(300)


def accepted_twice(fake_server) -> dict[str, int]:
    return {k: v for k, v in fake_server.accepted.items() if v > 1}


def pending(engine, delivery: str) -> int:
    with engine.connect() as c:
        return sq.pending_count(c, delivery)


def config_for(fake_server, apns_key, service_account, url, broker_url, queue, **kw):
    return make_config(fake_server, apns_key, service_account, url, broker_url=broker_url, queue=queue,
                       stream_timeout=5.0, **kw)


def finish(workers: list[Worker], engine, deliveries: list[str], timeout: float = 150) -> None:
    wait_until(lambda: all(pending(engine, d) == 0 for d in deliveries), timeout, "every shard to be sent")
    for w in workers:
        if w.popen.poll() is None:
            w.signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)


def test_a_shard_delivered_twice_while_its_worker_sends_is_sent_once(rabbitmq_url, queue, new_pg, workers,
                                                                     fake_server, apns_key, service_account,
                                                                     tmp_path):
    url, engine = new_pg()
    fake_server.slow_delay = 0.2  # 500 slow answers, 50 at a time: a shard takes 2 s
    items = [Notification(token=apns_token("slow", i), platform="apns", app=APP, title="t", body="b")
             for i in range(1000)]
    cfg = config_for(fake_server, apns_key, service_account, url, rabbitmq_url, queue, concurrency=50)
    prep = prepare(items, cfg, "twice", shard_size=500, engine=engine)
    env = worker_env(fake_server, apns_key, service_account, url, rabbitmq_url, queue, concurrency=50)
    workers += [start_worker(n, env, tmp_path) for n in ("w1", "w2")]
    wait_ready(*workers)
    app = make_app(cfg)
    # The forced duplicate: each shard's task published twice, back to back; two idle workers take the
    # two copies of the first shard at once.
    enqueue(app, prep, [s for s in prep.shards for _ in range(2)])
    app.close()
    finish(workers, engine, ["twice"], timeout=60)
    no_escapes(*workers)
    assert not accepted_twice(fake_server)
    assert_ledger(engine, "twice", len(items), fake_server.accepted)
    logs = "".join(w.text() for w in workers)
    assert "held by another worker" in logs, "the second copy found the shard's lease taken"


# --------------------------------------------------------------------------- kill, terminate, compare

N = 30_000
SHARD = 2500
_BASELINE: dict[int, dict] = {}


def ledger(engine, delivery: str) -> dict[int, tuple]:
    with engine.connect() as c:
        return {r.seq: (r.status, r.failure_type, r.failure_reason, r.error_text or "", r.token) for r in c.execute(
            sa.select(DLOG.c.seq, DLOG.c.status, DLOG.c.failure_type, DLOG.c.failure_reason, DLOG.c.error_text,
                      DLOG.c.token).where(DLOG.c.delivery_id == delivery))}


def quarantine(engine) -> dict[str, tuple]:
    with engine.connect() as c:
        return {r.token: (r.status, r.error_count) for r in c.execute(sa.select(QUAR))}


def baseline(fake_server, cfg, items, tmp_path) -> dict:
    """The same delivery sent by one send_batch process, in a database of its own (once per session: SQLite,
    three times faster than Postgres here, and the engine has no say in any outcome)."""
    if N not in _BASELINE:
        engine = make_engine(f"sqlite:///{tmp_path}/baseline.db")
        upgrade(engine)
        send_batch(items, cfg.with_(database_url=str(engine.url)), "scale", engine=engine)
        _BASELINE[N] = {"report": comparable(read_report(engine, "scale")), "rows": ledger(engine, "scale"),
                        "quarantine": quarantine(engine)}
        engine.dispose()
        fake_server.reset()
    return _BASELINE[N]


def comparable(report) -> dict:
    d = report.as_dict()
    for k in ("delivery_id", "resumed", "stopped", "stop_signal", "unsent_resends", "resent_in_doubt"):
        d.pop(k)
    return d


def moved(report: dict, rows_from: dict[int, tuple], rows_to: dict[int, tuple], seqs: set[int]) -> dict:
    """``report`` with the rows ``seqs`` counted as ``rows_to`` has them instead of ``rows_from``."""
    out = {**report, "failed_by_type_reason": Counter(report["failed_by_type_reason"])}
    for seq in seqs:
        for row, step in ((rows_from[seq], -1), (rows_to[seq], +1)):
            status, ftype, reason = row[:3]
            key = {"sent": "sent", "failed": "failed", "retry_pending": "retry_pending"}[status]
            out[key] += step
            if status == "failed":
                out["failed_by_type_reason"][f"{ftype or 'undefined'} / {_reason_label(reason)}"] += step
    out["failed_by_type_reason"] = {k: v for k, v in out["failed_by_type_reason"].items() if v}
    return out


def entered(q: dict[str, tuple], tokens: set[str]) -> int:
    return sum(1 for t in tokens if q.get(t, ("",))[0] == "quarantine")


def mid_shard(w: Worker, engine, delivery: str, at_least: int, other_than: tuple[int, ...] = ()) -> int:
    """Wait until ``w`` is ``at_least`` rows into a shard (not one of ``other_than``), and return the shard."""
    def ready():
        index = w.current_shard()
        if index is None or index in other_than:
            return None
        with engine.connect() as c:
            p = {p.shard: p for p in sq.progress(c, delivery, SHARD)}.get(index)
        return index if p is not None and at_least <= p.done < SHARD - 200 else None
    return wait_until(ready, 90, f"worker {w.name} to be mid-shard")


def test_three_workers_one_killed_one_terminated_send_each_notification_once(
        broker_url, queue, new_pg, workers, fake_server, apns_key, service_account, tmp_path):
    fake_server.slow_delay = 0.3
    items = mixed(N)
    url, engine = new_pg()
    # Redis redelivers a dead worker's shard after the visibility timeout: short here, so the test does not
    # wait an hour; shorter than some shards take on a busy machine, so those are delivered twice as well.
    cfg = config_for(fake_server, apns_key, service_account, url, broker_url, queue, concurrency=100,
                     chunk_size=1000, broker_visibility_timeout=10)
    base = baseline(fake_server, cfg, items, tmp_path)

    prep = prepare(items, cfg, "scale", shard_size=SHARD, engine=engine)
    assert len(prep.shards) == 13 and prep.report.pending == N  # 30,002 rows: the last shard holds 2
    env = worker_env(fake_server, apns_key, service_account, url, broker_url, queue, broker_visibility_timeout=10)
    a, b, c = (start_worker(n, env, tmp_path) for n in ("a", "b", "c"))
    workers += [a, b, c]
    wait_ready(a, b, c)
    app = make_app(cfg)
    enqueue(app, prep, prep.shards)
    app.close()

    wait_until(lambda: pending(engine, "scale") <= N * 0.6, 120, "a third of the delivery to be sent")
    killed = mid_shard(a, engine, "scale", 300)
    interrupt(a, signal.SIGKILL)
    d = start_worker("d", env, tmp_path)  # as a supervisor would, after the kill
    workers.append(d)
    drained = mid_shard(b, engine, "scale", 300, other_than=(killed,))
    interrupt(b, signal.SIGTERM)
    assert b.wait(30) == 0, b.text()[-3000:]
    assert "draining" in b.text(), "the SIGTERMed worker gave its shard back after the sends in flight"
    finish([c, d], engine, ["scale"], timeout=180)
    no_escapes(b, c, d)
    # The broker gave the killed worker's shard and the drained one to other workers.
    later = b.text() + c.text() + d.text()
    assert f"shard {killed} (seqs" in later and later.count(f"shard {drained} (seqs") >= 2

    # One row per notification, nothing accepted twice, every 'sent' accepted once.
    assert not accepted_twice(fake_server)
    assert_ledger(engine, "scale", len(items), fake_server.accepted)
    rows, expected = ledger(engine, "scale"), base["rows"]
    # The killed worker's sends in flight: recorded 'interrupted' (never resent), and each had reached the server.
    in_doubt = {s for s, r in rows.items() if "interrupted" in r[3]}
    assert len(in_doubt) <= 100, len(in_doubt)  # at most PUSH_CONCURRENCY
    assert all(killed * SHARD <= s < (killed + 1) * SHARD for s in in_doubt)
    differ = {s for s in rows if rows[s][:3] != expected[s][:3]}
    assert differ == in_doubt, sorted(differ - in_doubt)[:10]
    # The report: send_batch's, once the in-doubt rows are counted as they were recorded.
    report = comparable(read_report(engine, "scale"))
    doubtful = {rows[s][4] for s in in_doubt}
    now_q = quarantine(engine)
    want = moved(base["report"], expected, rows, in_doubt)
    want["quarantined_after_delivery"] += entered(now_q, doubtful) - entered(base["quarantine"], doubtful)
    assert report == want
    assert report["failed"] and report["retry_pending"] and report["excluded"] == 2
    # Quarantine: the same entries, but for the tokens whose send is in doubt.
    got = {t: q for t, q in now_q.items() if t not in doubtful}
    assert got == {t: q for t, q in base["quarantine"].items() if t not in doubtful}
    assert got, "dead and soft-error tokens were quarantined"
    with engine.connect() as conn:
        assert conn.execute(sa.select(DELIV.c.finished_at).where(DELIV.c.id == "scale")).scalar_one() is not None


# --------------------------------------------------------------------------- shared tokens, four workers


def test_four_workers_two_deliveries_sharing_soft_error_tokens_count_every_error(
        rabbitmq_url, queue, new_pg, workers, fake_server, apns_key, service_account, tmp_path):
    url, engine = new_pg()
    soft = [apns_token("device_token_not_for_topic", i) for i in range(600)]
    dead = [apns_token("unregistered", i) for i in range(150)]
    ok = [ok_apns_token(i) for i in range(750)]
    cfg = config_for(fake_server, apns_key, service_account, url, rabbitmq_url, queue, concurrency=50)
    preps = []
    for d in range(2):
        tokens = soft + dead + ok
        random.Random(d).shuffle(tokens)  # each delivery meets the shared tokens in its own order
        items = [Notification(token=t, platform="apns", app=APP, title=f"d{d}", body="b") for t in tokens]
        preps.append(prepare(items, cfg, f"shared-{d}", shard_size=100, engine=engine))
    env = worker_env(fake_server, apns_key, service_account, url, rabbitmq_url, queue, concurrency=50)
    ws = [start_worker(f"s{i}", env, tmp_path) for i in range(4)]
    workers += ws
    wait_ready(*ws)
    app = make_app(cfg)
    # Interleaved: at any moment the four workers send shards of both deliveries, on the same tokens.
    for first, second in zip(preps[0].shards, preps[1].shards):
        enqueue(app, "shared-0", [first])
        enqueue(app, "shared-1", [second])
    app.close()
    finish(ws, engine, ["shared-0", "shared-1"], timeout=150)
    no_escapes(*ws)
    assert not accepted_twice(fake_server)
    for p in preps:
        assert_ledger(engine, p.delivery_id, p.count, fake_server.accepted)
    with engine.connect() as c:
        counts = dict(c.execute(sa.select(QUAR.c.token, QUAR.c.error_count)).all())
    wrong = {t: counts.get(t) for t in soft if counts.get(t) != 2}
    assert not wrong, f"{len(wrong)} tokens lost soft errors: {list(wrong.values())[:10]}"
    assert all(t in counts for t in dead)
    assert all(": done:" in w.text() for w in ws), "all four workers sent shards"
