"""Operating the service: fail-fast start-up (one line, exit 2), catch-up runs at scheduler start, one-line and
JSON logs, configuration checks, and the warning when no connection to a provider ever worked."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fixtures.scenarios import fcm_token, ok_apns_token
from jobs import optout
from jobs.common import JobResult
from jobs.runner import run_job
from jobs.scheduler import first_run, run_scheduler
from push import Notification, PushConfig, logs, send_batch
from push.cli import app, state
from push.clock import FakeClock
from push.errors import ConfigError
from push.outcome_table import DEFAULT_TABLE
from push.transport_errors import outcome_for_transport_error
from tables import jobs as jt
from tables.models import DeliveryLog, JobStatus
from tests.pipeline_helpers import ScriptedSender
from tests.test_e2e_pipeline import config as e2e_config
from tests.test_scheduler import scheduler_env, scheduler_process, stop_and_check, wait_for

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "push-feedback"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WAIT = 20.0


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
    return subprocess.run([str(CLI), *args], cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- fail-fast start-up


def refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://nobody@127.0.0.1:{port}/push"


@pytest.mark.parametrize("command", [["scheduler"], ["run-job", "retry"]])
def test_a_database_that_refuses_connections_fails_fast(command):
    proc = run_cli("--database-url", refused_url(), *command)
    assert_one_line_exit_2(proc, "PUSH_DATABASE_URL", "refused")


@pytest.mark.parametrize("command", [["scheduler"], ["run-job", "retry"]])
@pytest.mark.parametrize("setting,value", [("PUSH_APNS_BASE_URL", "http://127.0.0.1:8443"),
                                           ("PUSH_FCM_BASE_URL", "notaurl")])
def test_a_base_url_that_is_not_https_fails_fast(tmp_path, command, setting, value):
    proc = run_cli("--database-url", f"sqlite:///{tmp_path}/x.db", *command, **{setting: value})
    assert_one_line_exit_2(proc, setting, "https://")


@pytest.fixture
def retry_row_for_fcm(db_url):
    """A database with one FCM notification waiting for the retry runner."""
    cfg = PushConfig(database_url=db_url)
    rep = send_batch([Notification(token=fcm_token("unavailable", 3), platform="fcm", app="android", title="t")],
                     cfg, "needs-fcm", clients={"fcm": ScriptedSender("fcm")})
    assert rep.retry_pending == 1
    return db_url


@pytest.mark.parametrize("command", [["scheduler"], ["run-job", "retry"]])
def test_retry_rows_for_a_provider_without_settings_fail_fast(retry_row_for_fcm, command):
    proc = run_cli("--database-url", retry_row_for_fcm, *command)
    assert_one_line_exit_2(proc, "PUSH_FCM_CREDENTIALS_FILE")


def test_retry_rows_for_a_provider_whose_key_does_not_load_fail_fast(retry_row_for_fcm, tmp_path):
    bad = tmp_path / "sa.json"
    bad.write_text('{"type": "service_account"}')
    proc = run_cli("--database-url", retry_row_for_fcm, "run-job", "retry", PUSH_FCM_CREDENTIALS_FILE=str(bad))
    assert_one_line_exit_2(proc, "PUSH_FCM_CREDENTIALS_FILE", "missing")


def test_without_retry_rows_no_provider_settings_are_needed(db_url):
    proc = run_cli("--database-url", db_url, "run-job", "retry")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- scheduler start


def test_first_run_is_at_once_when_the_last_success_is_an_interval_old():
    assert first_run(3600, None, T0, False) == timedelta(0)
    assert first_run(3600, T0 - timedelta(hours=2), T0, False) == timedelta(0)
    assert first_run(3600, T0 - timedelta(minutes=20), T0, False) == timedelta(minutes=40)
    assert first_run(3600, T0 - timedelta(minutes=20), T0, True) == timedelta(0)


def record_ok_run(engine, job: str, started: datetime) -> None:
    with engine.begin() as conn:
        run_id = jt.start_run(conn, job, started)
        jt.finish_run(conn, run_id, status=JobStatus.OK, finished_at=started, rows_examined=0, rows_changed=0)


def test_scheduler_runs_overdue_jobs_at_start_and_logs_next_run_times(engine, caplog):
    record_ok_run(engine, "opt-out", T0 - timedelta(hours=7))  # older than its 6 h interval: due now
    record_ok_run(engine, "cleanup", T0 - timedelta(hours=1))  # ran an hour ago: next in 23 h
    stop, seen = threading.Event(), []

    def on_result(result: JobResult) -> None:
        seen.append(result.job)
        if {"opt-out", "retry"} <= set(seen):
            stop.set()

    caplog.set_level(logging.INFO, logger="jobs")
    cfg = PushConfig(optout_interval=6 * 3600, retry_interval=3600, cleanup_interval=86400)
    thread = threading.Thread(target=lambda: run_scheduler(cfg, engine=engine, clock=FakeClock(T0),
                                                           stop_event=stop, on_result=on_result), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert sorted(seen) == ["opt-out", "retry"], seen  # cleanup is not due for 23 hours
    start = next(r.getMessage() for r in caplog.records if "scheduler starting" in r.getMessage())
    assert "opt-out every 21600s (next " in start and "retry every 3600s (next " in start
    next_cleanup = datetime.fromisoformat(start.split("cleanup every 86400s (next ")[1].split(")")[0])
    assert abs(next_cleanup - (datetime.now(timezone.utc) + timedelta(hours=23))) < timedelta(minutes=1)


# --------------------------------------------------------------------------- logs


def test_a_failing_job_is_one_line_without_debug_and_a_traceback_with_it(engine, monkeypatch):
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("no such table: quarantine\nsecond line")

    monkeypatch.setattr(optout.jt, "unregistered_chunk", boom)
    for debug in (False, True):
        out = io.StringIO()
        logs.setup(debug=debug, level=logging.INFO, stream=out)
        try:
            assert run_job("opt-out", engine, PushConfig(), FakeClock(T0)).status == "error"
        finally:
            logs.setup(stream=io.StringIO())
        text = out.getvalue()
        if debug:
            assert "Traceback" in text and "RuntimeError" in text
        else:
            assert "Traceback" not in text
            assert len(text.splitlines()) == 1, text
            assert "job=opt-out status=error" in text and "no such table" in text


def test_json_logs_parse_line_by_line_with_stable_keys(tmp_path):
    url = f"sqlite:///{tmp_path}/json.db"
    log = tmp_path / "scheduler.log"
    with scheduler_process(scheduler_env(url, PUSH_OPTOUT_INTERVAL="1", PUSH_LOG_FORMAT="json"), log) as proc:
        wait_for(lambda: "job=opt-out status=ok" in log.read_text(), "an opt-out run", [proc], [log])
        text = stop_and_check(proc, log)
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "event"} <= set(r) for r in records)
    run = next(r for r in records if r.get("job") == "opt-out" and r.get("status") == "ok")
    assert run["logger"] == "jobs" and run["level"] == "info"
    assert set(run["counts"]) >= {"examined", "changed"} and isinstance(run["duration"], float)
    datetime.fromisoformat(run["time"])
    assert not any("apscheduler" in r["logger"] or "alembic" in r["logger"] for r in records)


def test_json_formatter_masks_device_paths_and_summarises_exceptions():
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "POST %s", (
        f"https://api.push.apple.com/3/device/{ok_apns_token(9)}",), None)
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record.exc_info = sys.exc_info()
    data = json.loads(logs.JsonFormatter(debug=False).format(record))
    assert ok_apns_token(9) not in json.dumps(data) and "/3/device/" in data["event"]
    assert data["error"] == "ValueError: bad" and "traceback" not in data
    assert "Traceback" in json.loads(logs.JsonFormatter(debug=True).format(record))["traceback"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("kw,setting", [
    ({"concurrency": "abc"}, "PUSH_CONCURRENCY"),
    ({"stream_timeout": [1.0]}, "PUSH_STREAM_TIMEOUT"),
    ({"max_connections": True}, "PUSH_MAX_CONNECTIONS"),
    ({"database_url": 5}, "PUSH_DATABASE_URL"),
    ({"apns_base_url": "http://api.push.apple.com"}, "PUSH_APNS_BASE_URL"),
    ({"fcm_base_url": "notaurl"}, "PUSH_FCM_BASE_URL"),
    ({"fcm_base_url": "https://fcm.googleapis.com:notaport"}, "PUSH_FCM_BASE_URL"),
    ({"metrics_port": 70000}, "PUSH_METRICS_PORT"),
    ({"log_format": "xml"}, "PUSH_LOG_FORMAT"),
])
def test_in_code_settings_get_the_env_checks(kw, setting):
    with pytest.raises(ConfigError) as err:
        PushConfig.from_env({}, **kw)
    assert err.value.setting == setting
    with pytest.raises(ConfigError):
        PushConfig(**kw)


def test_numbers_given_as_text_in_code_are_read_like_env_values():
    cfg = PushConfig.from_env({}, concurrency="12", stream_timeout="2.5")
    assert cfg.concurrency == 12 and cfg.stream_timeout == 2.5
    assert PushConfig(retry_base_delay=3).retry_base_delay == 3.0


def test_repr_masks_the_database_password():
    cfg = PushConfig(database_url="postgresql+psycopg://app:s3cret@db:5432/push", concurrency=7)
    text = repr(cfg)
    assert "s3cret" not in text and "app:***@db:5432/push" in text and "concurrency=7" in text


def test_config_command_shows_effective_values_and_their_source(monkeypatch):
    state.database_url, state.debug, state.show_tokens = None, False, False
    monkeypatch.setenv("PUSH_CONCURRENCY", "7")
    monkeypatch.delenv("PUSH_DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["--database-url", "postgresql+psycopg://app:pw@db/push", "config", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["variable"]: r for r in json.loads(result.output)}
    assert rows["PUSH_CONCURRENCY"]["value"] == "7" and rows["PUSH_CONCURRENCY"]["source"] == "env"
    assert rows["PUSH_CHUNK_SIZE"] == {**rows["PUSH_CHUNK_SIZE"], "value": "1000", "source": "default"}
    assert rows["PUSH_DATABASE_URL"]["value"] == "postgresql+psycopg://app:***@db/push"
    assert rows["PUSH_DATABASE_URL"]["source"] == "code"
    assert "pw" not in result.output.replace("PUSH_", "")
    state.database_url = None


def test_an_unsupported_scheme_is_recorded_as_not_sent():
    out = outcome_for_transport_error("apns", httpx.UnsupportedProtocol("H2Transport only speaks https"),
                                      DEFAULT_TABLE)
    assert "not sent;" in out.error_text and "may have been" not in out.error_text, out.error_text


def test_one_warning_line_when_every_connection_to_a_provider_fails(db, fake_server, apns_key, service_account,
                                                                     caplog):
    engine, db_url = db
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = e2e_config(fake_server, apns_key, service_account, db_url).with_(
        apns_base_url=f"https://127.0.0.1:{closed}")
    caplog.set_level(logging.WARNING)
    rep = send_batch([Notification(token=ok_apns_token(i), platform="apns", app="com.example.app", title="t")
                      for i in range(5)], cfg, "unreachable")
    assert rep.retry_pending == 5
    lines = [r.getMessage() for r in caplog.records if "every connection" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"apns: every connection to https://127.0.0.1:{closed}") and "attempts" in lines[0]
    t = DeliveryLog.__table__
    with engine.connect() as c:
        texts = [r.error_text for r in c.execute(sa.select(t.c.error_text).where(t.c.delivery_id == "unreachable"))]
    assert all("not sent;" in text and "may have been" not in text for text in texts), texts


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")
