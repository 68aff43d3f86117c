"""Single-instance lock per job, so two schedulers (or a scheduler and a manual
``run_job``) never run the same job at the same time: ``tables.locks`` under the
job's name. A job checks ``handle.lost`` between chunks and stops once the lock
is gone (its Postgres session ended, or its SQLite row was taken over).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.engine import Engine

from push.clock import Clock
from tables.locks import HEARTBEAT_SECONDS, LOCK_TTL, LockHandle, lock_key, named_lock

JobLockHandle = LockHandle

__all__ = ["HEARTBEAT_SECONDS", "LOCK_TTL", "JobLockHandle", "job_lock", "lock_key"]


@contextmanager
def job_lock(
    engine: Engine,
    job: str,
    clock: Clock,
    *,
    ttl: timedelta = LOCK_TTL,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Iterator[LockHandle | None]:
    """Hold ``job``'s lock for the ``with`` block; yields None when someone else holds it."""
    with named_lock(engine, job, clock, ttl=ttl, heartbeat_seconds=heartbeat_seconds) as handle:
        yield handle
