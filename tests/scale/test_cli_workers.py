"""``push-feedback send --workers celery``, ``report delivery`` per shard, ``push-feedback worker``: the commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from fixtures.scenarios import ok_apns_token, ok_fcm_token
from tests.concurrency.helpers import ROOT
from tests.faults.helpers import APP, FCM_APP, assert_ledger
from tests.scale.helpers import start_worker, wait_ready, worker_env

CLI = [sys.executable, "-c", "from push.cli import main; main()"]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_send_by_workers_then_report_per_shard(rabbitmq_url, queue, new_pg, workers, fake_server, apns_key,
                                               service_account, tmp_path):
    url, engine = new_pg()
    path = tmp_path / "n.jsonl"
    path.write_text("".join(json.dumps({"token": ok_apns_token(i) if i % 2 else ok_fcm_token(i),
                                        "platform": "apns" if i % 2 else "fcm", "app": APP if i % 2 else FCM_APP,
                                        "title": "t", "body": "b"}) + "\n" for i in range(450)))
    env = worker_env(fake_server, apns_key, service_account, url, rabbitmq_url, queue)
    r = cli(env, "send", str(path), "--workers", "celery", "--shard-size", "100", "--delivery", "cli-w")
    assert r.returncode == 0, r.stderr
    assert "450 notifications" in r.stdout and "5 of 5 shards of 100 enqueued on " + queue in r.stdout
    assert "guest:***@" in r.stdout and not fake_server.requests  # prepared and queued, nothing sent yet

    rep = cli(env, "report", "delivery", "cli-w", "--json")
    shards = json.loads(rep.stdout)["shards"]
    assert [(s["seqs"], s["waiting"], s["state"]) for s in shards] == [
        ("0-99", 100, "pending"), ("100-199", 100, "pending"), ("200-299", 100, "pending"),
        ("300-399", 100, "pending"), ("400-449", 50, "pending")]

    w = start_worker("cli", env, tmp_path)
    workers.append(w)
    wait_ready(w)
    done = cli(env, "send", str(path), "--workers", "celery", "--delivery", "cli-w", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert "prepared before" in done.stderr and json.loads(done.stdout)["sent"] == 450
    human = cli(env, "report", "delivery", "cli-w")
    assert "Shards (sent by workers)" in human.stdout and human.stdout.count(" done ") >= 5
    assert_ledger(engine, "cli-w", 450, fake_server.accepted)
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0


def test_refusals_are_one_line(rabbitmq_url, queue, new_pg, fake_server, apns_key, service_account, tmp_path):
    url, _ = new_pg()
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"token": ok_apns_token(1), "platform": "apns", "app": APP}) + "\n")
    env = worker_env(fake_server, apns_key, service_account, url, rabbitmq_url, queue)
    sqlite = {**env, "PUSH_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    for args, e, want in [
        (("send", str(path), "--workers", "celery"), sqlite, "PUSH_DATABASE_URL: a delivery sent by many workers "
                                                             "needs PostgreSQL"),
        (("worker",), sqlite, "needs PostgreSQL"),
        (("send", str(path), "--workers", "celery"), {**env, "PUSH_BROKER_URL": ""}, "PUSH_BROKER_URL: is required"),
        (("send", str(path), "--workers", "celery"), {**env, "PUSH_BROKER_URL": "http://x"},
         "PUSH_BROKER_URL: 'http://x' is not a broker URL"),
        (("send", str(path), "--workers", "dramatiq"), env, "--workers"),
        (("send", str(path), "--shard-size", "10"), env, "--shard-size and --wait go with --workers celery"),
    ]:
        r = cli(e, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert want in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert not fake_server.requests
