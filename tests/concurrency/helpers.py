"""Running competing processes against one database and one fake server, and reading the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def env_for(fake_server: Any, apns_key: Any, service_account: Any, url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSH_", "CONC_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PUSH_DATABASE_URL": url,
        "PUSH_APNS_BASE_URL": fake_server.url, "PUSH_APNS_KEY_FILE": str(apns_key.path),
        "PUSH_APNS_KEY_ID": apns_key.key_id, "PUSH_APNS_TEAM_ID": apns_key.team_id,
        "PUSH_FCM_BASE_URL": fake_server.url, "PUSH_FCM_CREDENTIALS_FILE": str(service_account.path),
        "PUSH_CA_FILE": str(fake_server.ca_file), "PUSH_STREAM_TIMEOUT": "5", "PUSH_CONCURRENCY": "50",
        "PUSH_CHUNK_SIZE": "200",
    })
    env.update({f"PUSH_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout: float = 120) -> "Done":
        rc = self.popen.wait(timeout)
        text = self.log.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        return Done(self.name, rc, json.loads(lines[-1]) if lines else {}, text)


@dataclass
class Done:
    name: str
    rc: int
    result: dict[str, Any]
    output: str


def start(name: str, env: dict[str, str], tmp_path: Path, **extra: str) -> Proc:
    log = tmp_path / f"{name}.log"
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    popen = subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, env={**env, **extra}, stdout=out,
                             stderr=subprocess.STDOUT)
    out.close()
    return Proc(name, popen, log)


def write_input(tmp_path: Path, name: str, rows: Sequence[tuple[str, str, str]]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([list(r) for r in rows]))
    return str(path)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)  # polling another process's progress: there is no clock to inject across processes
    raise AssertionError(f"timed out waiting for {what}")


def no_traceback(done: Done) -> None:
    assert "Traceback" not in done.output, f"{done.name} printed a traceback:\n{done.output[-3000:]}"
