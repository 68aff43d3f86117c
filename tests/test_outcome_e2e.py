"""Outcome table, round two (issue 14): each answer sent by the real HTTP/2 fake server through the real
clients and pipeline, checked where it lands: the ``delivery_log`` row and the quarantine entry.

Every test here fails on the table before issue 14 (see the issue's items, named in each test).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token
from jobs.retry import run_retries
from push import Notification, PushConfig, send_batch
from push.clock import FakeClock, SystemClock
from push.quarantine import QuarantinePolicy
from tables.models import DeliveryLog, Quarantine

APP = "com.example.app"
FCM_APP = "android"
THRESHOLD = QuarantinePolicy().threshold  # soft errors before a token is quarantined


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")


def config(fake_server, apns_key, service_account, db_url, **kw) -> PushConfig:
    return PushConfig(database_url=db_url, apns_base_url=fake_server.url, apns_key_file=str(apns_key.path),
                      apns_key_id=apns_key.key_id, apns_team_id=apns_key.team_id, fcm_base_url=fake_server.url,
                      fcm_credentials_file=str(service_account.path), ca_file=str(fake_server.ca_file),
                      stream_timeout=2.0, chunk_size=50, concurrency=20, **kw)


def apns_n(token: str, **kw) -> Notification:
    return Notification(token=token, platform="apns", app=APP, title="t", body="b", **kw)


def fcm_n(token: str, **kw) -> Notification:
    return Notification(token=token, platform="fcm", app=FCM_APP, title="t", body="b", **kw)


def log_rows(engine, delivery: str) -> dict[str, sa.Row]:
    t = DeliveryLog.__table__
    with engine.connect() as c:
        return {r.token: r for r in c.execute(sa.select(t).where(t.c.delivery_id == delivery))}


def quarantine(engine) -> dict[str, sa.Row]:
    t = Quarantine.__table__
    with engine.connect() as c:
        return {r.token: r for r in c.execute(sa.select(t))}


def requests_for(fake_server, token: str) -> list:
    return [r for r in fake_server.requests if r.token == token]


# --------------------------------------------------------------------------- item 1 (and PayloadTooLarge)

UNKNOWN_REASON = {  # APNs scenario -> (status, row status after one send)
    "unknown_reason": (400, "failed"),  # judgement: our request (choice 13)
    "unknown_reason_403": (403, "failed"),
    "unknown_reason_404": (404, "failed"),
    "unknown_reason_405": (405, "failed"),
    "unknown_reason_413": (413, "failed"),
    "unknown_reason_429": (429, "retry_pending"),
    "payload_too_large": (413, "failed"),  # documented PayloadTooLarge: message scope, as before
}


def test_item1_unknown_apns_reasons_never_count_against_the_device(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = config(fake_server, apns_key, service_account, url)
    tokens = {name: apns_token(name, 1) for name in UNKNOWN_REASON}
    for i in range(THRESHOLD):  # as many deliveries as it takes to quarantine a token on soft errors
        send_batch([apns_n(tok) for tok in tokens.values()], cfg, f"unknown-{i}")
        q = quarantine(engine)
        assert not set(tokens.values()) & set(q), {n: q[t].status for n, t in tokens.items() if t in q}
        rows = log_rows(engine, f"unknown-{i}")
        for name, tok in tokens.items():
            status, row_status = UNKNOWN_REASON[name]
            r = rows[tok]
            assert (r.status, r.failure_type, r.failure_reason, r.provider_status) == (row_status, "soft", 20, status), name
    assert len(requests_for(fake_server, tokens["unknown_reason_403"])) == THRESHOLD


# --------------------------------------------------------------------------- item 2

def test_item2_apns_410_with_an_unknown_reason_quarantines_at_once(db, fake_server, apns_key, service_account):
    engine, url = db
    tok = apns_token("unknown_reason_410", 1)
    send_batch([apns_n(tok)], config(fake_server, apns_key, service_account, url), "gone")
    r = log_rows(engine, "gone")[tok]
    assert (r.status, r.failure_type, r.failure_reason, r.provider_status, r.provider_reason) == (
        "failed", "hard", 1, 410, "SomethingNew")
    q = quarantine(engine)[tok]
    assert (q.status, q.failure_type, q.failure_reason) == ("quarantine", "hard", 1)
    assert q.provider_timestamp is not None  # the 410's timestamp is kept, as for Unregistered


# --------------------------------------------------------------------------- item 3

APNS_TRANSIENT = {"internal_server_error": 500, "service_unavailable": 503, "shutdown": 503,
                  "too_many_requests": 429, "service_unavailable_retry_after": 503}


def test_item3_apns_throttling_and_outages_are_retried(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = config(fake_server, apns_key, service_account, url, retry_base_delay=60, retry_max_attempts=2)
    t0 = SystemClock().now()
    clock = FakeClock(t0)
    tokens = {name: apns_token(name, 1) for name in APNS_TRANSIENT}
    short = apns_token("service_unavailable", 2)  # valid for 30 s: the first retry would come too late
    notifs = [apns_n(tok) for tok in tokens.values()] + [apns_n(short, expiration=t0 + timedelta(seconds=30))]
    rep = send_batch(notifs, cfg, "outage", clock=clock)
    assert rep.retry_pending == len(tokens)
    rows = log_rows(engine, "outage")
    for name, tok in tokens.items():
        r = rows[tok]
        assert (r.status, r.failure_type, r.failure_reason, r.provider_status, r.attempts) == (
            "retry_pending", "soft", 20, APNS_TRANSIENT[name], 1), name
        delay = 120 if name == "service_unavailable_retry_after" else 60  # max(Retry-After, backoff)
        assert r.next_retry_at == t0 + timedelta(seconds=delay), name
    assert (rows[short].status, rows[short].failure_type, rows[short].failure_reason) == ("failed", "soft", 20)

    clock.advance(seconds=121)
    assert asyncio.run(run_retries(engine, cfg, clock)).examined == len(tokens)
    rows = log_rows(engine, "outage")
    for name, tok in tokens.items():
        assert len(requests_for(fake_server, tok)) == 2, name
        r = rows[tok]  # the attempt cap reached: the seed's verdict, soft / refused
        assert (r.status, r.failure_type, r.failure_reason, r.attempts, r.next_retry_at) == (
            "failed", "soft", 20, 2, None), name
    assert not quarantine(engine), "provider trouble must never move a device's counter"


# --------------------------------------------------------------------------- item 4

def test_item4_fcm_429_is_retried_whatever_its_body(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = config(fake_server, apns_key, service_account, url, retry_base_delay=2)
    t0 = SystemClock().now()
    tokens = [fcm_token("quota_empty_429", 1), fcm_token("quota_html_429", 1)]
    send_batch([fcm_n(tok) for tok in tokens], cfg, "quota", clock=FakeClock(t0))
    rows = log_rows(engine, "quota")
    for tok in tokens:
        r = rows[tok]
        assert (r.status, r.failure_type, r.failure_reason, r.provider_status) == ("retry_pending", "soft", 20, 429)
        assert r.next_retry_at == t0 + timedelta(seconds=30), "Retry-After 30 honoured over the 2 s backoff"
    assert not quarantine(engine)


# --------------------------------------------------------------------------- item 5

def test_item5_fcm_500_internal_with_an_unknown_error_code_is_retried(db, fake_server, apns_key, service_account):
    engine, url = db
    tok = fcm_token("internal_unknown_code", 1)
    send_batch([fcm_n(tok)], config(fake_server, apns_key, service_account, url), "internal")
    r = log_rows(engine, "internal")[tok]
    assert (r.status, r.failure_type, r.failure_reason, r.provider_status, r.provider_reason) == (
        "retry_pending", "ignored", 20, 500, "BRAND_NEW_CODE")
    assert r.next_retry_at is not None
    assert not quarantine(engine)


# --------------------------------------------------------------------------- item 6

def test_item6_fcm_401_with_an_unknown_error_code_refreshes_once_and_resends(db, fake_server, apns_key,
                                                                               service_account):
    engine, url = db
    tok = fcm_token("unauthenticated_unknown_code", 1)
    rep = send_batch([fcm_n(tok)], config(fake_server, apns_key, service_account, url), "auth")
    assert rep.sent == 1
    r = log_rows(engine, "auth")[tok]
    assert (r.status, r.failure_type, r.attempts) == ("sent", None, 1)
    first, second = requests_for(fake_server, tok)
    assert first.status == 401 and second.status == 200
    assert first.bearer != second.bearer, "resent with a new OAuth access token"
    assert fake_server.oauth_requests == 2
    assert not quarantine(engine)


# --------------------------------------------------------------------------- item 7

def test_item7_oauth_internal_failure_in_error_description_is_retried(db, fake_server, apns_key, service_account):
    engine, url = db
    fake_server.oauth_mode = "internal_failure_description"
    tokens = [fcm_token("ok", i) for i in range(3)]
    rep = send_batch([fcm_n(tok) for tok in tokens], config(fake_server, apns_key, service_account, url), "oauth")
    assert rep.retry_pending == 3
    for r in log_rows(engine, "oauth").values():
        assert (r.status, r.failure_type, r.failure_reason) == ("retry_pending", "ignored", 20)
        assert r.error_text.startswith("OAuth 400 invalid_grant: internal_failure") and r.next_retry_at
    assert not [r for r in fake_server.requests if r.provider == "fcm"], "no FCM request without a token"
    assert not quarantine(engine)


# --------------------------------------------------------------------------- item 8

def test_item8_malformed_bad_request_detail_is_a_rejection_not_a_lost_connection(db, fake_server, apns_key,
                                                                                  service_account):
    engine, url = db
    tok = fcm_token("field_violations_not_a_list", 1)
    send_batch([fcm_n(tok)], config(fake_server, apns_key, service_account, url), "malformed")
    r = log_rows(engine, "malformed")[tok]
    assert (r.status, r.failure_type, r.failure_reason, r.provider_status, r.next_retry_at) == (
        "failed", "ignored", 0, 400, None)
    assert r.error_text.startswith("FCM 400 INVALID_ARGUMENT")
    assert len(requests_for(fake_server, tok)) == 1
    assert not quarantine(engine)


# --------------------------------------------------------------------------- item 9

APNS_NON_JSON = {"html_502": (502, "retry_pending"), "html_500": (500, "retry_pending"),
                 "truncated_json": (500, "retry_pending"), "html_403": (403, "failed")}


def test_item9_apns_non_json_answers_are_rejections_not_content_errors(db, fake_server, apns_key, service_account):
    engine, url = db
    tokens = {name: apns_token(name, 1) for name in APNS_NON_JSON}
    send_batch([apns_n(tok) for tok in tokens.values()], config(fake_server, apns_key, service_account, url), "html")
    rows = log_rows(engine, "html")
    for name, tok in tokens.items():
        status, row_status = APNS_NON_JSON[name]
        r = rows[tok]
        assert (r.status, r.failure_type, r.failure_reason, r.provider_status) == (row_status, "soft", 20, status), name
    assert not quarantine(engine)
