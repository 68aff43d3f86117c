"""What every client sends: the same tokens, titles and payloads, with an optional dead share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bench.env import APNS_TOPIC, FCM_APP
from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token

if TYPE_CHECKING:  # importing push loads SQLAlchemy: peers' processes must not pay for it
    from push.notification import Notification

TITLE = "Hello"
BODY = "World"


def is_dead(i: int, dead_fraction: float) -> bool:
    """Evenly spread: with 0.1, every 10th index (9, 19, 29, ...) is a dead token."""
    if dead_fraction <= 0:
        return False
    every = round(1 / dead_fraction)
    return i % every == every - 1


def token(provider: str, i: int, dead_fraction: float = 0.0) -> str:
    """Distinct per ``i``; dead ones are answered 410 Unregistered / 404 UNREGISTERED."""
    dead = is_dead(i, dead_fraction)
    if provider == "apns":
        return apns_token("unregistered", i) if dead else ok_apns_token(i)
    return fcm_token("unregistered", i) if dead else ok_fcm_token(i)


def tokens(provider: str, start: int, n: int, dead_fraction: float = 0.0) -> list[str]:
    return [token(provider, i, dead_fraction) for i in range(start, start + n)]


def dead_count(start: int, n: int, dead_fraction: float) -> int:
    return sum(is_dead(i, dead_fraction) for i in range(start, start + n))


def notification(provider: str, tok: str) -> Notification:
    from push.notification import Notification

    app = APNS_TOPIC if provider == "apns" else FCM_APP
    return Notification(token=tok, platform=provider, app=app, title=TITLE, body=BODY)


def notifications(provider: str, start: int, n: int, dead_fraction: float = 0.0) -> Iterator[Notification]:
    """Built lazily: memory stays flat however large ``n`` is."""
    for i in range(start, start + n):
        yield notification(provider, token(provider, i, dead_fraction))


def record(provider: str, tok: str) -> str:
    """One JSON line as ``push-feedback send`` reads it (what a caller hands in before validation)."""
    app = APNS_TOPIC if provider == "apns" else FCM_APP
    return json.dumps({"token": tok, "platform": provider, "app": app, "title": TITLE, "body": BODY},
                      separators=(",", ":"))


def records(provider: str, start: int, n: int, dead_fraction: float = 0.0) -> list[str]:
    """JSON lines; every client parses (and validates, where it does) them on the clock."""
    return [record(provider, token(provider, i, dead_fraction)) for i in range(start, start + n)]


def parsed(lines: Iterator[str] | list[str]) -> Iterator[Notification]:
    """JSON lines to Notifications as ``push-feedback send`` does it (json.loads, Notification.from_dict)."""
    from push.notification import Notification

    from_dict, loads = Notification.from_dict, json.loads
    for line in lines:
        yield from_dict(loads(line))


# Raw payloads, for clients below the project's Notification (minimal, httpx, peers).

def apns_payload() -> dict[str, Any]:
    return {"aps": {"alert": {"title": TITLE, "body": BODY}}}


def fcm_message(tok: str) -> dict[str, Any]:
    return {"message": {"token": tok, "notification": {"title": TITLE, "body": BODY},
                        "android": {"priority": "HIGH"}}}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
