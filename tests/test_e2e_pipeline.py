"""send_batch end to end: real clients, real HTTP/2 fake servers, SQLite and Postgres."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from jobs.retry import run_retries
from push import Notification, PushConfig, asend_batch, send_batch
from push.clock import FakeClock, SystemClock
from tables.models import DeliveryLog, Quarantine

APP = "com.example.app"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")


def config(fake_server, apns_key, service_account, db_url, **kw):
    return PushConfig(database_url=db_url, apns_base_url=fake_server.url, apns_key_file=str(apns_key.path),
                      apns_key_id=apns_key.key_id, apns_team_id=apns_key.team_id, fcm_base_url=fake_server.url,
                      fcm_credentials_file=str(service_account.path), ca_file=str(fake_server.ca_file),
                      stream_timeout=1.0, chunk_size=200, concurrency=100, **kw)


def statuses(engine, delivery_id):
    t = DeliveryLog.__table__
    with engine.connect() as c:
        return dict(c.execute(sa.select(t.c.status, sa.func.count()).where(t.c.delivery_id == delivery_id)
                              .group_by(t.c.status)).all())


def test_mixed_delivery_through_real_servers(db, fake_server, apns_key, service_account):
    fake_server.goaway_after = 300
    engine, db_url = db
    cfg = config(fake_server, apns_key, service_account, db_url)

    def notifications():
        for i in range(600):
            yield Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t", body="b")
            yield Notification(token=ok_fcm_token(i), platform="fcm", app="android", title="t", body="b")
        for name in ("unregistered", "bad_device_token", "service_unavailable", "rst_refused", "goaway"):
            yield Notification(token=apns_token(name, 1), platform="apns", app=APP, title="t")
        for name in ("unregistered", "invalid_token", "quota_exceeded", "unavailable", "internal",
                     "third_party_auth_error"):
            yield Notification(token=fcm_token(name, 1), platform="fcm", app="android", title="t")
        yield Notification(token=None, platform="fcm", app="android", title="t")

    rep = send_batch(notifications(), cfg, "e2e-1")
    total = 1200 + 5 + 6 + 1
    assert rep.total == total
    st = statuses(engine, "e2e-1")
    assert sum(st.values()) == total and "pending" not in st
    assert rep.excluded_by_reason == {"address not specified": 1}
    assert max(fake_server.accepted.values()) == 1, "the server accepted a notification twice"
    t = DeliveryLog.__table__
    with engine.connect() as c:
        rows = {r.token: r for r in c.execute(sa.select(t).where(t.c.delivery_id == "e2e-1"))}
    # A stream at or below GOAWAY's last_stream_id that the server closed without answering may have been
    # delivered: it is recorded as connection lost (retry later), never resent at once.
    lost = {tok for tok, r in rows.items() if r.error_text and "connection lost" in r.error_text}
    assert all(rows[tok].status == "retry_pending" for tok in lost)
    expected = {apns_token("unregistered", 1): "failed", apns_token("bad_device_token", 1): "failed",
                apns_token("service_unavailable", 1): "retry_pending", apns_token("rst_refused", 1): "sent",
                apns_token("goaway", 1): "sent", fcm_token("unregistered", 1): "failed",
                fcm_token("invalid_token", 1): "failed", fcm_token("quota_exceeded", 1): "retry_pending",
                fcm_token("unavailable", 1): "retry_pending", fcm_token("internal", 1): "retry_pending",
                fcm_token("third_party_auth_error", 1): "retry_pending"}
    for tok, r in rows.items():
        if tok and tok not in lost:
            assert r.status == expected.get(tok, "sent"), (tok, r.status, r.error_text)
    assert rep.sent == sum(r.status == "sent" for r in rows.values()) == 1202 - len(lost & (set(rows) - set(expected) | {
        apns_token("rst_refused", 1), apns_token("goaway", 1)}))
    t = Quarantine.__table__
    with engine.connect() as c:
        q = dict(c.execute(sa.select(t.c.token, t.c.status)).all())
    for tok, status in ((apns_token("unregistered", 1), "quarantine"), (fcm_token("invalid_token", 1), "quarantine"),
                        (apns_token("bad_device_token", 1), "with_errors")):
        if tok not in lost:
            assert q[tok] == status
    assert apns_token("service_unavailable", 1) not in q  # provider errors never touch a token
    assert fcm_token("third_party_auth_error", 1) not in q
    assert not any(q.get(tok) for tok in lost), "a lost connection must not move a token's counter"

    # same delivery again: nothing is sent twice
    before = len(fake_server.requests)
    rep2 = send_batch(notifications(), cfg, "e2e-1")
    assert rep2.resumed and len(fake_server.requests) == before and rep2.sent == rep.sent


def test_retry_job_resends_through_real_servers(db, fake_server, apns_key, service_account):
    engine, db_url = db
    cfg = config(fake_server, apns_key, service_account, db_url, retry_base_delay=0)
    tok = fcm_token("unavailable", 7)
    rep = send_batch([Notification(token=tok, platform="fcm", app="android", title="t")], cfg, "e2e-retry")
    assert rep.retry_pending == 1
    later = FakeClock(SystemClock().now() + timedelta(seconds=30))  # past the Retry-After of 5 s
    res = asyncio.run(run_retries(engine, cfg, later))
    assert res.examined == 1
    t = DeliveryLog.__table__
    with engine.connect() as c:
        row = c.execute(sa.select(t).where(t.c.delivery_id == "e2e-retry")).one()
    assert row.attempts == 2
    assert len([r for r in fake_server.requests if r.token == tok]) == 2


def test_async_api(db, fake_server, apns_key, service_account):
    engine, db_url = db
    cfg = config(fake_server, apns_key, service_account, db_url)
    rep = asyncio.run(asend_batch([Notification(token=ok_apns_token(1), platform="apns", app=APP, title="x")], cfg))
    assert rep.sent == 1
