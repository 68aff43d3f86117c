"""Single-instance lock per job, so two schedulers (or a scheduler and a manual
``run_job``) never run the same job at the same time.

* PostgreSQL: ``pg_try_advisory_lock(key)`` on a dedicated connection held for
  the run. The server releases it if the process dies (the connection closes).
* SQLite: a ``job_lock`` row with an expiry. A crashed holder's row is taken
  over once ``expires_at`` has passed; a live holder keeps extending it from a
  heartbeat thread, and if the row is ever lost anyway ``JobLockHandle.lost``
  is set so the job stops after its current chunk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from push.clock import Clock
from tables import jobs as jt

log = logging.getLogger("jobs.lock")

LOCK_TTL = timedelta(minutes=10)
HEARTBEAT_SECONDS = 60.0  # well inside LOCK_TTL, so a live holder never expires


def lock_key(job: str) -> int:
    """A stable signed 64-bit advisory-lock key per job name (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"push-feedback/job/{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class JobLockHandle:
    def __init__(self, job: str, holder: str):
        self.job = job
        self.holder = holder
        self.lost = threading.Event()


@contextmanager
def job_lock(
    engine: Engine,
    job: str,
    clock: Clock,
    *,
    ttl: timedelta = LOCK_TTL,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Iterator[JobLockHandle | None]:
    """Hold ``job``'s lock for the ``with`` block; yields None when someone else holds it."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, job, holder) as handle:
            yield handle
    else:
        with _row_lock(engine, job, holder, clock, ttl, heartbeat_seconds) as handle:
            yield handle


@contextmanager
def _advisory_lock(engine: Engine, job: str, holder: str) -> Iterator[JobLockHandle | None]:
    key = lock_key(job)
    conn = engine.connect()
    try:
        acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one())
        # End the transaction but keep the (session-level) lock: an idle-in-transaction
        # connection held for a long run would pin old row versions against VACUUM.
        conn.commit()
        if not acquired:
            yield None
            return
        try:
            yield JobLockHandle(job, holder)
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
            finally:
                # Never hand a connection that might still hold the lock back to the pool.
                conn.invalidate()
    finally:
        conn.close()


@contextmanager
def _row_lock(
    engine: Engine, job: str, holder: str, clock: Clock, ttl: timedelta, heartbeat_seconds: float
) -> Iterator[JobLockHandle | None]:
    now = clock.now()
    with engine.begin() as conn:
        acquired = jt.take_lock_row(conn, job, holder, now, now + ttl)
    if not acquired:
        yield None
        return
    handle = JobLockHandle(job, holder)
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(engine, handle, clock, ttl, heartbeat_seconds, done),
        name=f"job-lock-{job}", daemon=True,
    )
    beat.start()
    try:
        yield handle
    finally:
        done.set()
        beat.join()
        with engine.begin() as conn:
            jt.release_lock_row(conn, job, holder)


def _heartbeat(
    engine: Engine, handle: JobLockHandle, clock: Clock, ttl: timedelta, every: float, done: threading.Event
) -> None:
    while not done.wait(every):
        try:
            with engine.begin() as conn:
                still_ours = jt.refresh_lock_row(conn, handle.job, handle.holder, clock.now() + ttl)
        except Exception:  # noqa: BLE001 - a busy database must not kill the run; retry next beat
            log.warning("job=%s could not extend its lock; retrying", handle.job, exc_info=True)
            continue
        if not still_ours:
            log.error("job=%s lost its lock (expired and taken over); stopping after the current chunk", handle.job)
            handle.lost.set()
            return
