"""Bad input: a clear error naming the field or setting, and nothing half-written."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa

from fixtures.keys import write_corrupt_p8, write_incomplete_service_account
from fixtures.scenarios import ok_apns_token, ok_fcm_token
from push import ConfigError, Notification, PushConfig, ValidationError, read_report, send_batch
from push.apns import ApnsClient
from push.outcome_table import DEFAULT_TABLE
from push.outcomes import FailureReason
from push.transport_errors import outcome_for_transport_error
from tables.engine import make_engine
from tables.models import ALL_TABLES, Delivery, ExclusionLog
from tests.faults.helpers import APP, FCM_APP, apns_n, assert_ledger, bad_input, fcm_n, log_rows, make_config

APNS_TOK = ok_apns_token(1)
FCM_TOK = ok_fcm_token(1)
PAST = datetime.now(timezone.utc) - timedelta(seconds=1)

# (description, Notification keyword arguments, the field the error must name)
BAD_NOTIFICATIONS = [
    ("apns token not hex", dict(token="zz" * 32, platform="apns"), "token"),
    ("apns token too short", dict(token="abcdef", platform="apns"), "token"),
    ("apns token too long", dict(token="ab" * 201, platform="apns"), "token"),
    ("apns token with spaces", dict(token="ab cd " * 8, platform="apns"), "token"),
    ("apns token not a string", dict(token=12345678901234567890, platform="apns"), "token"),
    ("apns token bytes", dict(token=b"abcdefabcdefabcdef", platform="apns"), "token"),
    ("fcm token too short", dict(token="short", platform="fcm"), "token"),
    ("fcm token with a space", dict(token="abc def ghi jkl", platform="fcm"), "token"),
    ("fcm token with a newline", dict(token="abcdefgh\nijkl", platform="fcm"), "token"),
    ("fcm token too long", dict(token="a" * 4097, platform="fcm"), "token"),
    ("fcm data int", dict(token=FCM_TOK, platform="fcm", data={"n": 1}), "data.n"),
    ("fcm data None", dict(token=FCM_TOK, platform="fcm", data={"n": None}), "data.n"),
    ("fcm data bool", dict(token=FCM_TOK, platform="fcm", data={"flag": True}), "data.flag"),
    ("fcm data dict", dict(token=FCM_TOK, platform="fcm", data={"obj": {"a": "b"}}), "data.obj"),
    ("fcm data list", dict(token=FCM_TOK, platform="fcm", data={"l": ["x"]}), "data.l"),
    ("fcm data key not a string", dict(token=FCM_TOK, platform="fcm", data={1: "x"}), "data"),
    ("fcm reserved key from", dict(token=FCM_TOK, platform="fcm", data={"from": "x"}), "data.from"),
    ("fcm reserved key message_type", dict(token=FCM_TOK, platform="fcm", data={"message_type": "x"}),
     "data.message_type"),
    ("fcm reserved prefix google", dict(token=FCM_TOK, platform="fcm", data={"google.c.a.e": "1"}),
     "data.google.c.a.e"),
    ("fcm reserved prefix gcm", dict(token=FCM_TOK, platform="fcm", data={"gcm.n.e": "1"}), "data.gcm.n.e"),
    ("fcm reserved key upper case", dict(token=FCM_TOK, platform="fcm", data={"FROM": "x"}), "data.FROM"),
    ("unknown platform", dict(token=APNS_TOK, platform="wns"), "platform"),
    ("platform upper case", dict(token=APNS_TOK, platform="APNS"), "platform"),
    ("platform None", dict(token=APNS_TOK, platform=None), "platform"),
    ("platform unhashable", dict(token=APNS_TOK, platform=["apns"]), "platform"),
    ("expiration in the past", dict(token=APNS_TOK, platform="apns", expiration=PAST), "expiration"),
    ("naive expiration in the past", dict(token=APNS_TOK, platform="apns", expiration=datetime(2000, 1, 1)),
     "expiration"),
    ("expiration not a datetime", dict(token=APNS_TOK, platform="apns", expiration=1735689600), "expiration"),
    ("ttl negative", dict(token=FCM_TOK, platform="fcm", ttl=-1), "ttl"),
    ("ttl float", dict(token=FCM_TOK, platform="fcm", ttl=1.5), "ttl"),
    ("ttl bool", dict(token=FCM_TOK, platform="fcm", ttl=True), "ttl"),
    ("ttl over 4 weeks", dict(token=FCM_TOK, platform="fcm", ttl=2_419_201), "ttl"),
    ("priority unknown", dict(token=APNS_TOK, platform="apns", priority="urgent"), "priority"),
    ("push type unknown", dict(token=APNS_TOK, platform="apns", push_type="email"), "push_type"),
    ("push type unhashable", dict(token=APNS_TOK, platform="apns", push_type=["voip"]), "push_type"),
    ("push type not a string (FCM)", dict(token=FCM_TOK, platform="fcm", push_type=b"alert"), "push_type"),
    ("collapse id over 64 bytes", dict(token=APNS_TOK, platform="apns", collapse_id="é" * 33), "collapse_id"),
    ("collapse id with CR LF", dict(token=APNS_TOK, platform="apns", collapse_id="a\r\nb"), "collapse_id"),
    ("apns topic not ASCII", dict(token=APNS_TOK, platform="apns", app="com.exämple"), "app"),
    ("app empty", dict(token=APNS_TOK, platform="apns", app=""), "app"),
    ("app blank", dict(token=APNS_TOK, platform="apns", app="   "), "app"),
    ("app None", dict(token=APNS_TOK, platform="apns", app=None), "app"),
    ("app too long", dict(token=FCM_TOK, platform="fcm", app="a" * 256), "app"),
    ("app with NUL", dict(token=FCM_TOK, platform="fcm", app="an\x00app"), "app"),
    ("profile id with NUL", dict(token=FCM_TOK, platform="fcm", profile_id="p\x00"), "profile_id"),
    ("title not a string", dict(token=APNS_TOK, platform="apns", title=5), "title"),
    ("title lone surrogate", dict(token=APNS_TOK, platform="apns", title="\ud800"), "title"),
    ("body lone surrogate", dict(token=FCM_TOK, platform="fcm", body="x\udfff"), "body"),
    ("fcm data lone surrogate", dict(token=FCM_TOK, platform="fcm", data={"k": "\ud83d"}), "data"),
    ("data not a mapping", dict(token=APNS_TOK, platform="apns", data=["a"]), "data"),
    ("data not JSON", dict(token=APNS_TOK, platform="apns", data={"o": object()}), "data"),
    ("data NaN", dict(token=APNS_TOK, platform="apns", data={"x": float("nan")}), "data"),
    ("payload not a mapping", dict(token=APNS_TOK, platform="apns", payload="{}"), "payload"),
    ("payload not JSON", dict(token=FCM_TOK, platform="fcm", payload={"android": {1, 2}}), "payload"),
]


@pytest.mark.parametrize("kw,field", [c[1:] for c in BAD_NOTIFICATIONS], ids=[c[0] for c in BAD_NOTIFICATIONS])
def test_bad_notification_is_a_validation_error_naming_the_field(kw, field):
    bad_input()
    kw = {"app": APP if kw.get("platform") == "apns" else FCM_APP, **kw}
    with pytest.raises(ValidationError) as ei:
        Notification(**kw)
    assert ei.value.field == field, str(ei.value)
    assert str(ei.value).startswith(f"{field}: ")


BAD_DICTS = [
    ({"platform": "apns", "app": APP, "token": APNS_TOK, "colour": "red"}, "colour"),
    ({"app": APP, "token": APNS_TOK}, "platform"),
    ({"platform": "apns", "token": APNS_TOK}, "app"),
    ({"platform": "apns", "app": APP, "token": APNS_TOK, "expiration": "tomorrow"}, "expiration"),
    ({"platform": "apns", "app": APP, "token": APNS_TOK, "expiration": "2000-01-01T00:00:00"}, "expiration"),
    ({"platform": "fcm", "app": FCM_APP, "token": FCM_TOK, "data": {"n": 3}}, "data.n"),
]


@pytest.mark.parametrize("d,field", BAD_DICTS)
def test_bad_notification_dict(d, field):
    bad_input()
    with pytest.raises(ValidationError) as ei:
        Notification.from_dict(d)
    assert ei.value.field == field
    with pytest.raises(ValidationError) as ei:
        Notification.from_json(json.dumps(d))
    assert ei.value.field == field


def test_from_dict_with_mixed_key_types_names_a_field():
    bad_input()
    with pytest.raises(ValidationError) as ei:
        Notification.from_dict({"platform": "apns", "app": APP, 1: "x", "zz": 2})
    assert isinstance(ei.value.field, str)


def table_counts(engine):
    with engine.connect() as c:
        return {m.__tablename__: c.execute(sa.select(sa.func.count()).select_from(m.__table__)).scalar_one()
                for m in ALL_TABLES if m.__tablename__ not in ("qualification_rule",)}


def test_cached_encodings_are_not_fields() -> None:
    # The body/size caches are internal: not settable from input, not part of equality.
    with pytest.raises(ValidationError) as err:
        Notification.from_dict({"platform": "apns", "app": APP, "token": ok_apns_token(1), "_apns_body": "x"})
    assert err.value.field == "_apns_body"
    a = Notification(token=ok_apns_token(1), platform="apns", app=APP, title="t")
    b = Notification(token=ok_apns_token(1), platform="apns", app=APP, title="t")
    assert a.apns_body() is a.apns_body() and a == b and "_apns_body" not in repr(a)
    assert json.loads(a.apns_body()) == {"aps": {"alert": {"title": "t"}}}
    f = Notification(token=ok_fcm_token(1), platform="fcm", app=FCM_APP, title="t", data={"k": "v"})
    assert f.payload_size() == f.payload_size() == (len(b'{"notification":{"title":"t"},"data":{"k":"v"}}'), 4096)


def test_bad_item_in_a_batch_writes_nothing(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, chunk_size=50)
    good = [{"platform": "apns", "app": APP, "token": ok_apns_token(i), "title": "t"} for i in range(30)]
    cases = [
        (good + [{"platform": "fcm", "app": FCM_APP, "token": FCM_TOK, "data": {"n": 1}}], "data.n", "#30"),
        (good[:5] + [{"platform": "apns", "app": APP, "token": "nothex"}] + good[5:], "token", "#5"),
        (good + ["not a notification"], "notifications", "#30"),
        (good + [{"platform": "apns", "app": APP, "token": APNS_TOK, "priority": "now"}], "priority", "#30"),
    ]
    before = table_counts(engine)
    for i, (items, field, where) in enumerate(cases):
        bad_input()
        with pytest.raises(ValidationError) as ei:
            send_batch(items, cfg, f"bad-{i}")
        assert ei.value.field == field and where in str(ei.value), str(ei.value)
        assert table_counts(engine) == before, "a rejected batch left rows behind"
    assert not fake_server.requests


def test_bad_delivery_ids(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    for bad in ("", "   ", "x" * 65, 12):
        bad_input()
        with pytest.raises(ValidationError) as ei:
            send_batch([apns_n(APNS_TOK)], cfg, bad)
        assert ei.value.field == "delivery"
    bad_input()
    with pytest.raises(ValidationError) as ei:
        read_report(engine, "no-such-delivery")
    assert ei.value.field == "delivery" and "no-such-delivery" in str(ei.value)
    assert table_counts(engine)["delivery"] == 0 and not fake_server.requests


def test_payloads_over_the_limit_are_excluded_at_analysis(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    notifs = [
        apns_n(ok_apns_token(1), data={"x": "a" * 4100}),  # > 4096
        apns_n(ok_apns_token(2), push_type="voip", data={"x": "a" * 5200}),  # > 5120 for VoIP
        fcm_n(ok_fcm_token(3), data={"x": "a" * 4100}),  # > 4096
        fcm_n(ok_fcm_token(4), title="é" * 2100),  # counted in bytes, not characters
        apns_n(ok_apns_token(5), push_type="voip", data={"x": "a" * 4500}),  # fits VoIP's limit
        apns_n(ok_apns_token(6)),
    ]
    bad_input(4)
    rep = send_batch(notifs, cfg, "big-1")
    rows = assert_ledger(engine, "big-1", len(notifs), fake_server.accepted)
    for seq in range(4):
        r = rows[seq]
        assert r.status == "excluded" and r.failure_reason == int(FailureReason.REFUSED) == 20
        assert r.failure_type == "soft" and "limit" in r.error_text and "bytes" in r.error_text, r.error_text
    assert rows[4].status == rows[5].status == "sent"
    assert rep.excluded_by_reason == {"refused": 4} and rep.sent == 2
    assert len(fake_server.requests) == 2, "nothing over the limit reached the server"
    with engine.connect() as c:
        ex = c.execute(sa.select(ExclusionLog.__table__.c.failure_reason)).scalars().all()
    assert sorted(ex) == [20] * 4


def test_corrupt_credentials_fail_before_anything_is_written(db, fake_server, apns_key, service_account, tmp_path):
    engine, url = db
    before = table_counts(engine)
    corrupt = make_config(fake_server, apns_key, service_account, url, apns_key_file=str(write_corrupt_p8(tmp_path)))
    bad_input()
    with pytest.raises(ConfigError) as ei:
        send_batch([apns_n(APNS_TOK)], corrupt, "cred-1")
    assert ei.value.setting == "PUSH_APNS_KEY_FILE" and "PKCS#8" in str(ei.value)
    incomplete = make_config(fake_server, apns_key, service_account, url,
                             fcm_credentials_file=str(write_incomplete_service_account(tmp_path)))
    bad_input()
    with pytest.raises(ConfigError) as ei:
        send_batch([fcm_n(FCM_TOK)], incomplete, "cred-2")
    assert ei.value.setting == "PUSH_FCM_CREDENTIALS_FILE" and "private_key" in str(ei.value)
    missing = make_config(fake_server, apns_key, service_account, url, fcm_credentials_file=None)
    bad_input()
    with pytest.raises(ConfigError) as ei:
        send_batch([apns_n(APNS_TOK), fcm_n(FCM_TOK)], missing, "cred-3")
    assert ei.value.setting == "PUSH_FCM_CREDENTIALS_FILE"
    not_json = tmp_path / "sa.json"
    not_json.write_text("{not json")
    bad_input()
    with pytest.raises(ConfigError) as ei:
        send_batch([fcm_n(FCM_TOK)], incomplete.with_(fcm_credentials_file=str(not_json)), "cred-4")
    assert ei.value.setting == "PUSH_FCM_CREDENTIALS_FILE"
    assert table_counts(engine) == before, "a configuration error left rows behind"
    assert not fake_server.requests


@pytest.mark.parametrize("url,why", [
    ("postgresql://postgres@127.0.0.1:1/nowhere", "cannot connect"),
    ("postgresql://user:s3cret-pw@127.0.0.1:1/nowhere", "cannot connect"),
    ("not a url", "not a database URL"),
    ("", "is empty"),
    ("mysql://u@127.0.0.1/db", "unsupported driver"),
    ("sqlite://somehost/x.db", "no host"),
    ("sqlite:////no/such/directory/x.db", "does not exist"),
    ("postgresql://127.0.0.1:5432", "names no database"),
])
def test_bad_database_urls(url, why, fake_server, apns_key, service_account):
    bad_input()
    with pytest.raises(ConfigError) as ei:
        make_engine(url)
    assert ei.value.setting == "PUSH_DATABASE_URL" and why in str(ei.value), str(ei.value)
    assert "s3cret-pw" not in str(ei.value)
    cfg = make_config(fake_server, apns_key, service_account, url)
    with pytest.raises(ConfigError) as ei:
        send_batch([apns_n(APNS_TOK)], cfg, "url-1")
    assert ei.value.setting == "PUSH_DATABASE_URL" and "s3cret-pw" not in str(ei.value)
    assert not fake_server.requests


@pytest.mark.parametrize("var,value", [
    ("PUSH_CONCURRENCY", "0"), ("PUSH_CONCURRENCY", "100001"), ("PUSH_CONCURRENCY", "many"),
    ("PUSH_CONCURRENCY", "1.5"), ("PUSH_STREAM_TIMEOUT", "0"), ("PUSH_STREAM_TIMEOUT", "-1"),
    ("PUSH_STREAM_TIMEOUT", "ten"), ("PUSH_MAX_CONNECTIONS", "65"), ("PUSH_MAX_CONNECTIONS", "0"),
    ("PUSH_CHUNK_SIZE", "-5"), ("PUSH_RETRY_MAX_ATTEMPTS", "0"), ("PUSH_RETRY_MAX_ATTEMPTS", "101"),
    ("PUSH_QUARANTINE_THRESHOLD", "1001"), ("PUSH_RETRY_BASE_DELAY", "-1"), ("PUSH_RETRY_MAX_DELAY", "-0.5"),
    ("PUSH_QUARANTINE_RESET_DAYS", "0"), ("PUSH_LOG_RETENTION_DAYS", "0.5"),
])
def test_config_out_of_range_names_the_variable(var, value):
    bad_input()
    with pytest.raises(ConfigError) as ei:
        PushConfig.from_env({var: value})
    assert ei.value.setting == var, str(ei.value)
    assert str(ei.value).startswith(var)


@pytest.mark.parametrize("var,value", [("PUSH_STREAM_TIMEOUT", "nan"), ("PUSH_RETRY_BASE_DELAY", "nan"),
                                       ("PUSH_VALIDITY_SECONDS", "inf"), ("PUSH_RETRY_MAX_DELAY", "-inf")])
def test_config_rejects_non_finite_numbers(var, value):
    bad_input()
    with pytest.raises(ConfigError) as ei:
        PushConfig.from_env({var: value})
    assert ei.value.setting == var, str(ei.value)


@pytest.mark.parametrize("env", [{"PUSH_VALIDITY_SECONDS": "1e20"},
                                 {"PUSH_RETRY_BASE_DELAY": "1e20", "PUSH_RETRY_MAX_DELAY": "1e20"}])
def test_config_rejects_durations_beyond_what_a_timestamp_can_hold(env):
    with pytest.raises(ConfigError):
        PushConfig.from_env(env)


def test_header_rejected_locally_is_invalid_content_not_maybe_delivered(fake_server, apns_key, service_account):
    """Defence in depth: a value our HTTP/2 layer refuses is recorded as our fault, never as 'may have been delivered'."""
    bad_input()
    out = outcome_for_transport_error("apns", httpx.LocalProtocolError("invalid header for HTTP/2"), DEFAULT_TABLE)
    assert out.rule == "apns:invalid_content" and not out.retry and "not sent" in out.error_text
    n = apns_n(APNS_TOK)
    object.__setattr__(n, "collapse_id", "a\r\nb")  # bypass validation, as a bug elsewhere might

    async def main():
        c = ApnsClient(make_config(fake_server, apns_key, service_account))
        try:
            return await c.send(n)
        finally:
            await c.aclose()
    out = asyncio.run(main())
    assert out.rule == "apns:invalid_content" and not fake_server.requests


def test_rejected_first_chunk_leaves_no_delivery_to_resume(db, fake_server, apns_key, service_account):
    """A rejected first chunk must not leave a delivery that later looks like a resume."""
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    bad_input()
    with pytest.raises(ValidationError):
        send_batch([{"platform": "apns", "app": APP, "token": "bad"}], cfg, "later-ok")
    rep = send_batch([apns_n(APNS_TOK)], cfg, "later-ok")
    assert not rep.resumed and rep.sent == 1
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(Delivery.__table__)).scalar_one() == 1
    assert [r.status for r in log_rows(engine, "later-ok")] == ["sent"]
