"""What operators do every day through the CLI (issue 17), on SQLite and Postgres, against the fake servers.

Each test of a numbered defect names it; every one of those fails on the code before the fix.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fixtures.scenarios import apns_token, ok_apns_token
from jobs.runner import run_job
from push.classify import classify
from push.cli import app, state
from push.clock import SystemClock
from push.config import PushConfig
from tables import store
from tables.engine import make_engine
from tables.models import DELIV, DLOG, RELOG, SUBS

runner = CliRunner()
APP = "com.example.app"


@pytest.fixture(autouse=True)
def _reset_state():
    state.database_url, state.database_url_given, state.debug, state.show_tokens = None, False, False, False
    yield


def cli(*args, db=None, env=None, input=None):
    full = (["--database-url", db] if db else []) + list(args)
    return runner.invoke(app, full, input=input, env=env, catch_exceptions=False)


@pytest.fixture
def eng(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dead(db_url, eng):
    """Two tokens APNs called Unregistered; the opt-out job has disabled both subscriptions."""
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    tokens = [apns_token("unregistered", 1), apns_token("unregistered", 2)]
    with eng.begin() as c:
        for tok in tokens:
            store.register_token(c, app=APP, platform="apns", token=tok, now=now)
        store.apply_quarantine(c, {("apns", APP, t): classify("apns", status=410, body=b'{"reason":"Unregistered"}')
                                   for t in tokens}, now=now)
    job = run_job("opt-out", eng, PushConfig(database_url=db_url), SystemClock())
    assert job.rows_changed == 2
    return tokens


def disabled(eng, token):
    with eng.connect() as c:
        return c.execute(sa.select(SUBS.c.disabled).where(SUBS.c.token == token)).scalar_one()


@pytest.fixture
def provider_env(fake_server, apns_key):
    return {"PUSH_APNS_BASE_URL": fake_server.url, "PUSH_APNS_KEY_FILE": str(apns_key.path),
            "PUSH_APNS_KEY_ID": apns_key.key_id, "PUSH_APNS_TEAM_ID": apns_key.team_id,
            "PUSH_CA_FILE": str(fake_server.ca_file)}


def jsonl(path, tokens, bad_at=None):
    lines = [json.dumps({"token": t, "platform": "apns", "app": APP, "title": "t"}) for t in tokens]
    if bad_at is not None:
        lines.insert(bad_at - 1, json.dumps({"token": "zz", "platform": "apns", "app": APP}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# --------------------------------------------------------------------------- 1. release and the subscription


def test_release_says_the_subscription_stays_disabled_and_enable_makes_it_reachable(db_url, eng, dead):
    """Defect 1: a release left the opt-out job's disabled subscription as it was, silently."""
    one, two = dead
    r = cli("quarantine", "release", one, db=db_url)
    assert r.exit_code == 0, r.output
    assert "released 1 entry" in r.output and "1 subscription stays disabled" in r.output
    assert "--enable-subscriptions" in r.output and disabled(eng, one)

    r = cli("tokens", "enable", one, "--reason", "user reinstalled the app", "--by", "alice", db=db_url)
    assert r.exit_code == 0 and "enabled 1 subscription" in r.output, r.output
    assert not disabled(eng, one)

    r = cli("quarantine", "release", two, "--enable-subscriptions", "--reason", "misclassified", "--by", "bob",
            db=db_url)
    assert r.exit_code == 0 and "re-enabled 1 disabled subscription" in r.output, r.output
    assert not disabled(eng, two)
    with eng.connect() as c:
        log = c.execute(sa.select(RELOG.c.token, RELOG.c.previous_status, RELOG.c.released_by)
                        .order_by(RELOG.c.id)).all()
    by_token = {(t, p): b for t, p, b in log}
    assert "alice" in by_token[(one, "disabled")] and "user reinstalled the app" in by_token[(one, "disabled")]
    assert "bob" in by_token[(two, "quarantine")] and "misclassified" in by_token[(two, "disabled")]


def test_release_dry_run_reports_the_subscriptions_and_changes_nothing(db_url, eng, dead):
    r = cli("quarantine", "release", dead[0], "--dry-run", "--enable-subscriptions", db=db_url)
    assert r.exit_code == 0 and "would release 1 entry; would re-enable 1 disabled subscription" in r.output
    assert disabled(eng, dead[0])
    with eng.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(RELOG)).scalar_one() == 0


# --------------------------------------------------------------------------- 2. the demo's database


def test_demo_uses_its_own_file_ignores_the_environment_and_reruns(tmp_path, monkeypatch):
    """Defect 2: the demo followed PUSH_DATABASE_URL, and a second run crashed on the denylist."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "production.db"
    env = {"PUSH_DATABASE_URL": f"sqlite:///{elsewhere}"}
    for _ in range(2):
        r = cli("demo", "--count", "100", "--json", env=env)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["database_url"] == f"sqlite:///{tmp_path / 'push-feedback-demo.db'}"
    assert not elsewhere.exists()


def test_demo_refuses_a_database_holding_other_data_and_reruns_on_its_own(db_url, eng, dead):
    r = cli("demo", "--count", "100", db=db_url)
    assert r.exit_code == 2 and "holds data the demo did not create (2 subscriptions, 2 quarantine entries" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    with eng.begin() as c:  # the demo wrote nothing
        assert c.execute(sa.select(sa.func.count()).select_from(DELIV)).scalar_one() == 0
        for t in ("exclusion_log", "quarantine_release_log", "quarantine", "app_subscription"):
            c.execute(sa.text(f"DELETE FROM {t}"))
    totals = []
    for _ in range(2):  # an empty database, then one holding only the demo's own rows
        r = cli("demo", "--count", "100", "--json", db=db_url)
        assert r.exit_code == 0, r.output
        totals.append(json.loads(r.output)["delivery"]["total"])
    with eng.connect() as c:  # the second run replaced the first
        assert c.execute(sa.select(sa.func.count()).select_from(DLOG)).scalar_one() == totals[0] == totals[1]


def test_demo_refuses_its_file_when_it_holds_other_data(sqlite_url, sqlite_engine):
    with sqlite_engine.begin() as c:
        store.register_token(c, app=APP, platform="apns", token=ok_apns_token(1))
    r = cli("demo", "--count", "100", "--database", sqlite_url.removeprefix("sqlite:///"))
    assert r.exit_code == 2 and "holds data the demo did not create (1 subscriptions)" in r.output
    with sqlite_engine.connect() as c:  # the file was left as it was
        assert c.execute(sa.select(sa.func.count()).select_from(SUBS)).scalar_one() == 1


# --------------------------------------------------------------------------- 3. bad input mid-file


def test_bad_line_after_the_first_chunk_names_the_delivery_and_abandon_closes_it(db_url, eng, tmp_path,
                                                                                  provider_env):
    """Defect 3: rows of the first chunk stayed pending under an id nobody was told, with no way out."""
    env = {**provider_env, "PUSH_CHUNK_SIZE": "10"}
    f = jsonl(tmp_path / "n.jsonl", [ok_apns_token(i) for i in range(14)], bad_at=15)
    r = cli("send", f, db=db_url, env=env)
    assert r.exit_code == 2 and "line 15: token" in r.output, r.output
    m = re.search(r"delivery (send-\S+) stopped there: 10 notifications recorded, 10 of them pending", r.output)
    assert m, r.output
    delivery = m.group(1)
    assert f"push-feedback delivery abandon {delivery}" in r.output and f"--delivery {delivery}" in r.output

    r = cli("report", "deliveries", "--json", db=db_url)
    [row] = json.loads(r.output)
    assert (row["id"], row["state"], row["pending"]) == (delivery, "unfinished", 10)
    assert "UNFINISHED" in cli("report", "deliveries", db=db_url).output

    r = cli("delivery", "abandon", delivery, "--reason", "bad input file", db=db_url)
    assert r.exit_code == 0 and "10 pending rows excluded" in r.output, r.output
    with eng.connect() as c:
        rows = c.execute(sa.select(DLOG.c.status, DLOG.c.error_text).where(DLOG.c.delivery_id == delivery)).all()
    assert {s for s, _ in rows} == {"excluded"} and all("bad input file" in t for _, t in rows)
    [row] = json.loads(cli("report", "deliveries", "--json", db=db_url).output)
    assert row["state"] == "abandoned" and row["pending"] == 0
    assert cli("report", "deliveries", "--unfinished", "--json", db=db_url).output.strip() == "[]"
    r = cli("send", f, "--delivery", delivery, db=db_url, env=env)
    assert r.exit_code == 2 and "was abandoned" in r.output


def test_dry_run_validates_every_line_and_writes_nothing(db_url, eng, tmp_path, provider_env):
    bad = jsonl(tmp_path / "bad.jsonl", [ok_apns_token(i) for i in range(1600)], bad_at=1501)
    r = cli("send", bad, "--dry-run", db=db_url, env=provider_env)
    assert r.exit_code == 2 and "line 1501: token" in r.output
    good = jsonl(tmp_path / "good.jsonl", [ok_apns_token(i) for i in range(5)] + [None])
    r = cli("send", good, "--dry-run", db=db_url, env=provider_env)
    assert r.exit_code == 0 and "6 notifications valid (apns 6); 1 without a token" in r.output, r.output
    r = cli("send", good, "--dry-run", db=db_url, env={"PUSH_APNS_KEY_FILE": ""})
    assert r.exit_code == 2 and "PUSH_APNS_KEY_FILE" in r.output
    with eng.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(DLOG)).scalar_one() == 0
        assert c.execute(sa.select(sa.func.count()).select_from(DELIV)).scalar_one() == 0


# --------------------------------------------------------------------------- 4. resume with other input


def test_reusing_a_delivery_id_with_different_input_is_refused_unless_forced(db_url, tmp_path, provider_env):
    """Defect 4: the same id with another file silently reported the old delivery."""
    env = {**provider_env, "PUSH_CHUNK_SIZE": "2"}
    first = jsonl(tmp_path / "a.jsonl", [ok_apns_token(i) for i in range(4)])
    other = jsonl(tmp_path / "b.jsonl", [ok_apns_token(i) for i in range(100, 104)])
    longer = jsonl(tmp_path / "c.jsonl", [ok_apns_token(i) for i in range(5)])  # same first chunk
    assert cli("send", first, "--delivery", "d-1", db=db_url, env=env).exit_code == 0
    assert cli("send", first, "--delivery", "d-1", db=db_url, env=env).exit_code == 0  # a plain resume
    r = cli("send", other, "--delivery", "d-1", db=db_url, env=env)
    assert r.exit_code == 2 and "started with different input" in r.output and "--force" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = cli("send", longer, "--delivery", "d-1", db=db_url, env=env)
    assert r.exit_code == 2 and "started with 4 notifications, this input has 5" in r.output
    r = cli("send", other, "--delivery", "d-1", "--force", "--json", db=db_url, env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["sent"] == 4  # recorded rows kept their outcome


def test_python_api_refuses_a_resume_with_other_input(engine):
    from push import Notification, ValidationError, send_batch
    from tests.pipeline_helpers import ScriptedSender

    cfg = PushConfig(database_url="sqlite://", chunk_size=1)
    kw = {"engine": engine, "clients": {"apns": ScriptedSender("apns")}}
    send_batch([Notification(token=ok_apns_token(1), platform="apns", app=APP, title="a")], cfg, "api-1", **kw)
    with pytest.raises(ValidationError, match="different input"):
        send_batch([Notification(token=ok_apns_token(1), platform="apns", app=APP, title="b")], cfg, "api-1", **kw)
    with pytest.raises(ValidationError, match="started with 1 notifications, this input has 2"):
        send_batch([Notification(token=ok_apns_token(1), platform="apns", app=APP, title="a"),
                    Notification(token=ok_apns_token(2), platform="apns", app=APP, title="a")], cfg, "api-1", **kw)


# --------------------------------------------------------------------------- 5. masking


def test_no_output_mode_prints_an_unmasked_token(db_url, eng, dead, tmp_path):
    """Defect 5: `tokens show --json` and the release log's "by" column printed the whole token."""
    token = dead[0]
    assert cli("quarantine", "release", token, "--by", "carol", db=db_url).exit_code == 0
    assert cli("denylist", "add", "p-1", "--channel", "apns", db=db_url).exit_code == 0
    outputs = {}
    for args in (["tokens", "show", token], ["tokens", "show", token, "--json"],
                 ["tokens", "list"], ["tokens", "list", "--json"],
                 ["quarantine", "release", token], ["quarantine", "release", token, "--dry-run"],
                 ["quarantine", "release", dead[1], "--dry-run"], ["quarantine", "release", "--app", APP],
                 ["quarantine", "release", "--app", APP, "--dry-run"],
                 ["tokens", "enable", token], ["tokens", "disable", token], ["tokens", "enable", token],
                 ["tokens", "show", "ab" * 40], ["report", "non-deliverables"], ["report", "non-deliverables", "--json"],
                 ["report", "deliveries"], ["rules", "list"], ["denylist", "list", "--json"]):
        r = cli(*args, db=db_url)
        outputs[" ".join(args)] = r.output
        assert token not in r.output and dead[1] not in r.output, (args, r.output)
    assert "Releases and manual changes" in outputs[f"tokens show {token}"]
    assert "carol" in outputs[f"tokens show {token}"] and token[:6] + "…" + token[-4:] in outputs[f"tokens show {token}"]
    r = cli("tokens", "show", token, "--json", "--show-tokens", db=db_url)
    assert token in r.output


# --------------------------------------------------------------------------- 8. device management


def test_register_disable_enable_and_denylist(db_url, eng):
    tok = ok_apns_token(7)
    r = cli("tokens", "register", tok, "--platform", "apns", "--app", APP, "--profile", "u-1", db=db_url)
    assert r.exit_code == 0 and "registered" in r.output
    r = cli("tokens", "disable", tok, "--reason", "stolen phone", db=db_url)
    assert r.exit_code == 0 and "disabled 1 subscription" in r.output and disabled(eng, tok)
    assert "already disabled" in cli("tokens", "disable", tok, db=db_url).output
    r = cli("tokens", "enable", tok, db=db_url)
    assert r.exit_code == 0 and "enabled 1 subscription" in r.output and not disabled(eng, tok)
    assert cli("tokens", "enable", ok_apns_token(8), db=db_url).exit_code == 1

    assert "added to the apns denylist" in cli("denylist", "add", "u-1", "--channel", "apns", "--reason", "STOP",
                                               db=db_url).output
    assert "already on" in cli("denylist", "add", "u-1", "--channel", "apns", db=db_url).output
    rows = json.loads(cli("denylist", "list", "--json", db=db_url).output)
    assert [(r["profile_id"], r["channel"], r["reason"]) for r in rows] == [("u-1", "apns", "STOP")]
    assert cli("denylist", "remove", "u-1", "--channel", "apns", db=db_url).exit_code == 0
    assert cli("denylist", "remove", "u-1", "--channel", "apns", db=db_url).exit_code == 1
    r = cli("denylist", "add", "u-1", "--channel", "sms", db=db_url)
    assert r.exit_code == 2 and "apns, fcm" in r.output


def test_test_push_prints_the_verdict_and_the_outcome_row(db_url, eng, provider_env):
    good, dead = ok_apns_token(3), apns_token("unregistered", 9)
    for tok in (good, dead):
        assert cli("tokens", "register", tok, "--platform", "apns", "--app", APP, db=db_url).exit_code == 0
    r = cli("tokens", "test-push", good, db=db_url, env=provider_env)
    assert r.exit_code == 0 and "accepted by the provider (HTTP 200)" in r.output, r.output
    r = cli("tokens", "test-push", dead, "--json", db=db_url, env=provider_env)
    assert r.exit_code == 1, r.output
    data = json.loads(r.output)
    assert (data["status"], data["provider_status"], data["provider_reason"]) == ("failed", 410, "Unregistered")
    assert data["failure_type"] == "hard" and data["quarantine_status"] == "quarantine"
    r = cli("tokens", "test-push", dead, db=db_url, env=provider_env)
    assert r.exit_code == 1 and "excluded at analysis (device token in quarantine)" in r.output


# --------------------------------------------------------------------------- 12. basics


def test_version_and_completion():
    r = cli("--version")
    assert r.exit_code == 0 and re.match(r"push-feedback \d+\.\d+", r.output)
    assert "--install-completion" in cli("--help").output


def test_global_options_are_accepted_after_the_subcommand(db_url, dead):
    r = runner.invoke(app, ["tokens", "show", dead[0], "--json", "--show-tokens", "--database-url", db_url])
    assert r.exit_code == 0 and dead[0] in r.output
    r = runner.invoke(app, ["tokens", "list", f"--database-url={db_url}", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 2


def test_bulk_release_needs_yes_and_an_already_valid_entry_says_so(db_url, eng, dead):
    r = cli("quarantine", "release", "--app", APP, db=db_url)
    assert r.exit_code == 2 and "would release 2 entries" in r.output and "--yes" in r.output
    with eng.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(RELOG)).scalar_one() == 0
    r = cli("quarantine", "release", "--app", APP, "--yes", db=db_url)
    assert r.exit_code == 0 and "released 2 entries; 2 subscriptions stay disabled" in r.output
    r = cli("quarantine", "release", dead[0], db=db_url)
    assert r.exit_code == 0 and "already valid: nothing to release" in r.output and "tokens enable" in r.output
    assert cli("quarantine", "release", ok_apns_token(1), db=db_url).exit_code == 1


def test_read_commands_never_create_a_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["tokens", "list"], ["report", "deliveries"], ["rules", "list"], ["tokens", "show", "x" * 64]):
        r = cli(*args, env={"PUSH_DATABASE_URL": ""})
        assert r.exit_code == 1 and "no database at push-feedback.db" in r.output, r.output
    assert not (tmp_path / "push-feedback.db").exists()


def test_read_commands_say_which_database_they_read(db_url, dead):
    assert f"database: {db_url}" in cli("tokens", "list", db=db_url).output


def test_rules_list_marks_built_in_texts_and_qualify_warns_on_unseen_ones(db_url, eng):
    with eng.begin() as c:
        store.bump_qualification_rules(c, [("apns", "APNs 410 Unregistered", "APNs 410 Unregistered"),
                                           ("apns", "APNs 400 SomethingNew", "APNs 400 SomethingNew")])
    rows = {r["text"]: r["builtin_row"] for r in json.loads(cli("rules", "list", "--json", db=db_url).output)}
    assert rows == {"APNs 410 Unregistered": "apns:410:Unregistered", "APNs 400 SomethingNew": None}
    r = cli("rules", "qualify", "APNs 400 SomethingNew", "--provider", "apns", "--type", "hard", db=db_url)
    assert r.exit_code == 0 and "warning" not in r.output
    r = cli("rules", "qualify", "APNs 400 Typo", "--provider", "apns", "--type", "hard", db=db_url)
    assert r.exit_code == 0 and "warning: no apns answer with this text has been seen yet" in r.output
    r = cli("rules", "qualify", "APNs 400 Typo", "--provider", "apns", "--type", "fatal", db=db_url)
    assert r.exit_code == 2 and "hard, soft, ignored, undefined" in r.output


def test_run_job_output_is_rounded(db_url):
    r = cli("run-job", "cleanup", db=db_url)
    assert r.exit_code == 0 and not re.search(r"\d\.\d{4,}", r.output) and "{" not in r.output, r.output
    assert re.search(r"duration\s+│\s+[\d.]+ m?s", r.output), r.output


def test_input_with_a_byte_order_mark_is_accepted(db_url, tmp_path, provider_env):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"token": ok_apns_token(1), "platform": "apns", "app": APP,
                                                 "title": "t"}).encode() + b"\n")
    r = cli("send", str(f), "--dry-run", db=db_url, env=provider_env)
    assert r.exit_code == 0 and "1 notifications valid" in r.output, r.output
    r = cli("send", str(f), "--json", db=db_url, env=provider_env)
    assert r.exit_code == 0 and json.loads(r.output)["sent"] == 1


def test_bad_override_values_list_the_allowed_ones(tmp_path, provider_env, db_url):
    f = tmp_path / "o.json"
    f.write_text(json.dumps({"apns:400:DeviceTokenNotForTopic": {"failure_type": "fatal"}}))
    n = jsonl(tmp_path / "n.jsonl", [ok_apns_token(1)])
    r = cli("send", n, "--dry-run", db=db_url, env={**provider_env, "PUSH_OUTCOME_OVERRIDES": str(f)})
    assert r.exit_code == 2 and "'hard', 'soft', 'ignored', 'undefined'" in r.output
