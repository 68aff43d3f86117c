"""DeliveryReport: every total is an int, the breakdowns are mappings beside them (issue 17, item 11)."""

from __future__ import annotations

from fixtures.scenarios import apns_token, ok_apns_token
from push import Notification, PushConfig, send_batch
from push.pipeline import read_report
from tests.pipeline_helpers import ScriptedSender

APP = "com.example.app"


def test_totals_are_ints_and_breakdowns_sit_beside_them(engine):
    config = PushConfig(database_url="sqlite://", chunk_size=10)
    items = [Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t") for i in range(3)]
    items += [Notification(token=apns_token("unregistered", 1), platform="apns", app=APP, title="t"),
              Notification(token=None, platform="apns", app=APP, title="t")]
    rep = send_batch(items, config, "types-1", engine=engine, clients={"apns": ScriptedSender("apns")})
    for name in ("total", "to_deliver", "sent", "failed", "excluded", "retry_pending", "pending"):
        assert type(getattr(rep, name)) is int, name
    assert (rep.sent, rep.failed, rep.excluded, rep.total) == (3, 1, 1, 5)
    assert rep.failed_by_type_reason == {"hard / user unknown": 1}
    assert rep.excluded_by_reason == {"address not specified": 1}
    # what the README prints: plain numbers
    assert f"{rep.sent} {rep.failed} {rep.excluded}" == "3 1 1"
    again = read_report(engine, "types-1")
    assert again.as_dict() == {**rep.as_dict(), "resumed": False}
    assert again.as_dict()["failed"] == 1 and again.as_dict()["excluded_by_reason"] == {"address not specified": 1}
