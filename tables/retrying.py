"""Transactions that survive what a busy shared database does to them.

Postgres aborts one of two transactions that lock the same rows in different
orders (``40P01 deadlock_detected``) or that conflict under a stricter
isolation level (``40001 serialization_failure``); a connection can also die
under a transaction (``pg_terminate_backend``, a restart, a failover). In all
of these the transaction was rolled back as a whole, so running it again on a
fresh connection is safe. Writers also sort their rows by key, so deadlocks are
rare; this is the net under that rule, bounded in attempts and time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("tables.retrying")

T = TypeVar("T")
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
ATTEMPTS = 6
FIRST_DELAY = 0.05  # seconds; doubles each time: 0.05 + 0.1 + ... ~ 1.6 s in all
MAX_DELAY = 2.0


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure, or a connection that died under the transaction."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    # 57P01 admin_shutdown (terminated backend), 08xxx connection exceptions
    return isinstance(sqlstate, str) and (sqlstate == "57P01" or sqlstate.startswith("08"))


def in_transaction(engine: Engine, fn: Callable[[Connection], T], *, attempts: int = ATTEMPTS,
                   first_delay: float = FIRST_DELAY, sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn(conn)`` in one transaction, run again (whole) on a retryable failure, at most ``attempts`` times.

    ``fn`` must only touch the database (its side effects are rolled back with it), or be safe
    to repeat. The last failure is raised as it came.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                return fn(conn)
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            sqlstate = getattr(exc.orig, "sqlstate", None) or ("connection lost" if exc.connection_invalidated else "?")
            log.warning("database transaction failed (%s); retrying (%d of %d)", sqlstate, attempt, attempts - 1)
            sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")  # pragma: no cover
