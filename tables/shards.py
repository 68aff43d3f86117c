"""Queries of a delivery sent in shards (push.shards): a shard's pending rows, progress per shard."""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection

from tables.models import DELIV, DLOG, LogStatus


class PendingRow(NamedTuple):
    seq: int
    attempts: int
    payload: str | None


class ShardProgress(NamedTuple):
    shard: int  # its index in the layout
    waiting: int  # pending, never claimed: sent by the next worker that takes the shard
    in_flight: int  # pending and claimed: being sent now, or in doubt after a worker died
    done: int  # with an outcome (sent, failed, excluded, retry_pending)


def pending_rows(conn: Connection, delivery_id: str, low: int, high: int) -> list[PendingRow]:
    """The ``pending`` rows of seqs [low, high], in seq order (the unique index serves the range)."""
    rows = conn.execute(
        sa.select(DLOG.c.seq, DLOG.c.attempts, DLOG.c.payload)
        .where(DLOG.c.delivery_id == delivery_id, DLOG.c.seq >= low, DLOG.c.seq <= high,
               DLOG.c.status == LogStatus.PENDING.value)
        .order_by(DLOG.c.seq))
    return [PendingRow(r.seq, r.attempts, r.payload) for r in rows]


def pending_count(conn: Connection, delivery_id: str) -> int:
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(DLOG)
        .where(DLOG.c.delivery_id == delivery_id, DLOG.c.status == LogStatus.PENDING.value)).scalar_one())


def save_layout(conn: Connection, delivery_id: str, count: int, shard_size: int, now: Any) -> None:
    conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id)
                 .values(prepared_count=count, shard_size=shard_size, prepared_at=now))


def progress(conn: Connection, delivery_id: str, shard_size: int) -> list[ShardProgress]:
    """Rows per shard (seq // shard_size) by state; shards without rows are left out."""
    index = (DLOG.c.seq // shard_size).label("shard")  # integer division on both engines
    pending = DLOG.c.status == LogStatus.PENDING.value
    rows = conn.execute(
        sa.select(index,
                  sa.func.sum(sa.case((sa.and_(pending, DLOG.c.attempts == 0), 1), else_=0)),
                  sa.func.sum(sa.case((sa.and_(pending, DLOG.c.attempts > 0), 1), else_=0)),
                  sa.func.sum(sa.case((pending, 0), else_=1)))
        .where(DLOG.c.delivery_id == delivery_id)
        .group_by(index).order_by(index))
    return [ShardProgress(int(r[0]), int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows]
