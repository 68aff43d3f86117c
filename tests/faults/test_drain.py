"""SIGTERM / SIGINT to ``push-feedback send`` mid-batch: a drain, not a loss.

The server answers slowly, so streams are in flight when the signal comes. The sends in flight
finish and are recorded, nothing new starts, the command prints one line and exits 75; a resume
then finds nothing ``interrupted`` that had an answer, and the server accepted nothing twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.scenarios import apns_token, ok_apns_token
from push.cli import EXIT_STOPPED
from tests.faults.helpers import APP, apns_id, assert_ledger, fault, log_rows

ROOT = Path(__file__).resolve().parents[2]
COUNT = 1200


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_sends_then_resume_finishes(signum, db, fake_server, apns_key, tmp_path):
    engine, url = db
    fake_server.slow_delay = 1.0
    lines = [{"token": apns_token("slow", i) if i % 4 == 0 else ok_apns_token(i), "platform": "apns", "app": APP,
              "title": "t"} for i in range(COUNT)]
    path = tmp_path / "n.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
    env.update({"PYTHONPATH": str(ROOT), "PUSH_DATABASE_URL": url, "PUSH_APNS_BASE_URL": fake_server.url,
                "PUSH_APNS_KEY_FILE": str(apns_key.path), "PUSH_APNS_KEY_ID": apns_key.key_id,
                "PUSH_APNS_TEAM_ID": apns_key.team_id, "PUSH_CA_FILE": str(fake_server.ca_file),
                "PUSH_STREAM_TIMEOUT": "5", "PUSH_CONCURRENCY": "100", "PUSH_CHUNK_SIZE": "200"})
    cmd = [sys.executable, "-c", "from push.cli import main; main()", "send", str(path), "--delivery", "drain-1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(fake_server.accepted) < 150:  # another process's progress: nothing to inject a clock into
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    waiting = sum(1 for r in fake_server.requests if r.outcome == "waiting")
    proc.send_signal(signum)
    out, errout = proc.communicate(timeout=60)
    fault(f"{signal.Signals(signum).name} mid-batch (drain)")
    assert waiting, "streams were in flight when the signal came"
    assert proc.returncode == EXIT_STOPPED, (proc.returncode, errout.decode()[-2000:])
    message = [ln for ln in errout.decode().splitlines() if ln.startswith("stopped by")]
    assert len(message) == 1 and signal.Signals(signum).name in message[0] and "drain-1" in message[0]
    assert "Traceback" not in errout.decode()

    before = {r.seq: r for r in log_rows(engine, "drain-1")}
    in_doubt = [s for s, r in before.items() if r.status == "pending" and r.attempts > 0]
    assert not in_doubt, f"{len(in_doubt)} sends left in doubt by a drain"
    answered = {r.headers.get("apns-id") for r in fake_server.requests if r.status is not None}
    assert all(apns_id("drain-1", s) in answered for s, r in before.items() if r.status == "sent")

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    rows = assert_ledger(engine, "drain-1", COUNT, fake_server.accepted)
    assert not [r for r in rows.values() if r.error_text and "interrupted" in r.error_text]
