"""The process is killed with SIGKILL mid-batch; the delivery is resumed in-process.

Every notification ends with exactly one row; nothing the server accepted is sent
again (APNs: the pipeline's apns-id is stable per (delivery, seq), and the fake server
counts acceptances by apns-id); rows found in flight are recorded ``interrupted``
(docs/outcomes.md, choice 8b) and never resent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from push.pipeline import send_batch
from tables.models import DeliveryLog
from tests.faults.helpers import apns_id, assert_ledger, fault, log_rows, make_config
from tests.faults.sigkill_worker import notifications

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sigkill_worker.py")
COUNT = 1500
KILL_AFTER_SENT = 300


def sent_count(engine, delivery):
    t = DeliveryLog.__table__
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).where(t.c.delivery_id == delivery, t.c.status == "sent")
                         ).scalar_one()


def test_sigkill_mid_batch_then_resume(db, fake_server, apns_key, service_account, tmp_path):
    engine, url = db
    fake_server.slow_delay = 0.5
    cfg = make_config(fake_server, apns_key, service_account, url, stream_timeout=3.0, concurrency=50,
                      chunk_size=500)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
    env.update({
        "PYTHONPATH": str(ROOT), "FAULT_DELIVERY": "kill-1", "FAULT_COUNT": str(COUNT),
        "PUSH_DATABASE_URL": url, "PUSH_APNS_BASE_URL": fake_server.url, "PUSH_APNS_KEY_FILE": cfg.apns_key_file,
        "PUSH_APNS_KEY_ID": cfg.apns_key_id, "PUSH_APNS_TEAM_ID": cfg.apns_team_id, "PUSH_CA_FILE": cfg.ca_file,
        "PUSH_STREAM_TIMEOUT": "3", "PUSH_CONCURRENCY": "50", "PUSH_CHUNK_SIZE": "500",
    })
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if sent_count(engine, "kill-1") >= KILL_AFTER_SENT:
                        break
                except sa.exc.OperationalError:  # the worker is creating the tables
                    pass
                time.sleep(0.02)
            assert proc.poll() is None, f"the worker ended before the kill:\n{log.read_text()[-3000:]}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=5) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fault("SIGKILL mid-batch")
    time.sleep(0.3)  # let the server finish whatever reached it before the socket died

    before = {r.seq: r for r in log_rows(engine, "kill-1")}
    in_flight = {seq for seq, r in before.items() if r.status == "pending" and r.attempts > 0}
    never_launched = {seq for seq, r in before.items() if r.status == "pending" and r.attempts == 0}
    assert KILL_AFTER_SENT <= sum(r.status == "sent" for r in before.values()) < COUNT
    assert in_flight, "the kill left sends in flight"
    assert len(in_flight) <= cfg.concurrency, "at most the concurrency is in doubt (pipeline docstring)"
    accepted_before = Counter(fake_server.accepted)
    requests_before = len(fake_server.requests)

    # The durability rule itself: a row never marked launched was never sent.
    assert not [s for s in never_launched if accepted_before.get(apns_id("kill-1", s))]

    rep = send_batch(notifications(COUNT), cfg, "kill-1")
    assert rep.resumed and rep.total == COUNT and rep.pending == 0
    rows = assert_ledger(engine, "kill-1", COUNT, fake_server.accepted)
    resent = [r.headers["apns-id"] for r in fake_server.requests[requests_before:]
              if accepted_before.get(r.headers.get("apns-id"))]
    assert not resent, f"{len(resent)} notifications accepted before the kill were sent again"
    resumed_ids = {r.headers.get("apns-id") for r in fake_server.requests[requests_before:]}
    for seq in in_flight:
        r = rows[seq]
        assert r.status == "failed" and "interrupted" in r.error_text, (seq, r.status, r.error_text)
        assert r.attempts == before[seq].attempts and r.next_retry_at is None
        assert apns_id("kill-1", seq) not in resumed_ids
    for seq, r in before.items():
        if r.status != "pending":  # already had its outcome: untouched by the resume
            assert (rows[seq].status, rows[seq].attempts) == (r.status, r.attempts)
    assert all(rows[s].status == "sent" for s in set(range(COUNT)) - set(before) - in_flight)
    assert rep.sent == COUNT - len(in_flight)
