"""Registering device tokens and denylisting profiles from code (the app-side events)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from push.clock import Clock, SystemClock
from push.errors import ValidationError
from push.notification import Notification
from tables import store
from tables.models import DENY


def register_tokens(engine: Engine, registrations: Iterable[Mapping[str, str | None]], *,
                    clock: Clock | None = None) -> int:
    """The app (re)registered these tokens: bump ``registered_at`` and re-enable the subscription.

    Each item needs ``token``, ``platform``, ``app`` and may carry ``profile_id``.
    A token registered again after APNs reported it unregistered (410) stays
    enabled: the opt-out job compares the 410 timestamp with ``registered_at``.
    """
    now = (clock or SystemClock()).now()
    n = 0
    with engine.begin() as conn:
        for i, reg in enumerate(registrations):
            token = reg.get("token")
            if not token:
                raise ValidationError(f"registrations[{i}].token", "is required")
            # Validated and normalised exactly as a notification is (an APNs token in lower case), so a
            # registration and a send of one device share one key.
            try:
                valid = Notification(token=token, platform=reg.get("platform"),  # type: ignore[arg-type]
                                     app=reg.get("app") or "", profile_id=reg.get("profile_id"))
            except ValidationError as exc:
                raise ValidationError(f"registrations[{i}].{exc.field}", exc.message, limit=exc.limit) from None
            store.register_token(conn, app=valid.app, platform=valid.platform, token=valid.token or "",
                                 profile_id=valid.profile_id, now=now)
            n += 1
    return n


def denylist_profile(engine: Engine, profile_id: str, channel: str, *, reason: str | None = None,
                     clock: Clock | None = None) -> bool:
    """Exclude a profile from one channel (``apns`` or ``fcm``); True if newly added."""
    if channel not in ("apns", "fcm"):
        raise ValidationError("channel", f"must be apns or fcm, not {channel!r}")
    if not profile_id:
        raise ValidationError("profile_id", "is required")
    now: datetime = (clock or SystemClock()).now()
    with engine.begin() as conn:
        exists = conn.execute(sa.select(DENY.c.profile_id).where(DENY.c.profile_id == profile_id,
                                                                 DENY.c.channel == channel)).first()
        if exists:
            return False
        conn.execute(sa.insert(DENY).values(profile_id=profile_id, channel=channel, reason=reason, created_at=now))
    return True


def remove_from_denylist(engine: Engine, profile_id: str, channel: str) -> bool:
    """Take a profile off the denylist for one channel; True when it was on it."""
    with engine.begin() as conn:
        return bool(conn.execute(sa.delete(DENY).where(DENY.c.profile_id == profile_id,
                                                       DENY.c.channel == channel)).rowcount)


def denylist_entries(engine: Engine, *, channel: str | None = None, profile_id: str | None = None,
                     limit: int = 50) -> list[dict[str, object]]:
    """Denylisted profiles, newest first."""
    stmt = sa.select(DENY.c.profile_id, DENY.c.channel, DENY.c.created_at, DENY.c.reason)
    if channel is not None:
        stmt = stmt.where(DENY.c.channel == channel)
    if profile_id is not None:
        stmt = stmt.where(DENY.c.profile_id == profile_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt.order_by(DENY.c.created_at.desc(), DENY.c.id.desc())
                                                        .limit(limit))]
