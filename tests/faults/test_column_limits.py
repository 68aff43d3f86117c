"""What validation accepts is what the columns hold: a notification at each limit is written on both databases,
one over it is refused with a ValidationError naming the field and the limit, and no text a notification or a
delivery id carries (NUL, lone surrogates, objects that are not text) reaches the database or the wire."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, ok_apns_token, ok_fcm_token
from push import Notification, ValidationError, send_batch
from push import notification as nmod
from push.outcomes import FailureReason
from tables.models import ALL_TABLES, AppSubscription, Delivery
from tests.faults.helpers import APP, FCM_APP, assert_ledger, bad_input, log_rows, make_config, quarantine_rows

# column name -> the limit of what is written there
COLUMN_LIMITS = {"token": 1024, "app": 255, "profile_id": 255, "delivery_id": 64}


def test_validator_limits_are_the_column_sizes() -> None:
    assert COLUMN_LIMITS == {"token": nmod.TOKEN_MAX, "app": nmod.APP_MAX, "profile_id": nmod.PROFILE_ID_MAX,
                             "delivery_id": nmod.DELIVERY_ID_MAX}
    checked = []
    for model in ALL_TABLES:
        for col in model.__table__.columns:  # type: ignore[attr-defined]
            if col.name in COLUMN_LIMITS:
                assert col.type.length == COLUMN_LIMITS[col.name], f"{model.__tablename__}.{col.name}"
                checked.append(f"{model.__tablename__}.{col.name}")
    assert Delivery.__table__.c.id.type.length == COLUMN_LIMITS["delivery_id"]
    assert {"delivery_log.token", "app_subscription.token", "quarantine.token", "exclusion_log.token",
            "delivery_log.profile_id", "app_subscription.profile_id", "denylist.profile_id",
            "delivery_log.delivery_id"} <= set(checked)
    assert nmod.APNS_TOKEN_MAX <= nmod.TOKEN_MAX


def fcm(**kw):
    return {"platform": "fcm", "app": FCM_APP, "token": ok_fcm_token(1), **kw}


def apns(**kw):
    return {"platform": "apns", "app": APP, "token": ok_apns_token(1), **kw}


# (description, Notification keywords one over a limit, field, limit)
OVER_THE_LIMIT = [
    ("fcm token 1,025 characters", fcm(token="a" * 1025), "token", "8..1024"),
    ("apns token 401 hex characters", apns(token="a" * 401), "token", "16..400 hex"),
    ("app 256 characters", fcm(app="a" * 256), "app", 255),
    ("apns app 256 characters", apns(app="a" * 256), "app", 255),
    ("profile id 256 characters", fcm(profile_id="p" * 256), "profile_id", 255),
    ("profile id 256 two-byte characters", fcm(profile_id="é" * 256), "profile_id", 255),
    ("profile id a 256-digit number", fcm(profile_id=10 ** 255), "profile_id", 255),
    ("profile id a 5,000-digit number", fcm(profile_id=10 ** 5000), "profile_id", 255),
]


@pytest.mark.parametrize("kw,field,limit", [c[1:] for c in OVER_THE_LIMIT], ids=[c[0] for c in OVER_THE_LIMIT])
def test_one_over_each_limit_is_refused_naming_field_and_limit(kw, field, limit):
    bad_input()
    with pytest.raises(ValidationError) as ei:
        Notification(**kw)
    assert ei.value.field == field and ei.value.limit == limit, str(ei.value)
    assert str(ei.value).startswith(f"{field}: ") and str(limit).split("..")[-1].split()[0] in str(ei.value)


def test_delivery_id_one_over_the_limit_is_refused(db, fake_server, apns_key, service_account):
    engine, url = db
    bad_input()
    with pytest.raises(ValidationError) as ei:
        send_batch([apns()], make_config(fake_server, apns_key, service_account, url), "d" * 65)
    assert ei.value.field == "delivery" and ei.value.limit == 64 and "64" in str(ei.value)
    assert not log_rows(engine, "d" * 65) and not fake_server.requests


def test_over_the_limit_mid_delivery_stops_it_without_a_poison_pill(db, fake_server, apns_key, service_account):
    """On main a 1,025-character FCM token passed validation and then failed every (re)run at the same
    position on Postgres; now it is refused before anything of its chunk is written."""
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, chunk_size=10)
    items = [fcm(token=ok_fcm_token(i)) for i in range(15)] + [fcm(token="b" * 1025)]
    for _ in range(2):  # the same input twice: a clear error both times, never a StorageError
        bad_input()
        with pytest.raises(ValidationError) as ei:
            send_batch(items, cfg, "poison")
        assert ei.value.field == "token" and "#15" in str(ei.value) and "1024" in str(ei.value), str(ei.value)
    # Without the bad notification the delivery resumes and completes (a shorter input than the one it
    # started with: the resume says so, and goes ahead when told to).
    rep = send_batch(items[:15], cfg, "poison", force=True)
    assert rep.resumed and rep.sent == 15
    assert_ledger(engine, "poison", 15, fake_server.accepted)


def test_a_notification_at_every_limit_is_written(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    long_fcm = "f" * 1024
    long_apns = "a" * 400
    profile = "é" * 255  # the limit is in characters, not bytes
    notifs = [
        Notification(token=long_fcm, platform="fcm", app="x" * 255, profile_id=profile, title="t"),
        Notification(token=long_apns, platform="apns", app="y" * 255, profile_id="p" * 255, title="t"),
        Notification(token=ok_fcm_token(2), platform="fcm", app=FCM_APP, profile_id=10 ** 254 * 9, title="t"),
        # The widest index entry: (platform, app, token) with 4-byte characters fits Postgres's btree limit.
        Notification(token="g" * 1024, platform="fcm", app="🙂" * 255, profile_id="🙂" * 255, title="t"),
    ]
    delivery = "d" * 64
    rep = send_batch(notifs, cfg, delivery)
    assert rep.total == 4 and rep.pending == 0
    rows = log_rows(engine, delivery)
    assert [(r.token, r.app, r.profile_id) for r in rows] == [
        (long_fcm, "x" * 255, profile), (long_apns, "y" * 255, "p" * 255), (ok_fcm_token(2), FCM_APP, "9" + "0" * 254),
        ("g" * 1024, "🙂" * 255, "🙂" * 255)]
    assert all(r.status in ("sent", "failed", "retry_pending") for r in rows), [r.status for r in rows]
    t = AppSubscription.__table__
    with engine.connect() as c:
        subs = {r.token: r.profile_id for r in c.execute(sa.select(t.c.token, t.c.profile_id))}
    assert subs[long_fcm] == profile and subs[long_apns] == "p" * 255


# (description, Notification keywords, field): text a column or a provider cannot take.
BAD_TEXT = [
    ("fcm push type lone surrogate", fcm(push_type="al\ud800ert"), "push_type"),
    ("fcm push type with NUL", fcm(push_type="alert\x00"), "push_type"),
    ("fcm collapse id lone surrogate", fcm(collapse_id="\udc00"), "collapse_id"),
    ("fcm collapse id with NUL", fcm(collapse_id="c\x00"), "collapse_id"),
    ("title with NUL", fcm(title="a\x00b"), "title"),
    ("body with NUL", apns(body="a\x00b"), "body"),
    ("profile id lone surrogate", fcm(profile_id="\ud800"), "profile_id"),
    ("profile id an object", fcm(profile_id=object()), "profile_id"),
    ("profile id a float", fcm(profile_id=1.5), "profile_id"),
    ("profile id a bool", fcm(profile_id=True), "profile_id"),
    ("profile id bytes", fcm(profile_id=b"p1"), "profile_id"),
    ("profile id a dict", fcm(profile_id={"id": 1}), "profile_id"),
]


def _deep_list(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


BAD_TEXT.append(("profile id a deeply nested list (str() would recurse)", fcm(profile_id=_deep_list(100_000)),
                 "profile_id"))


@pytest.mark.parametrize("kw,field", [c[1:] for c in BAD_TEXT], ids=[c[0] for c in BAD_TEXT])
def test_text_no_column_or_provider_can_take_is_refused(kw, field):
    bad_input()
    with pytest.raises(ValidationError) as ei:
        Notification(**kw)
    assert ei.value.field == field, str(ei.value)


def test_whole_number_profile_ids_are_text():
    assert Notification(**fcm(profile_id=42)).profile_id == "42"
    assert Notification(**fcm(profile_id=-7)).profile_id == "-7"


@pytest.mark.parametrize("bad", ["de\ud800livery", "de\x00livery", "line\nbreak", "tab\tbed", "\udfff"])
def test_delivery_id_text_is_refused_on_both_databases(bad, db, fake_server, apns_key, service_account):
    engine, url = db
    bad_input()
    with pytest.raises(ValidationError) as ei:
        send_batch([apns()], make_config(fake_server, apns_key, service_account, url), bad)
    assert ei.value.field == "delivery", str(ei.value)
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(Delivery.__table__)).scalar_one() == 0
    assert not fake_server.requests


def test_fcm_push_type_with_a_lone_surrogate_in_a_batch_is_a_validation_error(db, fake_server, apns_key,
                                                                              service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    bad_input()
    with pytest.raises(ValidationError) as ei:
        send_batch([fcm(), fcm(token=ok_fcm_token(2), push_type="\ud83d")], cfg, "surrogate")
    assert ei.value.field == "push_type" and "#1" in str(ei.value)
    assert not log_rows(engine, "surrogate") and not fake_server.requests


def test_apns_tokens_are_one_device_whatever_their_case(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    dead = apns_token("unregistered", 7)  # answered 410 Unregistered
    ok = ok_apns_token(3)
    assert Notification(**apns(token=ok.upper())).token == ok
    first = [apns(token=ok), apns(token=ok.upper()), apns(token=dead.upper())]
    rep = send_batch(first, cfg, "case-1")
    rows = assert_ledger(engine, "case-1", 3, fake_server.accepted)
    assert rows[0].status == "sent" and rows[1].status == "excluded"
    assert rows[1].failure_reason == int(FailureReason.DUPLICATE) and rows[1].token == ok
    assert rep.sent == 1 and rep.excluded_by_reason == {"duplicate": 1}
    assert quarantine_rows(engine)[dead].status == "quarantine"  # stored in lower case
    rep = send_batch([apns(token=dead), apns(token=dead[:10] + dead[10:].upper())], cfg, "case-2")
    rows = log_rows(engine, "case-2")
    assert [r.failure_reason for r in rows] == [int(FailureReason.QUARANTINED), int(FailureReason.QUARANTINED)]
    assert rep.sent == 0


def test_a_registration_is_normalised_and_checked_as_a_notification(engine):
    from push.registry import register_tokens

    ok = ok_apns_token(4)
    assert register_tokens(engine, [{"token": ok.upper(), "platform": "apns", "app": APP, "profile_id": 12}]) == 1
    t = AppSubscription.__table__
    with engine.connect() as c:
        assert [tuple(r) for r in c.execute(sa.select(t.c.token, t.c.profile_id))] == [(ok, "12")]
    bad_input()
    with pytest.raises(ValidationError) as ei:
        register_tokens(engine, [{"token": ok, "platform": "apns", "app": APP, "profile_id": "p" * 256}])
    assert ei.value.field == "registrations[0].profile_id" and ei.value.limit == 255
