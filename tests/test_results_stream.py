"""Each token's fate back in the host application: a result per notification, async inputs, dead tokens."""

from __future__ import annotations

import asyncio
from collections import Counter

import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push import Notification, NotificationResult, asend_batch, dead_tokens, send_batch
from tables.engine import make_engine
from tables.models import DLOG
from tests.faults.helpers import APP, FCM_APP, make_config


def audience() -> list[Notification]:
    out = []
    for i in range(300):
        if i % 10 == 1:
            out.append(Notification(token=apns_token("unregistered", i), platform="apns", app=APP, title="t"))
        elif i % 10 == 2:
            out.append(Notification(token=fcm_token("unregistered", i), platform="fcm", app=FCM_APP, title="t"))
        elif i % 10 == 3:
            out.append(Notification(token=None, platform="apns", app=APP, title="t"))  # excluded at analysis
        elif i % 2:
            out.append(Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t"))
        else:
            out.append(Notification(token=ok_fcm_token(i), platform="fcm", app=FCM_APP, title="t"))
    return out


def test_a_result_per_notification_matches_the_ledger(db_url, fake_server, apns_key, service_account):
    engine = make_engine(db_url)
    results: list[NotificationResult] = []
    notifs = audience()
    cfg = make_config(fake_server, apns_key, service_account, db_url, chunk_size=64)
    rep = send_batch(notifs, cfg, "results-1", on_result=results.append)
    assert sorted(r.seq for r in results) == list(range(len(notifs)))  # each exactly once
    with engine.connect() as conn:
        ledger = {r.seq: r for r in conn.execute(sa.select(DLOG).where(DLOG.c.delivery_id == "results-1"))}
    for r in results:
        row = ledger[r.seq]
        assert (r.status, r.failure_type, r.failure_reason, r.token) == (row.status, row.failure_type,
                                                                         row.failure_reason, row.token or None)
    assert Counter(r.status for r in results) == {"sent": rep.sent, "failed": rep.failed, "excluded": rep.excluded}
    gone = {n.token for n in notifs if n.token and "unregistered" in (n.token if n.platform == "fcm" else "")} | {
        n.token for n in notifs if n.token and n.token.startswith("ffff")}
    assert {r.token for r in results if r.dead} == gone
    assert {r.token for r in results if r.entered_quarantine} == gone  # new tokens: each 410 quarantines now
    assert {t for _, _, t, _ in dead_tokens(engine, "results-1")} == gone


def test_async_iterables_are_accepted(db_url, fake_server, apns_key, service_account):
    async def stream():
        for i in range(150):
            await asyncio.sleep(0)  # an async ORM's cursor
            yield {"token": ok_apns_token(i), "platform": "apns", "app": APP, "title": "t"}

    cfg = make_config(fake_server, apns_key, service_account, db_url, chunk_size=40)
    rep = asyncio.run(asend_batch(stream(), cfg, "async-1"))
    assert rep.total == 150 and rep.sent == 150
    # and through the blocking entry point too
    rep = send_batch(stream(), cfg, "async-2")
    assert rep.sent == 150
