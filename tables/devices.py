"""Operator actions on single devices: enable or disable a subscription, and their audit rows.

Every change is logged in ``quarantine_release_log`` (the one audit table of
manual actions on tokens) with who did it and why: ``previous_status`` is
``disabled`` for a subscription that was re-enabled and ``enabled`` for one an
operator disabled, beside the quarantine statuses a release records.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from push.errors import ValidationError
from push.outcomes import FailureReason
from tables.models import QUAR, RELOG, SUBS

Key = tuple[str, str, str]  # (platform, app, token)
WHY_MAX = 500


def _check_who(by: str, reason: str | None) -> str:
    if not by or not by.strip():
        raise ValidationError("by", "say who makes this change")
    if reason is not None and len(reason) > WHY_MAX:
        raise ValidationError("reason", f"is {len(reason)} characters, limit {WHY_MAX}", limit=WHY_MAX)
    return by.strip() + (f" | reason={reason.strip()!r}" if reason and reason.strip() else "")


def subscriptions(conn: Connection, token: str, *, app: str | None = None,
                  platform: str | None = None) -> list[Any]:
    """The subscription rows of ``token`` (one per app it is registered for)."""
    where = [SUBS.c.token == token]
    if app is not None:
        where.append(SUBS.c.app == app)
    if platform is not None:
        where.append(SUBS.c.platform == platform)
    return list(conn.execute(sa.select(SUBS).where(*where).order_by(SUBS.c.id)))


def disabled_among(conn: Connection, keys: Iterable[Key]) -> list[Any]:
    """Disabled subscriptions among ``keys`` (platform, app, token)."""
    out: list[Any] = []
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), 300):
        part = keys[start:start + 300]
        cond = sa.or_(*[sa.and_(SUBS.c.platform == p, SUBS.c.app == a, SUBS.c.token == t) for p, a, t in part])
        out += conn.execute(sa.select(SUBS).where(SUBS.c.disabled.is_(True), cond))
    return out


def released_keys(conn: Connection, at: datetime) -> list[Key]:
    """Keys a release at exactly ``at`` (the release's own timestamp) wrote to the log."""
    rows = conn.execute(sa.select(RELOG.c.platform, RELOG.c.app, RELOG.c.token).where(RELOG.c.created_at == at)
                        .distinct())
    return [(r.platform, r.app, r.token) for r in rows]


def _log(conn: Connection, rows: Iterable[Any], previous: str, label: str, now: datetime) -> None:
    values = [{"token": r.token, "platform": r.platform, "app": r.app, "previous_status": previous,
               "released_by": label, "created_at": now} for r in rows]
    if values:
        conn.execute(sa.insert(RELOG), values)


def enable(conn: Connection, rows: Iterable[Any], *, by: str, reason: str | None, now: datetime) -> int:
    """Re-enable these subscription rows (disabled ones only); logged. Returns how many changed."""
    label = _check_who(by, reason) + " | subscription enabled"
    targets = [r for r in rows if r.disabled]
    for r in targets:
        conn.execute(sa.update(SUBS).where(SUBS.c.id == r.id).values(
            disabled=False, disabled_at=None, disabled_reason=None, updated_at=now))
    _log(conn, targets, "disabled", label, now)
    return len(targets)


def disable(conn: Connection, rows: Iterable[Any], *, by: str, reason: str | None, now: datetime) -> int:
    """Disable these subscription rows (enabled ones only); logged. Analysis then excludes the token
    as 1 user unknown, as it does for one the opt-out job disabled."""
    label = _check_who(by, reason) + " | subscription disabled"
    targets = [r for r in rows if not r.disabled]
    for r in targets:
        conn.execute(sa.update(SUBS).where(SUBS.c.id == r.id).values(
            disabled=True, disabled_at=now, disabled_reason=int(FailureReason.USER_UNKNOWN), updated_at=now))
    _log(conn, targets, "enabled", label, now)
    return len(targets)


def quarantine_entries(conn: Connection, token: str, *, app: str | None = None,
                       platform: str | None = None) -> list[Any]:
    where = [QUAR.c.token == token]
    if app is not None:
        where.append(QUAR.c.app == app)
    if platform is not None:
        where.append(QUAR.c.platform == platform)
    return list(conn.execute(sa.select(QUAR).where(*where).order_by(QUAR.c.id)))
