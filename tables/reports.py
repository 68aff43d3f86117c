"""Read-only queries behind the CLI's reports and token views (bound parameters only)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from push.outcomes import FailureReason
from tables.models import (
    DELIV,
    DLOG,
    EXCL,
    QUAR,
    RELOG,
    SUBS,
)


def reason_label(reason: int | None) -> str:
    if reason is None:
        return "-"
    try:
        return f"{reason} {FailureReason(reason).label}"
    except ValueError:
        return str(reason)


@dataclass
class TokenView:
    token: str
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    exclusions: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.subscriptions or self.quarantine or self.deliveries or self.exclusions)


def _rows(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def token_view(conn: Connection, token: str, *, limit: int = 10) -> TokenView:
    return TokenView(
        token=token,
        subscriptions=_rows(conn, sa.select(SUBS).where(SUBS.c.token == token)),
        quarantine=_rows(conn, sa.select(QUAR).where(QUAR.c.token == token)),
        releases=_rows(conn, sa.select(RELOG).where(RELOG.c.token == token).order_by(RELOG.c.id.desc()).limit(limit)),
        exclusions=_rows(conn, sa.select(EXCL).where(EXCL.c.token == token).order_by(EXCL.c.id.desc()).limit(limit)),
        deliveries=_rows(conn, sa.select(DLOG).where(DLOG.c.token == token).order_by(DLOG.c.id.desc()).limit(limit)),
    )


def list_quarantine(conn: Connection, *, status: str | None = None, app: str | None = None,
                    platform: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = sa.select(QUAR)
    if status:
        stmt = stmt.where(QUAR.c.status == status)
    if app:
        stmt = stmt.where(QUAR.c.app == app)
    if platform:
        stmt = stmt.where(QUAR.c.platform == platform)
    return _rows(conn, stmt.order_by(QUAR.c.updated_at.desc(), QUAR.c.id.desc()).limit(limit))


@dataclass
class NonDeliverables:
    since: datetime | None
    by_type: dict[str, int]
    by_reason: dict[str, int]
    by_app: dict[str, int]
    by_error: dict[str, int]
    quarantine_by_status: dict[str, int]
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None, "total": self.total,
                "by_failure_type": self.by_type, "by_failure_reason": self.by_reason,
                "by_app_platform": self.by_app, "top_errors": self.by_error,
                "quarantine_by_status": self.quarantine_by_status}


def non_deliverables(conn: Connection, since: datetime | None = None, *, top: int = 10) -> NonDeliverables:
    """The non-deliverables report: failed and excluded notifications, broken down."""
    cond: list[sa.ColumnElement[bool]] = [DLOG.c.status.in_(["failed", "excluded"])]
    if since is not None:
        cond.append(DLOG.c.updated_at >= since)
    stmt = (sa.select(DLOG.c.status, DLOG.c.failure_type, DLOG.c.failure_reason, DLOG.c.app, DLOG.c.platform,
                      DLOG.c.error_text, sa.func.count().label("n"))
            .where(*cond)
            .group_by(DLOG.c.status, DLOG.c.failure_type, DLOG.c.failure_reason, DLOG.c.app, DLOG.c.platform,
                      DLOG.c.error_text))
    by_type: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    by_app: Counter[str] = Counter()
    by_error: Counter[str] = Counter()
    total = 0
    for r in conn.execute(stmt):
        n = int(r.n)
        total += n
        by_type[f"{r.failure_type or 'undefined'}{' (excluded)' if r.status == 'excluded' else ''}"] += n
        by_reason[reason_label(r.failure_reason)] += n
        by_app[f"{r.app} / {r.platform}"] += n
        if r.error_text:
            by_error[r.error_text] += n
    q: dict[str, int] = dict(conn.execute(sa.select(QUAR.c.status, sa.func.count()).group_by(QUAR.c.status)).all())
    return NonDeliverables(since, dict(by_type.most_common()), dict(by_reason.most_common()),
                           dict(by_app.most_common()), dict(by_error.most_common(top)),
                           {k: int(v) for k, v in q.items()}, total)


# Deliveries that still have work in them, worst first: what `report deliveries` flags.
UNFINISHED_STATES = ("unfinished", "retrying")


def delivery_state(finished: bool, abandoned: bool, pending: int, retry_pending: int) -> str:
    """``abandoned``; ``unfinished`` (still running, or stopped with rows pending: resume or abandon
    it); ``retrying`` (sent, the retry job still has rows); ``done``."""
    if abandoned:
        return "abandoned"
    if pending or not finished:
        return "unfinished"
    if retry_pending:
        return "retrying"
    return "done"


def list_deliveries(conn: Connection, *, limit: int = 50, unfinished_only: bool = False) -> list[dict[str, Any]]:
    """Deliveries, newest first, with their live counts from ``delivery_log`` and a state."""
    deliveries = list(conn.execute(sa.select(DELIV).order_by(DELIV.c.created_at.desc(), DELIV.c.id)
                                   .limit(None if unfinished_only else limit)))
    counts: dict[str, Counter[str]] = {}
    ids = [d.id for d in deliveries]
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for delivery_id, status, n in conn.execute(
                sa.select(DLOG.c.delivery_id, DLOG.c.status, sa.func.count())
                .where(DLOG.c.delivery_id.in_(part)).group_by(DLOG.c.delivery_id, DLOG.c.status)):
            counts.setdefault(delivery_id, Counter())[status] = int(n)
    out = []
    for d in deliveries:
        c = counts.get(d.id, Counter())
        state = delivery_state(d.finished_at is not None, d.abandoned_at is not None, c["pending"],
                               c["retry_pending"])
        if unfinished_only and state not in UNFINISHED_STATES:
            continue
        out.append({"id": d.id, "state": state, "created_at": d.created_at, "finished_at": d.finished_at,
                    "total": sum(c.values()), "sent": c["sent"], "failed": c["failed"], "excluded": c["excluded"],
                    "retry_pending": c["retry_pending"], "pending": c["pending"],
                    "input_count": d.input_count, "abandoned_reason": d.abandoned_reason})
    return out[:limit]
