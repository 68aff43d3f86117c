"""SQL for the scheduled jobs (``jobs/``): job_run bookkeeping, the SQLite job lock,
the opt-out chunk statements and the cleanup purges.

Like ``tables.store``, every function takes an open ``Connection`` and works
inside the caller's transaction (nothing here commits): the jobs decide where a
transaction ends, which is what makes them chunked and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy import Connection

from push.outcomes import FailureReason, FailureType
from push.qualification import MAX_OCCURRENCES
from push.quarantine import QuarantineStatus
from tables.models import (
    DLOG,
    EXCL,
    LOCKS,
    QUAR,
    RULE,
    RUNS,
    SUBS,
    JobStatus,
    LogStatus,
)
from tables.store import _insert
from tables.types import as_utc

# Pass-through type: a timestamp read this way comes back exactly as stored
# (text on SQLite, timestamptz on PostgreSQL) and binds back unchanged. Keyset
# pagination compares against these raw values, so a row written with another
# text format (e.g. a raw-SQL insert relying on CURRENT_TIMESTAMP) can never
# fall between two chunks.
_RAW = sa.types.NullType()


def _raw(column: Any) -> Any:
    return sa.type_coerce(column, _RAW)


def _raw_value(value: Any) -> Any:
    return sa.literal(value, _RAW)


def _as_datetime(raw: Any) -> datetime:
    return as_utc(raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw)))


# --------------------------------------------------------------------------- job_run


def start_run(conn: Connection, job: str, started_at: datetime) -> int:
    stmt = sa.insert(RUNS).values(job=job, started_at=started_at, status=JobStatus.RUNNING.value).returning(RUNS.c.id)
    return int(conn.execute(stmt).scalar_one())


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    status: JobStatus,
    finished_at: datetime,
    rows_examined: int,
    rows_changed: int,
    error: str | None = None,
    watermark: datetime | None = None,
) -> None:
    conn.execute(
        sa.update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(
            status=status.value,
            finished_at=finished_at,
            rows_examined=rows_examined,
            rows_changed=rows_changed,
            error=error,
            watermark=watermark,
        )
    )


def last_ok_watermark(conn: Connection, job: str) -> datetime | None:
    """Watermark of the latest successful run of ``job`` that recorded one."""
    stmt = (
        sa.select(RUNS.c.watermark)
        .where(RUNS.c.job == job, RUNS.c.status == JobStatus.OK.value, RUNS.c.watermark.is_not(None))
        .order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
        .limit(1)
    )
    return conn.execute(stmt).scalar_one_or_none()


def last_ok_start(conn: Connection, job: str) -> datetime | None:
    stmt = sa.select(sa.func.max(RUNS.c.started_at)).where(RUNS.c.job == job, RUNS.c.status == JobStatus.OK.value)
    value = conn.execute(stmt).scalar_one_or_none()
    # max() loses the column type on some backends; normalise to aware UTC.
    return None if value is None else _as_datetime(value)


def abandon_running(conn: Connection, job: str, now: datetime, reason: str) -> int:
    """Close ``running`` rows left by a process that died mid-run (call under the job lock)."""
    stmt = (
        sa.update(RUNS)
        .where(RUNS.c.job == job, RUNS.c.status == JobStatus.RUNNING.value)
        .values(status=JobStatus.ERROR.value, finished_at=now, error=reason)
    )
    return max(conn.execute(stmt).rowcount, 0)


# --------------------------------------------------------------------------- job lock (SQLite)


def take_lock_row(conn: Connection, job: str, holder: str, now: datetime, expires_at: datetime,
                  takeover: Callable[[str], bool] | None = None) -> bool:
    """Insert the lock row, or take it over if it has expired (or ``takeover(holder)`` says its
    holder is dead). True when we hold it."""
    if takeover is not None:
        current = lock_holder(conn, job)
        if current is not None and takeover(current):
            conn.execute(sa.delete(LOCKS).where(LOCKS.c.job == job, LOCKS.c.holder == current))
    ins = _insert(conn, LOCKS).values(job=job, holder=holder, acquired_at=now, expires_at=expires_at)
    stmt = ins.on_conflict_do_update(
        index_elements=["job"],
        set_={"holder": ins.excluded.holder, "acquired_at": ins.excluded.acquired_at,
              "expires_at": ins.excluded.expires_at},
        where=LOCKS.c.expires_at < now,
    ).returning(LOCKS.c.holder)
    return conn.execute(stmt).scalar_one_or_none() == holder


def refresh_lock_row(conn: Connection, job: str, holder: str, expires_at: datetime) -> bool:
    """Extend our lock; False when it is no longer ours (it expired and was taken over)."""
    stmt = sa.update(LOCKS).where(LOCKS.c.job == job, LOCKS.c.holder == holder).values(expires_at=expires_at)
    return conn.execute(stmt).rowcount == 1


def lock_holder(conn: Connection, job: str) -> str | None:
    return conn.execute(sa.select(LOCKS.c.holder).where(LOCKS.c.job == job)).scalar_one_or_none()


def release_lock_row(conn: Connection, job: str, holder: str) -> None:
    conn.execute(sa.delete(LOCKS).where(LOCKS.c.job == job, LOCKS.c.holder == holder))


# --------------------------------------------------------------------------- opt-out


@dataclass(frozen=True, slots=True)
class Keyset:
    """A position in ``(timestamp, id)`` order; ``raw`` is the timestamp exactly as stored."""

    raw: Any
    id: int

    @property
    def at(self) -> datetime:
        return _as_datetime(self.raw)


def _after(ts: Any, ident: Any, key: Keyset) -> Any:
    # ``ts >= t`` first, so (…, ts) index range scans apply; ties are split by id.
    t, raw_ts = _raw_value(key.raw), _raw(ts)
    return sa.and_(raw_ts >= t, sa.or_(raw_ts > t, ident > key.id))


def _up_to(ts: Any, ident: Any, key: Keyset) -> Any:
    t, raw_ts = _raw_value(key.raw), _raw(ts)
    return sa.and_(raw_ts <= t, sa.or_(raw_ts < t, ident <= key.id))


def _unregistered(q: Any, since: datetime | None) -> list[Any]:
    """Quarantine rows that declare the token unregistered / no longer valid.

    ``status = 'quarantine'`` matters: a released row keeps its last failure
    fields as history, and an operator's release must not be undone here.
    """
    where = [
        q.c.status == QuarantineStatus.QUARANTINE.value,
        q.c.failure_type == FailureType.HARD.value,
        q.c.failure_reason == int(FailureReason.USER_UNKNOWN),
    ]
    if since is not None:
        where.append(q.c.updated_at > since)
    return where


def unregistered_chunk(conn: Connection, since: datetime | None, after: Keyset | None, limit: int) -> list[Keyset]:
    """The next ``limit`` unregistered-token quarantine rows after ``after``, in keyset order."""
    where = _unregistered(QUAR, since)
    if after is not None:
        where.append(_after(QUAR.c.updated_at, QUAR.c.id, after))
    stmt = (
        sa.select(_raw(QUAR.c.updated_at), QUAR.c.id)
        .where(*where)
        .order_by(QUAR.c.updated_at, QUAR.c.id)
        .limit(limit)
    )
    return [Keyset(raw, int(qid)) for raw, qid in conn.execute(stmt)]


def disable_unregistered(
    conn: Connection, since: datetime | None, after: Keyset | None, last: Keyset, now: datetime
) -> list[Any]:
    """Disable the enabled subscriptions of the quarantine rows in ``(after, last]``.

    Staleness (the 410 rule): the token stays enabled when the invalidation is
    older than the subscription's ``registered_at`` - APNs' ``provider_timestamp``
    when there is one, else ``last_error_at``, when we saw the failure (FCM
    gives no timestamp; without this fallback a full run would disable a token
    re-registered after its quarantine while an incremental run would not).

    One set-based ``UPDATE … FROM quarantine`` (both backends). The staleness
    test sits in the join condition on the *target* row, so on PostgreSQL a
    token re-registered concurrently is re-checked after the row lock
    (EvalPlanQual) instead of being disabled from a stale read. Returns the
    disabled rows (id, platform, app, token, disabled_at).
    """
    q = QUAR.alias("q")
    invalidated_at = sa.func.coalesce(q.c.provider_timestamp, q.c.last_error_at)
    where = _unregistered(q, since)
    if after is not None:
        where.append(_after(q.c.updated_at, q.c.id, after))
    where += [
        _up_to(q.c.updated_at, q.c.id, last),
        SUBS.c.platform == q.c.platform,
        SUBS.c.app == q.c.app,
        SUBS.c.token == q.c.token,
        SUBS.c.disabled == sa.false(),
        sa.or_(invalidated_at.is_(None), invalidated_at >= SUBS.c.registered_at),
    ]
    if conn.dialect.name == "postgresql":
        # ``UPDATE … FROM`` locks target rows in join order; a delivery upserting the same
        # subscriptions locks them in key order. Take them in key order first, so the two wait
        # for each other instead of deadlocking.
        conn.execute(sa.select(SUBS.c.id).where(*where)
                     .order_by(SUBS.c.platform, SUBS.c.app, SUBS.c.token).with_for_update(of=SUBS))
    stmt = (
        sa.update(SUBS)
        .where(*where)
        .values(disabled=True, disabled_at=now, disabled_reason=int(FailureReason.USER_UNKNOWN), updated_at=now)
        .returning(SUBS.c.id, SUBS.c.platform, SUBS.c.app, SUBS.c.token, SUBS.c.disabled_at)
    )
    return list(conn.execute(stmt))


# --------------------------------------------------------------------------- cleanup


PURGEABLE_LOG_STATUSES: tuple[str, ...] = tuple(
    s.value for s in LogStatus if s not in (LogStatus.PENDING, LogStatus.RETRY_PENDING)
)


def count_with_errors_before(conn: Connection, cutoff: datetime) -> int:
    """How many ``with_errors`` rows ``store.cleanup_quarantine`` will look at."""
    stmt = sa.select(sa.func.count()).select_from(QUAR).where(
        QUAR.c.status == QuarantineStatus.WITH_ERRORS.value, QUAR.c.last_error_at < cutoff
    )
    return int(conn.execute(stmt).scalar_one())


def purge_delivery_logs(conn: Connection, cutoff: datetime, after_id: int, limit: int) -> tuple[int, int | None]:
    """Delete up to ``limit`` finished delivery_log rows created before ``cutoff``
    with ``id > after_id``. Returns (rows deleted, the chunk's last id, or None
    when this was the last chunk).

    Walks the primary key rather than ``created_at`` (not indexed): ids grow
    with time, so each chunk reads only the rows after the previous one. The
    chunk's end is found first and the DELETE takes an id *range*: ``id IN
    (subquery)`` made PostgreSQL hash-join the whole table on every chunk.
    """
    where = [DLOG.c.id > after_id, DLOG.c.created_at < cutoff, DLOG.c.status.in_(PURGEABLE_LOG_STATUSES)]
    last = conn.execute(
        sa.select(DLOG.c.id).where(*where).order_by(DLOG.c.id).offset(limit - 1).limit(1)
    ).scalar_one_or_none()
    if last is not None:
        where.append(DLOG.c.id <= last)
    return max(conn.execute(sa.delete(DLOG).where(*where)).rowcount, 0), last


def purge_exclusion_logs(
    conn: Connection, cutoff: datetime, after: Keyset | None, limit: int
) -> tuple[int, Keyset | None]:
    """Delete up to ``limit`` exclusion_log rows created before ``cutoff``, in
    ``(created_at, id)`` order after ``after`` (ix_exclusion_log_created_at).
    Returns (rows deleted, the chunk's last key, or None when this was the last chunk)."""
    where = [EXCL.c.created_at < cutoff]
    if after is not None:
        where.append(_after(EXCL.c.created_at, EXCL.c.id, after))
    row = conn.execute(
        sa.select(_raw(EXCL.c.created_at), EXCL.c.id)
        .where(*where)
        .order_by(EXCL.c.created_at, EXCL.c.id)
        .offset(limit - 1)
        .limit(1)
    ).first()
    last = None if row is None else Keyset(row[0], int(row[1]))
    if last is not None:
        where.append(_up_to(EXCL.c.created_at, EXCL.c.id, last))
    return max(conn.execute(sa.delete(EXCL).where(*where)).rowcount, 0), last


def cap_rule_occurrences(conn: Connection, now: datetime, cap: int = MAX_OCCURRENCES) -> int:
    """Bring ``qualification_rule.occurrences`` back under the seed's 100,000 cap."""
    stmt = sa.update(RULE).where(RULE.c.occurrences > cap).values(occurrences=cap, updated_at=now)
    return max(conn.execute(stmt).rowcount, 0)


# --------------------------------------------------------------------------- gauges (push.metrics)


def retry_backlog(conn: Connection, now: datetime) -> tuple[int, int]:
    """``retry_pending`` rows due at ``now`` and not yet due (ix_delivery_log_status_next_retry_at)."""
    due = DLOG.c.next_retry_at <= now
    stmt = sa.select(sa.func.count().filter(due), sa.func.count().filter(sa.not_(due))).where(
        DLOG.c.status == LogStatus.RETRY_PENDING.value)
    row = conn.execute(stmt).one()
    return int(row[0] or 0), int(row[1] or 0)


def quarantine_by_status(conn: Connection) -> dict[str, int]:
    """Quarantine entries per status (ix_quarantine_status_updated_at covers the grouping)."""
    stmt = sa.select(QUAR.c.status, sa.func.count()).group_by(QUAR.c.status)
    return {status: int(n) for status, n in conn.execute(stmt)}


def last_runs(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Each job's latest finished run: (status, started_at)."""
    latest = (sa.select(RUNS.c.job, sa.func.max(RUNS.c.id).label("id"))
              .where(RUNS.c.status != JobStatus.RUNNING.value).group_by(RUNS.c.job).subquery())
    stmt = sa.select(RUNS.c.job, RUNS.c.status, RUNS.c.started_at).join(latest, RUNS.c.id == latest.c.id)
    return {job: (status, _as_datetime(started)) for job, status, started in conn.execute(stmt)}


def retry_platforms(conn: Connection) -> list[str]:
    """Platforms that have ``retry_pending`` rows: the providers the retry runner will need."""
    stmt = sa.select(DLOG.c.platform).where(DLOG.c.status == LogStatus.RETRY_PENDING.value).distinct()
    return sorted(p for (p,) in conn.execute(stmt) if p)
