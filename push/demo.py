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

from fixtures.keys import make_apns_key, make_service_account
from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from fixtures.server import FakePushServer
from fixtures.tls import make_ca
from push.clock import SystemClock
from push.config import PushConfig
from push.notification import Notification
from push.pipeline import DeliveryReport, send_batch
from tables import store
from tables.engine import make_engine
from tables.migrate import upgrade
from tables.models import Denylist
from tables.reports import NonDeliverables, non_deliverables

IOS_APP = "com.example.news"
ANDROID_APP = "news-android"

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
                upgrade(engine)
                devices = _devices(count)
                now = SystemClock().now()
                with engine.begin() as conn:
                    store.upsert_subscriptions(conn, [
                        {"platform": p, "app": a, "token": t, "profile_id": f"profile-{i}"}
                        for i, (p, a, t) in enumerate(devices)], now=now)
                    # two people opted out of push on iOS: their devices are excluded at analysis
                    conn.execute(Denylist.__table__.insert(), [
                        {"profile_id": "profile-0", "channel": "apns", "created_at": now, "reason": "opt-out"},
                        {"profile_id": "profile-2", "channel": "apns", "created_at": now, "reason": "opt-out"}])

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

                report = send_batch(notifications(), config, progress=progress, engine=engine)
                job = run_job("opt-out", engine, config, SystemClock())
                with engine.connect() as conn:
                    nd = non_deliverables(conn)
            finally:
                engine.dispose()
    optout = {"quarantine entries examined": job.rows_examined, "subscriptions disabled": job.rows_changed,
              "status": job.status}
    return DemoResult(report, nd, optout, database_url, len(devices), goaway_after, time.monotonic() - started)
