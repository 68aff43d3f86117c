"""A database that already holds a large history: the "grown tables" cases.

Built once per bench run, set-based inside the database (one ``INSERT ... SELECT``
per table over ``generate_series`` / a recursive CTE, never through the library):
``rows`` APNs subscriptions with random 64-hex tokens for the bench's app, and as
many ``delivery_log`` rows (status ``sent``, one per subscription, in a past
delivery) on the same tokens, so both random-token indexes are as large as the
rows. Each measured run then starts from a copy: the SQLite file copied, or a
PostgreSQL database created ``TEMPLATE`` the built one.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.env import APNS_TOPIC

GROWN_ROWS = 1_000_000
HISTORY_DELIVERY = "bench-grown-history"
REGISTERED = datetime(2026, 1, 1, tzinfo=timezone.utc)
PAYLOAD = '{"aps":{"alert":{"title":"Hello","body":"World"}}}'


def _series(engine: Engine, n: int) -> str:
    if engine.dialect.name == "postgresql":
        return f"generate_series(1, {n}) AS s(i)"
    return f"(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) SELECT i FROM g) AS s"


def _random_token(engine: Engine) -> str:
    """64 random hex digits, like an APNs device token (random order in the token indexes)."""
    if engine.dialect.name == "postgresql":
        return "md5(random()::text) || md5(random()::text)"
    return "lower(hex(randomblob(32)))"


def fill(engine: Engine, rows: int) -> None:
    """Insert ``rows`` subscriptions and ``rows`` delivery_log rows (schema already migrated)."""
    from tables.types import UTCDateTime

    false = "false" if engine.dialect.name == "postgresql" else "0"
    reg = sa.bindparam("reg", REGISTERED, type_=UTCDateTime())
    done = sa.bindparam("done", REGISTERED + timedelta(days=1), type_=UTCDateTime())
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO delivery (id, label, to_deliver, sent) VALUES (:id, 'grown', :n, :n)"),
                     {"id": HISTORY_DELIVERY, "n": rows})
        conn.execute(sa.text(
            "INSERT INTO app_subscription (platform, app, token, disabled, registered_at, created_at, updated_at) "
            f"SELECT 'apns', :app, {_random_token(engine)}, {false}, :reg, :reg, :reg FROM {_series(engine, rows)}"
        ).bindparams(reg), {"app": APNS_TOPIC})
        conn.execute(sa.text(
            "INSERT INTO delivery_log (delivery_id, seq, token, platform, app, status, provider_status, attempts, "
            "payload, created_at, updated_at) "
            "SELECT :delivery, id - 1, token, platform, app, 'sent', 200, 1, :payload, :done, :done "
            "FROM app_subscription ORDER BY id"
        ).bindparams(done), {"delivery": HISTORY_DELIVERY, "payload": PAYLOAD})
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")  # what autovacuum does after a bulk load


def build_sqlite(path: Path, rows: int) -> float:
    """The grown SQLite file at ``path``; returns the seconds it took."""
    from tables.engine import make_engine
    from tables.migrate import upgrade

    t0 = time.perf_counter()
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        fill(engine, rows)
    finally:
        engine.dispose()
    with sqlite3.connect(path) as raw:  # everything into the main file, so copying it alone is a whole copy
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


def copy_sqlite(template: Path, target: Path) -> str:
    """A fresh copy of the grown file; returns its SQLAlchemy URL."""
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def build_postgres(url: str, rows: int) -> float:
    """Migrate and fill the (new, empty) database at ``url``; returns the seconds it took."""
    from tables.engine import make_engine
    from tables.migrate import upgrade

    t0 = time.perf_counter()
    engine = make_engine(url)
    try:
        upgrade(engine)
        fill(engine, rows)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")  # the copy made from it starts without a WAL backlog
    finally:
        engine.dispose()
    return time.perf_counter() - t0
