"""Queries the delivery pipeline and the retry runner need beyond ``tables.store``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from tables import raw, store
from tables.models import (
    DELIV,
    DLOG,
    EXCL,
    LogStatus,
)

Key = tuple[str, str, str]


def ensure_delivery(conn: Connection, delivery_id: str, label: str | None, now: datetime) -> bool:
    """Create the delivery row if needed; True when it already existed (a resume)."""
    existing = conn.execute(sa.select(DELIV.c.id).where(DELIV.c.id == delivery_id)).first()
    if existing is not None:
        conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id).values(finished_at=None))
        return True
    conn.execute(sa.insert(DELIV).values(id=delivery_id, label=label, created_at=now, started_at=now))
    return False


def log_states(conn: Connection, delivery_id: str, low: int, high: int) -> dict[int, tuple[str, int, str | None]]:
    """``seq -> (status, attempts, platform)`` for rows already written in [low, high]."""
    rows = conn.execute(
        sa.select(DLOG.c.seq, DLOG.c.status, DLOG.c.attempts, DLOG.c.platform)
        .where(DLOG.c.delivery_id == delivery_id, DLOG.c.seq >= low, DLOG.c.seq <= high)
    )
    return {r.seq: (r.status, r.attempts, r.platform) for r in rows}


def first_seq_of_keys(conn: Connection, delivery_id: str, keys: Iterable[Key]) -> dict[Key, int]:
    """The lowest seq already logged in this delivery for each key (for duplicate detection)."""
    rows = store.select_by_keys(conn, DLOG, ("platform", "app", "token"), keys, computed=("min(t.seq)",),
                                where=f"t.delivery_id = {raw.marker(conn)}", params=(delivery_id,),
                                tail="GROUP BY t.platform, t.app, t.token")
    return {(platform, app, token): int(seq) for platform, app, token, seq in rows}


def mark_launched(conn: Connection, delivery_id: str, seqs: Sequence[int]) -> None:
    """Record that these sends are about to start: a crash after this makes them 'interrupted', not resent."""
    if not seqs:
        return
    seqs = sorted(seqs)
    m = raw.marker(conn)
    for part in raw.chunks(seqs, 900):
        conn.exec_driver_sql(
            f"UPDATE {DLOG.name} SET attempts = attempts + 1 WHERE delivery_id = {m} "
            # the range lets the planner probe (delivery_id, seq) instead of filtering every pending row
            f"AND seq BETWEEN {m} AND {m} AND {raw.one_of(conn, 'seq', DLOG.c.seq, len(part))} "
            f"AND status = '{LogStatus.PENDING.value}'",
            (delivery_id, part[0], part[-1], *raw.one_of_params(conn, part)),
        )


def mark_rows_launched(conn: Connection, ids: Sequence[int]) -> None:
    for part in raw.chunks(ids, 900):
        conn.execute(sa.update(DLOG).where(DLOG.c.id.in_(list(part))).values(attempts=DLOG.c.attempts + 1))


def status_counts(conn: Connection, delivery_id: str) -> list[tuple[str, str | None, int | None, int]]:
    rows = conn.execute(
        sa.select(DLOG.c.status, DLOG.c.failure_type, DLOG.c.failure_reason, sa.func.count())
        .where(DLOG.c.delivery_id == delivery_id)
        .group_by(DLOG.c.status, DLOG.c.failure_type, DLOG.c.failure_reason)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def quarantined_at_analysis(conn: Connection, delivery_id: str) -> int:
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(EXCL)
        .where(EXCL.c.delivery_id == delivery_id, EXCL.c.source == "analysis", EXCL.c.failure_reason == 9)
    ).scalar_one())


def delivery_row(conn: Connection, delivery_id: str) -> Any:
    return conn.execute(sa.select(DELIV).where(DELIV.c.id == delivery_id)).first()


def save_summary(conn: Connection, delivery_id: str, values: dict[str, Any]) -> None:
    conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id).values(**values))


def add_quarantined_after(conn: Connection, delivery_id: str, n: int) -> None:
    if n:
        conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id)
                     .values(quarantined_after_delivery=DELIV.c.quarantined_after_delivery + n))


def due_retries(conn: Connection, now: datetime, limit: int, after_id: int = 0) -> list[Any]:
    """Retry rows due at ``now``, in id order after ``after_id``: one pass sees each row once,
    even if it is rescheduled to a time that is already due."""
    return list(conn.execute(
        sa.select(DLOG.c.id, DLOG.c.delivery_id, DLOG.c.seq, DLOG.c.payload, DLOG.c.attempts, DLOG.c.expires_at,
                  DLOG.c.token, DLOG.c.platform, DLOG.c.app)
        .where(DLOG.c.status == LogStatus.RETRY_PENDING.value, DLOG.c.next_retry_at <= now, DLOG.c.id > after_id)
        .order_by(DLOG.c.id)
        .limit(limit)
    ))


def refresh_statistics(engine: Any) -> None:
    """``ANALYZE`` the tables a delivery reads per chunk (Postgres only; cheap: it samples)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("ANALYZE delivery_log, app_subscription, quarantine, denylist"))
