"""Every CLI command through typer's runner, on SQLite and Postgres, including bad input."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fixtures.scenarios import apns_token, ok_apns_token
from push.cli import app, state
from push.classify import classify
from tables import store
from tables.models import Quarantine

runner = CliRunner()
APP = "com.example.app"


@pytest.fixture(autouse=True)
def _reset_state():
    state.database_url, state.debug, state.show_tokens = None, False, False
    yield


def cli(*args, db=None, input=None):
    full = (["--database-url", db] if db else []) + list(args)
    return runner.invoke(app, full, input=input, catch_exceptions=False)


@pytest.fixture
def seeded(db_url, engine_for_url):
    """A database with one quarantined and one with_errors token, and a delivery."""
    engine = engine_for_url
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    dead, flaky = apns_token("unregistered", 1), apns_token("bad_device_token", 1)
    with engine.begin() as c:
        for tok in (dead, flaky):
            store.register_token(c, app=APP, platform="apns", token=tok, now=now)
        store.apply_quarantine(c, {("apns", APP, dead): classify("apns", status=410, body=b'{"reason":"Unregistered"}'),
                                   ("apns", APP, flaky): classify("apns", status=400, body=b'{"reason":"BadDeviceToken"}')},
                               now=now)
    return db_url, dead, flaky


@pytest.fixture
def engine_for_url(request, db_url):
    from tables.engine import make_engine
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_help_lists_every_command():
    out = cli("--help").output
    for name in ("demo", "send", "tokens", "quarantine", "report", "rules", "db", "scheduler", "run-job"):
        assert name in out


def test_tokens_list_and_show_mask_tokens(seeded):
    db, dead, flaky = seeded
    r = cli("tokens", "list", "--status", "quarantine", db=db)
    assert r.exit_code == 0 and dead not in r.output and dead[:6] in r.output
    r = cli("--show-tokens", "tokens", "list", "--status", "quarantine", "--json", db=db)
    rows = json.loads(r.output)
    assert [x["token"] for x in rows] == [dead] and rows[0]["failure_reason"] == 1
    r = cli("tokens", "show", flaky, "--json", db=db)
    data = json.loads(r.output)
    assert data["quarantine"][0]["status"] == "with_errors" and data["subscriptions"][0]["app"] == APP


def test_tokens_show_unknown_token(db_url):
    r = cli("tokens", "show", "deadbeef" * 8, db=db_url)
    assert r.exit_code == 1 and "not known" in r.output


def test_tokens_list_bad_status(db_url):
    r = cli("tokens", "list", "--status", "sleeping", db=db_url)
    assert r.exit_code == 2 and "--status" in r.output


def test_quarantine_release_dry_run_then_real(seeded, engine_for_url):
    db, dead, flaky = seeded
    r = cli("quarantine", "release", "--error-text", "Unregistered", "--dry-run", db=db)
    assert r.exit_code == 0 and "would release 1 entry" in r.output
    r = cli("quarantine", "release", dead, db=db)
    assert r.exit_code == 0 and "released 1 entry" in r.output
    t = Quarantine.__table__
    with engine_for_url.connect() as c:
        assert c.execute(sa.select(t.c.status).where(t.c.token == dead)).scalar_one() == "valid"
    r = cli("quarantine", "release", "ab" * 32, db=db)
    assert r.exit_code == 1


def test_quarantine_release_needs_a_filter_and_valid_dates(db_url):
    assert cli("quarantine", "release", db=db_url).exit_code == 2
    r = cli("quarantine", "release", "--modified-since", "yesterday", db=db_url)
    assert r.exit_code == 2 and "--modified-since" in r.output


def test_literal_filters_are_bound_not_sql(seeded):
    db, _, _ = seeded
    r = cli("quarantine", "release", "--error-text", "x' OR '1'='1", "--dry-run", db=db)
    assert r.exit_code == 0 and "would release 0 entries" in r.output


def test_send_file_and_reports(db_url, tmp_path, fake_server, apns_key):
    f = tmp_path / "n.jsonl"
    lines = [{"token": ok_apns_token(i), "platform": "apns", "app": APP, "title": "t"} for i in range(5)]
    lines.append({"token": apns_token("unregistered", 3), "platform": "apns", "app": APP, "title": "t"})
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    env = {"PUSH_APNS_BASE_URL": fake_server.url, "PUSH_APNS_KEY_FILE": str(apns_key.path),
           "PUSH_APNS_KEY_ID": apns_key.key_id, "PUSH_APNS_TEAM_ID": apns_key.team_id,
           "PUSH_CA_FILE": str(fake_server.ca_file)}
    r = runner.invoke(app, ["--database-url", db_url, "send", str(f), "--delivery", "cli-1", "--json"], env=env,
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["sent"] == 5 and rep["failed"] == 1 and rep["total"] == 6
    r = cli("report", "delivery", "cli-1", "--json", db=db_url)
    assert json.loads(r.output)["failed_by_type_reason"] == {"hard / user unknown": 1}
    r = cli("report", "non-deliverables", "--since", "2020-01-01", "--json", db=db_url)
    nd = json.loads(r.output)
    assert nd["total"] == 1 and nd["by_failure_reason"] == {"1 user unknown": 1}
    r = cli("rules", "list", "--json", db=db_url)
    rules = json.loads(r.output)
    assert rules[0]["text"] == "APNs 410 Unregistered" and rules[0]["status"] == "to_qualify"
    r = cli("rules", "qualify", "APNs 410 Unregistered", "--provider", "apns", "--status", "keep", "--type", "hard",
            "--reason", "1", db=db_url)
    assert r.exit_code == 0 and "updated rule" in r.output
    r = cli("rules", "list", "--status", "keep", "--json", db=db_url)
    assert json.loads(r.output)[0]["failure_type"] == "hard"


def test_send_bad_input(db_url, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    r = cli("send", str(empty), db=db_url)
    assert r.exit_code == 2 and "holds no notifications" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"token": "zz", "platform": "apns", "app": "a"}\n')
    r = cli("send", str(bad), db=db_url)
    assert r.exit_code == 2 and "line 1: token" in r.output and "Traceback" not in r.output
    r = cli("send", str(tmp_path / "missing.jsonl"), db=db_url)
    assert r.exit_code == 2


def test_report_unknown_delivery(db_url):
    r = cli("report", "delivery", "nope", db=db_url)
    assert r.exit_code == 1 and "unknown delivery" in r.output


def test_unreachable_and_malformed_database_url():
    r = cli("tokens", "list", db="postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert r.exit_code == 2 and "PUSH_DATABASE_URL" in r.output and "Traceback" not in r.output
    r = cli("tokens", "list", db="not a url")
    assert r.exit_code == 2 and "PUSH_DATABASE_URL" in r.output


def test_db_upgrade_and_run_job(empty_db_url):
    r = cli("db", "upgrade", db=empty_db_url)
    assert r.exit_code == 0 and "was empty" in r.output
    r = cli("db", "upgrade", db=empty_db_url)
    assert "(unchanged)" in r.output
    r = cli("run-job", "cleanup", "--json", db=empty_db_url)
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "ok"
    assert cli("run-job", "nope", db=empty_db_url).exit_code == 2


def test_classify_and_outcomes():
    r = cli("classify", "fcm", "--status", "404", "--body",
            '{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}')
    assert json.loads(r.output)["rule"] == "fcm:UNREGISTERED"
    assert cli("classify", "wns", "--status", "200").exit_code == 2
    assert cli("outcomes", "--provider", "oauth", "--json").exit_code == 0
    assert "PUSH_DATABASE_URL" in cli("config").output


def test_demo_on_both_databases(db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("demo", "--count", "300", "--json", db=db_url)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    d = data["delivery"]
    assert d["total"] == 303 and d["sent"] > 0 and d["failed"] > 0 and d["retry_pending"] > 0
    ex = d["excluded_by_reason"]
    assert (ex["address not specified"], ex["duplicate"], ex["refused"]) == (1, 1, 1) and ex["denylisted"] >= 1
    assert data["opt_out"]["subscriptions disabled"] > 0


def test_readme_documents_every_setting():
    from pathlib import Path
    from push.config import describe
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for var, _, _ in describe():
        assert f"`{var}`" in readme, var


def test_scheduler_command_runs_jobs_and_stops_cleanly_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tables.engine import make_engine
    from tables.models import JobRun

    db = tmp_path / "sched.db"
    exe = Path(sys.executable).with_name("push-feedback")
    env = {**os.environ, "PUSH_DATABASE_URL": f"sqlite:///{db}", "PUSH_OPTOUT_INTERVAL": "1",
           "PUSH_RETRY_INTERVAL": "1"}
    proc = subprocess.Popen([str(exe), "scheduler", "--run-now"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        seen = 0
        while time.monotonic() < deadline and not seen:
            time.sleep(0.2)
            if db.exists():
                eng = make_engine(f"sqlite:///{db}")
                try:
                    with eng.connect() as c:
                        seen = c.execute(sa.select(sa.func.count()).select_from(JobRun.__table__)
                                         .where(JobRun.__table__.c.status == "ok")).scalar_one()
                except Exception:
                    seen = 0
                finally:
                    eng.dispose()
        assert seen, "no job ran"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out
