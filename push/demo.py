"""``push-feedback demo``: a full delivery against the local fake servers, end to end.

Everything is real but the providers: HTTP/2 over TLS with a throwaway CA, JWT
and OAuth checked by the fake servers, the embedded database, the opt-out job.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from push.clock import SystemClock
from push.config import PushConfig
from push.errors import ValidationError
from push.notification import Notification
from push.pipeline import DeliveryReport, send_batch
from push.testing import (FakePushServer, apns_token, fcm_token, make_apns_key, make_ca, make_service_account,
                          ok_apns_token, ok_fcm_token)
from tables import store
from tables.engine import make_engine
from tables.migrate import upgrade
from tables.models import DELIV, DENY, DLOG, EXCL, LOCKS, QUAR, RELOG, RULE, RUNS, SUBS
from tables.reports import NonDeliverables, non_deliverables

IOS_APP = "com.example.news"
ANDROID_APP = "news-android"
DEMO_APPS = (IOS_APP, ANDROID_APP)
# Everything the demo writes carries one of these marks, so a re-run can tell its own rows from
# anyone else's and refuse a database that holds data it did not create.
DELIVERY_PREFIX = "push-feedback-demo-"
DENYLIST_REASON = "demo opt-out"

# (platform, scenario, how many): every outcome the product deals with, mixed into one delivery.
MIX: tuple[tuple[str, str, int], ...] = (
    ("apns", "unregistered", 40), ("apns", "bad_device_token", 15), ("apns", "service_unavailable", 10),
    ("apns", "too_many_requests", 5), ("apns", "invalid_provider_token", 5), ("apns", "rst_refused", 10),
    ("fcm", "unregistered", 40), ("fcm", "invalid_token", 20), ("fcm", "apns_disabled", 5),
    ("fcm", "quota_exceeded", 15), ("fcm", "unavailable", 15), ("fcm", "third_party_auth_error", 5),
    ("fcm", "sender_id_mismatch", 5),
)


@dataclass
class DemoResult:
    report: DeliveryReport
    non_deliverables: NonDeliverables
    optout: dict[str, Any]
    database_url: str
    subscriptions: int
    goaway_after: int
    seconds: float


def _devices(count: int) -> list[tuple[str, str, str]]:
    """(platform, app, token) for ``count`` devices: mostly healthy, the MIX sprinkled in."""
    special = [(p, IOS_APP if p == "apns" else ANDROID_APP, apns_token(s, i) if p == "apns" else fcm_token(s, i))
               for p, s, n in MIX for i in range(n)]
    healthy = max(0, count - len(special))
    devices = [("apns", IOS_APP, ok_apns_token(i)) if i % 2 == 0 else ("fcm", ANDROID_APP, ok_fcm_token(i))
               for i in range(healthy)]
    # interleave so the awkward answers arrive mid-batch, not at the end
    step = max(1, len(devices) // max(1, len(special)))
    for k, dev in enumerate(special):
        devices.insert(min(len(devices), k * (step + 1)), dev)
    return devices


def foreign_data(conn: sa.Connection) -> str | None:
    """What in this database the demo did not write (e.g. "12 subscriptions"), or None."""
    checks = (
        ("subscriptions", SUBS, ~SUBS.c.app.in_(DEMO_APPS)),
        ("quarantine entries", QUAR, ~QUAR.c.app.in_(DEMO_APPS)),
        ("deliveries", DELIV, ~DELIV.c.id.startswith(DELIVERY_PREFIX, autoescape=True)),
        ("denylist entries", DENY, sa.or_(DENY.c.reason.is_(None), DENY.c.reason != DENYLIST_REASON)),
        ("release log rows", RELOG, ~RELOG.c.app.in_(DEMO_APPS)),
    )
    found = []
    for label, table, cond in checks:
        n = conn.execute(sa.select(sa.func.count()).select_from(table).where(cond)).scalar_one()
        if n:
            found.append(f"{n} {label}")
    return ", ".join(found) or None


def clear_demo_data(conn: sa.Connection) -> None:
    """Delete an earlier demo run's rows (only call after ``foreign_data`` found none)."""
    for table in (EXCL, DLOG, DELIV, RELOG, QUAR, DENY, SUBS, RULE, RUNS, LOCKS):
        conn.execute(sa.delete(table))


def prepare_database(engine: Engine) -> None:
    """Migrate, refuse a database holding someone else's data, and clear an earlier demo run."""
    upgrade(engine)
    with engine.begin() as conn:
        other = foreign_data(conn)
        if other:
            raise ValidationError("--database-url", f"{_safe_url(engine)} holds data the demo did not create "
                                  f"({other}); give the demo an empty database, or no --database-url to use "
                                  "its own SQLite file")
        clear_demo_data(conn)


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def run_demo(database_url: str, *, count: int = 3000, progress: Callable[[int], None] | None = None) -> DemoResult:
    from jobs.runner import run_job

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="push-feedback-demo-") as tmp:
        root = Path(tmp)
        pki = make_ca(root)
        apns_key = make_apns_key(root)
        goaway_after = max(200, count // 3)
        with FakePushServer(pki, apns_key=apns_key) as server:
            sa_ = make_service_account(root, token_uri=server.token_url)
            server.trust_service_account(sa_)
            server.goaway_after = goaway_after
            config = PushConfig(
                database_url=database_url, apns_base_url=server.url, apns_key_file=str(apns_key.path),
                apns_key_id=apns_key.key_id, apns_team_id=apns_key.team_id, fcm_base_url=server.url,
                fcm_credentials_file=str(sa_.path), ca_file=str(pki.ca_file), stream_timeout=5.0,
                concurrency=200, chunk_size=1000)
            engine = make_engine(database_url)
            try:
                prepare_database(engine)
                devices = _devices(count)
                now = SystemClock().now()
                with engine.begin() as conn:
                    store.upsert_subscriptions(conn, [
                        {"platform": p, "app": a, "token": t, "profile_id": f"profile-{i}"}
                        for i, (p, a, t) in enumerate(devices)], now=now)
                    # two people opted out of push on iOS: their devices are excluded at analysis
                    conn.execute(DENY.insert(), [
                        {"profile_id": "profile-0", "channel": "apns", "created_at": now, "reason": DENYLIST_REASON},
                        {"profile_id": "profile-2", "channel": "apns", "created_at": now, "reason": DENYLIST_REASON}])

                def notifications() -> Iterator[Notification]:
                    for i, (p, a, t) in enumerate(devices):
                        yield Notification(token=t, platform=p, app=a, profile_id=f"profile-{i}",
                                           title="Morning briefing", body="Five stories to start your day",
                                           data={"story": str(i % 50)})
                    # what real pipelines hand in too: a missing token, a repeated one, a payload too big
                    yield Notification(token=None, platform="fcm", app=ANDROID_APP, title="x")
                    yield Notification(token=devices[-1][2], platform=devices[-1][0], app=devices[-1][1], title="x")
                    yield Notification(token=ok_apns_token(10**6), platform="apns", app=IOS_APP,
                                       data={"article": "x" * 5000})

                delivery = f"{DELIVERY_PREFIX}{now:%Y%m%d-%H%M%S}"
                report = send_batch(notifications(), config, delivery, progress=progress, engine=engine)
                job = run_job("opt-out", engine, config, SystemClock())
                with engine.connect() as conn:
                    nd = non_deliverables(conn)
            finally:
                engine.dispose()
    optout = {"quarantine entries examined": job.rows_examined, "subscriptions disabled": job.rows_changed,
              "status": job.status}
    return DemoResult(report, nd, optout, database_url, len(devices), goaway_after, time.monotonic() - started)
