"""Worker processes (``push-feedback worker`` as real subprocesses) and the input of the scale-out suite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push import Notification
from tests.concurrency.helpers import ROOT, env_for
from tests.faults.helpers import APP, FCM_APP

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
STARTED = re.compile(r"delivery (\S+) shard (\d+) \(seqs \d+-\d+\): started")
DONE = re.compile(r"delivery (\S+) shard (\d+): (done|held by another worker|draining|its lease)")


@dataclass
class Worker:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _closed: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def current_shard(self) -> int | None:
        """The shard this worker started last and has not finished (from its log lines)."""
        current = None
        for line in self.text().splitlines():
            if m := STARTED.search(line):
                current = int(m.group(2))
            elif (m := DONE.search(line)) and current == int(m.group(2)):
                current = None
        return current

    def signal(self, sig: int) -> None:
        os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def worker_env(fake_server: Any, apns_key: Any, service_account: Any, db_url: str, broker_url: str, queue: str,
               **settings: Any) -> dict[str, str]:
    settings.setdefault("concurrency", 100)
    settings.setdefault("chunk_size", 1000)
    return env_for(fake_server, apns_key, service_account, db_url, broker_url=broker_url, queue=queue, **settings)


def start_worker(name: str, env: dict[str, str], tmp_path: Path) -> Worker:
    log = tmp_path / f"worker-{name}.log"
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    popen = subprocess.Popen([sys.executable, "-c", "from push.cli import main; main()", "worker", "--name",
                              f"{name}@%h"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return Worker(name, popen, log)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)  # other processes' progress: there is no clock to inject across processes
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def wait_ready(*workers: Worker, timeout: float = 60) -> None:
    for w in workers:
        wait_until(lambda: " ready." in w.text() or w.popen.poll() is not None, timeout, f"worker {w.name} to start")
        assert w.popen.poll() is None, f"worker {w.name} exited at start:\n{w.text()[-3000:]}"


def mixed(n: int) -> list[Notification]:
    """``n`` notifications, one in twenty of each: dead (APNs 410, FCM 404), soft error (APNs
    DeviceTokenNotForTopic), transient (APNs and FCM 500), slow; the rest ok on both platforms; then one
    duplicate and one without a token (excluded at analysis)."""
    def one(i: int) -> Notification:
        kind = i % 20
        platform, app, token = {
            0: ("apns", APP, apns_token("unregistered", i)),
            1: ("apns", APP, apns_token("device_token_not_for_topic", i)),
            2: ("apns", APP, apns_token("internal_server_error", i)),
            3: ("fcm", FCM_APP, fcm_token("unregistered", i)),
            4: ("fcm", FCM_APP, fcm_token("internal", i)),
            5: ("apns", APP, apns_token("slow", i)),
        }.get(kind, ("fcm", FCM_APP, ok_fcm_token(i)) if kind < 12 else ("apns", APP, ok_apns_token(i)))
        return Notification(token=token, platform=platform, app=app, title="t", body="b")
    items = [one(i) for i in range(n)]
    items.append(Notification(token=ok_apns_token(19), platform="apns", app=APP, title="t", body="b"))
    items.append(Notification(token=None, platform="fcm", app=FCM_APP, title="t", body="b"))
    return items


def no_escapes(*workers: Worker) -> None:
    """No traceback, deadlock or serialization failure left a worker's task."""
    for w in workers:
        text = w.text()
        for bad in ("Traceback", "deadlock", "could not serialize", "raised unexpected"):
            assert bad not in text, f"worker {w.name}: {bad!r} in its log:\n{text[-4000:]}"


def interrupt(w: Worker, sig: int) -> None:
    w.signal(sig)
    if sig == signal.SIGKILL:
        assert w.wait(10) == -signal.SIGKILL
