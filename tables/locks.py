"""Named single-holder locks: one run of a job, one runner of a delivery, at a time.

* PostgreSQL: a session-level ``pg_try_advisory_lock(key)`` on a connection held
  for the run. The server releases it the moment the holder's session ends
  (process death, ``pg_terminate_backend``, an idle-session timeout, a pooler,
  a failover) and tells the holder nothing, so ``LockHandle.lost.is_set()`` asks
  the server on that connection whether the lock is still granted to it; the
  holder checks it before each unit of work and stops once it is gone.
* SQLite: a ``job_lock`` row with an expiry, kept fresh by a heartbeat thread.
  A holder's row is taken over once it has expired, or at once when the holder
  ran on this host and its process no longer exists (a ``kill -9`` must not
  block a resume for the whole TTL). If the row is ever lost anyway,
  ``lost`` is set.
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
from sqlalchemy.engine import Connection, Engine

from push.clock import Clock
from tables import jobs as jt

log = logging.getLogger("tables.locks")

LOCK_TTL = timedelta(minutes=10)
HEARTBEAT_SECONDS = 60.0  # well inside LOCK_TTL, so a live holder never expires
_HOST = socket.gethostname()
_HELD: set[str] = set()  # holders of the row locks this process holds right now


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key per lock name (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"push-feedback/job/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def new_holder() -> str:
    """``host:pid:nonce``: who holds a lock, readable in SQL, and enough to tell a dead local holder."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` ran on this host and its process is gone (other hosts: unknown)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return holder not in _HELD  # ours, but no longer held by any live ``with`` of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class _Flag:
    """``threading.Event``'s reading side, for a loss found by asking."""

    def is_set(self) -> bool:  # pragma: no cover - protocol
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:  # pragma: no cover - protocol
        raise NotImplementedError


class _AdvisoryLost(_Flag):
    """Set once the server no longer lists our advisory lock as granted to our session."""

    def __init__(self, conn: Connection, key: int):
        self._conn = conn
        self._key = key
        self._gone = threading.Event()
        self._guard = threading.Lock()  # the connection is not shared between threads at once

    def is_set(self) -> bool:
        if self._gone.is_set():
            return True
        with self._guard:
            try:
                held = self._conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND classid = ((:key >> 32) & 4294967295)::oid "
                    "AND objid = (:key & 4294967295)::oid AND objsubid = 1"), {"key": self._key}).scalar_one()
                self._conn.commit()
            except Exception:  # noqa: BLE001 - a dead session is exactly what we are looking for
                held = 0
        if not held:
            self._gone.set()
        return self._gone.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set() or self._gone.wait(timeout)


class LockHandle:
    """A held lock. ``lost.is_set()`` says whether it is still ours; check it before each unit of work."""

    def __init__(self, name: str, holder: str, lost: threading.Event | _Flag | None = None):
        self.name = name
        self.job = name  # the jobs' spelling
        self.holder = holder
        self.lost: threading.Event | _Flag = lost if lost is not None else threading.Event()

    def __repr__(self) -> str:
        return f"LockHandle({self.name!r}, holder={self.holder!r})"


@contextmanager
def named_lock(
    engine: Engine,
    name: str,
    clock: Clock,
    *,
    ttl: timedelta = LOCK_TTL,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Iterator[LockHandle | None]:
    """Hold lock ``name`` for the ``with`` block; yields None when someone else holds it."""
    holder = new_holder()
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, name, holder) as handle:
            yield handle
    else:
        with _row_lock(engine, name, holder, clock, ttl, heartbeat_seconds) as handle:
            yield handle


def current_holder(engine: Engine, name: str) -> str | None:
    """Who holds lock ``name`` now, as far as the database can tell (SQLite rows; Postgres: the backend)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            key = lock_key(name)
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = ((:key >> 32) & 4294967295)::oid AND objid = (:key & 4294967295)::oid "
                "AND objsubid = 1"), {"key": key}).scalar_one_or_none()
            return None if pid is None else f"postgres backend {pid}"
        return jt.lock_holder(conn, name)


@contextmanager
def _advisory_lock(engine: Engine, name: str, holder: str) -> Iterator[LockHandle | None]:
    key = lock_key(name)
    conn = engine.connect()
    try:
        acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one())
        # End the transaction but keep the (session-level) lock: an idle-in-transaction
        # connection held for a long run would pin old row versions against VACUUM.
        conn.commit()
        if not acquired:
            yield None
            return
        lost = _AdvisoryLost(conn, key)
        try:
            yield LockHandle(name, holder, lost)
        finally:
            try:
                if not lost._gone.is_set():
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
            except Exception:  # noqa: BLE001 - the session died: the server already released the lock
                log.warning("lock %s: its database session ended before the unlock", name)
            finally:
                # Never hand a connection that might still hold the lock back to the pool.
                conn.invalidate()
    finally:
        conn.close()


@contextmanager
def _row_lock(
    engine: Engine, name: str, holder: str, clock: Clock, ttl: timedelta, heartbeat_seconds: float
) -> Iterator[LockHandle | None]:
    now = clock.now()
    with engine.begin() as conn:
        acquired = jt.take_lock_row(conn, name, holder, now, now + ttl, takeover=holder_is_dead)
    if not acquired:
        yield None
        return
    handle = LockHandle(name, holder)
    _HELD.add(holder)
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(engine, handle, clock, ttl, heartbeat_seconds, done),
        name=f"lock-{name}", daemon=True,
    )
    beat.start()
    try:
        yield handle
    finally:
        done.set()
        beat.join()
        _HELD.discard(holder)
        try:
            with engine.begin() as conn:
                jt.release_lock_row(conn, name, holder)
        except Exception:  # noqa: BLE001 - must not hide the error that ended the run
            # Left behind, the row is taken over once it expires, or at once from this host.
            log.warning("lock %s could not be released (%s); it is taken over once stale", name, holder)


def _heartbeat(
    engine: Engine, handle: LockHandle, clock: Clock, ttl: timedelta, every: float, done: threading.Event
) -> None:
    lost = handle.lost
    assert isinstance(lost, threading.Event)
    while not done.wait(every):
        try:
            with engine.begin() as conn:
                still_ours = jt.refresh_lock_row(conn, handle.name, handle.holder, clock.now() + ttl)
        except Exception:  # noqa: BLE001 - a busy database must not kill the run; retry next beat
            log.warning("lock %s could not be extended; retrying", handle.name, exc_info=True)
            continue
        if not still_ours:
            log.error("lock %s lost (expired and taken over); stopping after the current unit of work", handle.name)
            lost.set()
            return
