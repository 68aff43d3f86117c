"""One clear line and the right exit code, never a traceback: database errors outside a job body, a job that
failed under --json, a database refusing connections for now, an overrides row that is not an object, and an
FCM project id that is not one."""

from __future__ import annotations

import json
import secrets

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from fixtures.keys import make_service_account
from fixtures.scenarios import ok_fcm_token
from push import ConfigError, Notification, PushConfig, send_batch
from push.cli import app, state
from push.errors import StorageError
from push.fcm import FcmClient
from push.outcome_table import OutcomeTable
from tables.engine import make_engine

runner = CliRunner()


@pytest.fixture(autouse=True)
def _reset_state():
    state.database_url, state.debug, state.show_tokens = None, False, False
    yield


def cli(*args, db=None):
    return runner.invoke(app, (["--database-url", db] if db else []) + list(args), catch_exceptions=False)


def _drop(url: str, table: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            c.exec_driver_sql(f"DROP TABLE {table}")
    finally:
        engine.dispose()


def test_a_database_error_outside_a_job_body_is_one_line_and_exit_1(empty_db_url):
    assert cli("db", "upgrade", db=empty_db_url).exit_code == 0
    _drop(empty_db_url, "job_run")  # the job's bookkeeping, before and after its body
    r = cli("run-job", "cleanup", db=empty_db_url)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.output.startswith("error: database error: ")
    assert "job_run" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_run_job_json_exits_non_zero_when_the_job_failed(empty_db_url):
    assert cli("db", "upgrade", db=empty_db_url).exit_code == 0
    _drop(empty_db_url, "quarantine")  # what the opt-out job reads: its body fails
    r = cli("run-job", "opt-out", "--json", db=empty_db_url)
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["status"] == "error"  # standard output is still the job's JSON


@pytest.fixture
def closed_pg_url(pg_admin_url):
    """A Postgres database that exists but does not accept connections (an administrator's ALLOW_CONNECTIONS)."""
    name = f"pf_closed_{secrets.token_hex(4)}"
    admin = psycopg.connect(pg_admin_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        yield make_url(pg_admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


def test_a_database_refusing_connections_for_now_is_a_database_error(closed_pg_url):
    with pytest.raises(StorageError) as ei:
        make_engine(closed_pg_url)
    assert "not currently accepting connections" in str(ei.value)
    r = cli("tokens", "list", db=closed_pg_url)
    assert r.exit_code == 1 and "refuses connections for now" in r.output and "Traceback" not in r.output
    r = cli("run-job", "retry", "--json", db=closed_pg_url)
    assert r.exit_code == 1, r.output
    # A database that does not exist is still a setting to fix.
    r = cli("tokens", "list", db=closed_pg_url.rsplit("/", 1)[0] + "/pf_no_such_database")
    assert r.exit_code == 2 and "PUSH_DATABASE_URL" in r.output


@pytest.mark.parametrize("row", [5, "hard", ["hard"], None, True])
def test_an_overrides_row_that_is_not_an_object_names_file_and_row(row, tmp_path, db_url, fake_server,
                                                                   service_account):
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps({"apns:200": {"retry": False}, "apns:410:Unregistered": row}))
    with pytest.raises(ConfigError) as ei:
        OutcomeTable.from_file(path)
    assert ei.value.setting == "PUSH_OUTCOME_OVERRIDES"
    assert str(path) in str(ei.value) and "apns:410:Unregistered" in str(ei.value) and "object" in str(ei.value)
    cfg = PushConfig(database_url=db_url, outcome_overrides=str(path), fcm_base_url=fake_server.url,
                     fcm_credentials_file=str(service_account.path), ca_file=str(fake_server.ca_file))
    with pytest.raises(ConfigError):
        send_batch([Notification(token=ok_fcm_token(1), platform="fcm", app="a", title="t")], cfg, "ovr")
    assert not fake_server.requests


@pytest.mark.parametrize("bad", ["../../x", "demo-project/../../x", "Demo-Project", "demo project", "a%2Fb",
                                 "demo-project?x=1", "short", "x" * 31, "ends-with-", "1starts-with-digit"])
def test_fcm_project_id_must_be_a_project_id(bad):
    with pytest.raises(ConfigError) as ei:
        PushConfig(fcm_project_id=bad)
    assert ei.value.setting == "PUSH_FCM_PROJECT_ID" and "6 to 30 lower-case letters" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        PushConfig.from_env({"PUSH_FCM_PROJECT_ID": bad})
    assert ei.value.setting == "PUSH_FCM_PROJECT_ID"


@pytest.mark.parametrize("good", ["demo-project", "my-app-123456", "123456789012", "example.com:my-project"])
def test_fcm_project_ids_google_issues_are_accepted(good):
    assert PushConfig(fcm_project_id=good).fcm_project_id == good


def test_a_service_account_project_id_is_checked_too(tmp_path, fake_server):
    sa_file = make_service_account(tmp_path, token_uri=fake_server.token_url, project_id="Demo_Project%2F..")
    cfg = PushConfig(fcm_base_url=fake_server.url, fcm_credentials_file=str(sa_file.path),
                     ca_file=str(fake_server.ca_file))
    with pytest.raises(ConfigError) as ei:
        FcmClient(cfg)
    assert ei.value.setting == "PUSH_FCM_CREDENTIALS_FILE" and str(sa_file.path) in str(ei.value)
    assert "project_id" in str(ei.value)
    # Naming a valid project in the setting overrides the file's.
    client = FcmClient(cfg.with_(fcm_project_id="demo-project"))
    assert client.project_id == "demo-project"


def test_a_bad_service_account_project_id_stops_a_delivery_before_anything_is_written(tmp_path, db_url,
                                                                                     fake_server):
    sa_file = make_service_account(tmp_path, token_uri=fake_server.token_url, project_id="demo-project%2F..")
    cfg = PushConfig(database_url=db_url, fcm_base_url=fake_server.url, fcm_credentials_file=str(sa_file.path),
                     ca_file=str(fake_server.ca_file))
    with pytest.raises(ConfigError) as ei:
        send_batch([Notification(token=ok_fcm_token(1), platform="fcm", app="a", title="t")], cfg, "proj")
    assert ei.value.setting == "PUSH_FCM_CREDENTIALS_FILE"
    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM delivery")).scalar_one() == 0
    finally:
        engine.dispose()
    assert not fake_server.requests
