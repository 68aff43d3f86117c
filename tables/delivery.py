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


def claim_first_sends(conn: Connection, delivery_id: str, seqs: Sequence[int], claimer: str,
                      now: datetime) -> set[int]:
    """Claim never-sent rows just before sending them: compare-and-set ``attempts`` 0 -> 1.

    Returns the seqs this call won. A row another runner claimed first (or that already has
    an outcome) is not returned, so each notification is sent by one runner at most: on
    Postgres the second ``UPDATE`` re-checks ``attempts = 0`` on the row the first one
    committed; SQLite's ``BEGIN IMMEDIATE`` runs one writer at a time.
    """
    won: set[int] = set()
    m = raw.marker(conn)
    for part in raw.chunks(sorted(seqs), 900):  # key order: two claimants lock rows in one order
        rows = conn.exec_driver_sql(
            f"UPDATE {DLOG.name} SET attempts = 1, claimed_by = {m}, updated_at = {m} WHERE delivery_id = {m} "
            # the range lets the planner probe (delivery_id, seq) instead of filtering every pending row
            f"AND seq BETWEEN {m} AND {m} AND {raw.one_of(conn, 'seq', DLOG.c.seq, len(part))} "
            f"AND status = '{LogStatus.PENDING.value}' AND attempts = 0 RETURNING seq",
            (claimer, _ts(conn, now), delivery_id, part[0], part[-1], *raw.one_of_params(conn, part)),
        )
        won.update(r[0] for r in rows)
    return won


def unclaim_first_sends(conn: Connection, delivery_id: str, seqs: Sequence[int], claimer: str) -> int:
    """Give back claims on sends that provably never left (stopped before writing, or the
    provider was unreachable): they are ``pending`` with ``attempts = 0`` again, sent on resume."""
    n = 0
    m = raw.marker(conn)
    for part in raw.chunks(sorted(seqs), 900):
        n += conn.exec_driver_sql(
            f"UPDATE {DLOG.name} SET attempts = 0, claimed_by = NULL WHERE delivery_id = {m} "
            f"AND seq BETWEEN {m} AND {m} AND {raw.one_of(conn, 'seq', DLOG.c.seq, len(part))} "
            f"AND status = '{LogStatus.PENDING.value}' AND claimed_by = {m}",
            (delivery_id, part[0], part[-1], *raw.one_of_params(conn, part), claimer),
        ).rowcount
    return n


def claim_retries(conn: Connection, ids: Sequence[int], claimer: str, now: datetime) -> set[int]:
    """Claim due retry rows just before resending them: ``next_retry_at`` due -> NULL, one more attempt.

    A row in flight in a retry is ``retry_pending`` with no ``next_retry_at``: no pass picks it
    again, and a second claimant's ``next_retry_at <= now`` no longer holds. Returns the ids won.
    """
    won: set[int] = set()
    m = raw.marker(conn)
    ts = _ts(conn, now)
    for part in raw.chunks(sorted(ids), 900):
        rows = conn.exec_driver_sql(
            f"UPDATE {DLOG.name} SET attempts = attempts + 1, next_retry_at = NULL, claimed_by = {m}, "
            f"updated_at = {m} WHERE {raw.one_of(conn, 'id', DLOG.c.id, len(part))} "
            f"AND status = '{LogStatus.RETRY_PENDING.value}' AND next_retry_at <= {m} RETURNING id",
            (claimer, ts, *raw.one_of_params(conn, part), ts),
        )
        won.update(r[0] for r in rows)
    return won


def unclaim_retries(conn: Connection, ids: Sequence[int], claimer: str, due: datetime) -> int:
    """Give back retry claims on resends that provably never left: due again at ``due``."""
    n = 0
    m = raw.marker(conn)
    for part in raw.chunks(sorted(ids), 900):
        n += conn.exec_driver_sql(
            f"UPDATE {DLOG.name} SET attempts = attempts - 1, next_retry_at = {m}, claimed_by = NULL "
            f"WHERE {raw.one_of(conn, 'id', DLOG.c.id, len(part))} AND status = '{LogStatus.RETRY_PENDING.value}' "
            f"AND next_retry_at IS NULL AND claimed_by = {m}",
            (_ts(conn, due), *raw.one_of_params(conn, part), claimer),
        ).rowcount
    return n


def stale_retry_claims(conn: Connection, before: datetime, limit: int) -> list[Any]:
    """Retries claimed before ``before`` that never got an outcome: their runner died mid-send."""
    return list(conn.execute(
        sa.select(DLOG.c.id, DLOG.c.platform, DLOG.c.attempts, DLOG.c.claimed_by)
        .where(DLOG.c.status == LogStatus.RETRY_PENDING.value, DLOG.c.next_retry_at.is_(None),
               DLOG.c.updated_at < before)
        .order_by(DLOG.c.id).limit(limit)
    ))


def _ts(conn: Connection, value: datetime) -> Any:
    """A timestamp as the raw-SQL driver parameter the column type binds."""
    return raw.bind_columns(conn, [DLOG.c.updated_at], [[value]])[0][0]


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


def dead_tokens_page(conn: Connection, delivery_id: str, after_seq: int, limit: int) -> list[Any]:
    """Rows of ``delivery_id`` after ``after_seq`` whose token the provider declared gone (failed, hard,
    reason 1 user unknown), in seq order."""
    return list(conn.execute(
        sa.select(DLOG.c.seq, DLOG.c.platform, DLOG.c.app, DLOG.c.token, DLOG.c.profile_id)
        .where(DLOG.c.delivery_id == delivery_id, DLOG.c.seq > after_seq,
               DLOG.c.status == LogStatus.FAILED.value, DLOG.c.failure_type == "hard", DLOG.c.failure_reason == 1)
        .order_by(DLOG.c.seq).limit(limit)))


def add_resent_in_doubt(conn: Connection, delivery_id: str, n: int) -> None:
    if n:
        conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id)
                     .values(resent_in_doubt=DELIV.c.resent_in_doubt + n))


def due_retries(conn: Connection, now: datetime, limit: int, after_id: int = 0) -> list[Any]:
    """Retry rows due at ``now``, in id order after ``after_id``: one pass sees each row once,
    even if it is rescheduled to a time that is already due."""
    return list(conn.execute(
        sa.select(DLOG.c.id, DLOG.c.delivery_id, DLOG.c.seq, DLOG.c.payload, DLOG.c.attempts, DLOG.c.expires_at,
                  DLOG.c.token, DLOG.c.platform, DLOG.c.app, DLOG.c.failure_reason, DLOG.c.error_text)
        .where(DLOG.c.status == LogStatus.RETRY_PENDING.value, DLOG.c.next_retry_at <= now, DLOG.c.id > after_id)
        .order_by(DLOG.c.id)
        .limit(limit)
    ))


def refresh_statistics(engine: Any) -> None:
    """``ANALYZE`` the tables a delivery reads per chunk (Postgres only; cheap: it samples)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("ANALYZE delivery_log, app_subscription, quarantine, denylist"))
