"""Benchmark the opt-out job on a large subscription table.

    python -m bench.optout --rows 1000000 --dead-pct 1 --db sqlite|postgres [--chunk-size 50000]

Fills ``app_subscription`` with ``--rows`` rows and ``quarantine`` with
``--dead-pct`` % unregistered tokens (hard / user unknown; one in ten of them
re-registered after Apple's timestamp, so they must stay enabled) plus as many
soft-error rows, all generated set-based inside the database. Then times a full
opt-out run and an incremental run after a small batch of new quarantines.

SQLite runs in a temporary file; PostgreSQL in a throwaway database created on
``PUSH_TEST_PG_ADMIN_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and dropped afterwards. ``--url`` uses an existing, empty database instead.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from jobs.optout import DEFAULT_CHUNK_SIZE, run_optout
from push.clock import FakeClock
from push.config import PushConfig
from tables.engine import make_engine
from tables.migrate import upgrade
from tables.models import (
    EXCL,
    QUAR,
    SUBS,
    ExclusionSource,
)
from tables.types import UTCDateTime

BASE = datetime(2026, 3, 1, tzinfo=timezone.utc)
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def database(kind: str, url: str | None) -> Iterator[Engine]:
    if url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-optout-") as tmp:
            engine = make_engine(f"sqlite:///{tmp}/bench.db")
            try:
                yield engine
            finally:
                engine.dispose()
        return
    admin_url = os.environ.get("PUSH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    name = f"pf_bench_{secrets.token_hex(4)}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine = make_engine(make_url(admin_url).set(database=name))
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _series(engine: Engine, n: int) -> str:
    """A row source ``s(i)`` for i in 1..n, inside the database."""
    if engine.dialect.name == "postgresql":
        return f"(SELECT generate_series(1, {n}) AS i) AS s"
    return f"(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) SELECT i FROM g) AS s"


def _ts(name: str, value: datetime) -> sa.BindParameter[datetime]:
    return sa.bindparam(name, value, type_=UTCDateTime())


def _token(engine: Engine) -> str:
    return "('tok' || lpad(CAST(s.i AS text), 9, '0'))" if engine.dialect.name == "postgresql" \
        else "printf('tok%09d', s.i)"


SPREAD_START = BASE - timedelta(hours=7)


def _spread(engine: Engine) -> str:
    """``updated_at`` spread over 6 hours ending an hour before BASE, at 1 ms steps, in an order
    unrelated to the id (as when old rows get new errors), stored in the format
    ``UTCDateTime`` writes."""
    ms = "((CAST(s.i AS bigint) * 7919) % 21600000)"
    if engine.dialect.name == "postgresql":
        return f"(:spread_start + {ms} * interval '1 millisecond')"
    return (f"(strftime('%Y-%m-%d %H:%M:%S', :spread_epoch + {ms} / 1000, 'unixepoch') "
            f"|| printf('.%06d', ({ms} % 1000) * 1000))")


def _spread_params(engine: Engine) -> list[sa.BindParameter[Any]]:
    if engine.dialect.name == "postgresql":
        return [_ts("spread_start", SPREAD_START)]
    return [sa.bindparam("spread_epoch", int(SPREAD_START.timestamp()))]


# Columns shared by both inserts: 4 apps, half APNs and half FCM.
_KEY = "CASE WHEN s.i % 2 = 0 THEN 'apns' ELSE 'fcm' END, 'com.bench.app' || CAST(s.i % 4 AS text), {token}"


def fill(engine: Engine, rows: int, dead_pct: float) -> tuple[int, int]:
    """Insert the data set; returns (unregistered quarantine rows, subscriptions that must be disabled)."""
    every = max(1, round(100 / dead_pct))
    key = _KEY.format(token=_token(engine))
    false = "false" if engine.dialect.name == "postgresql" else "0"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO app_subscription (platform, app, token, disabled, registered_at, created_at, updated_at) "
                f"SELECT {key}, {false}, :reg, :reg, :reg FROM {_series(engine, rows)}"
            ).bindparams(_ts("reg", BASE - timedelta(days=30)))
        )
        # Unregistered tokens; every tenth one's invalidation predates its registration (stale 410).
        conn.execute(
            sa.text(
                "INSERT INTO quarantine (platform, app, token, status, error_count, failure_type, failure_reason, "
                "provider_timestamp, first_error_at, last_error_at, updated_at) "
                f"SELECT {key}, 'quarantine', 1, 'hard', 1, "
                "CASE WHEN s.i % (10 * :every) = 0 THEN :stale ELSE :fresh END, :err, :err, "
                f"{_spread(engine)} "
                f"FROM {_series(engine, rows)} WHERE s.i % :every = 0"
            ).bindparams(
                sa.bindparam("every", every),
                _ts("stale", BASE - timedelta(days=60)),
                _ts("fresh", BASE - timedelta(days=1)),
                _ts("err", BASE - timedelta(hours=2)),
                *_spread_params(engine),
            )
        )
        # As many soft-error rows, which the job must ignore.
        conn.execute(
            sa.text(
                "INSERT INTO quarantine (platform, app, token, status, error_count, failure_type, failure_reason, "
                "first_error_at, last_error_at, updated_at) "
                f"SELECT {key}, 'with_errors', 1, 'soft', 20, :err, :err, :err "
                f"FROM {_series(engine, rows)} WHERE s.i % :every = :half"
            ).bindparams(sa.bindparam("every", every), sa.bindparam("half", every // 2 if every > 1 else -1),
                         _ts("err", BASE - timedelta(hours=2)))
        )
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")  # what autovacuum does after a bulk load
    dead = rows // every
    stale = rows // (10 * every)
    return dead, dead - stale


def add_new_quarantines(engine: Engine, rows: int, dead_pct: float, n: int, when: datetime) -> None:
    """Declare ``n`` more tokens unregistered at ``when`` (ones ``fill`` left without a quarantine row)."""
    every = max(1, round(100 / dead_pct))
    if every < 3:
        raise SystemExit("--new needs --dead-pct <= 33: every token already has a quarantine row")
    key = _KEY.format(token=_token(engine))
    # fill() used residue 0 (unregistered) and every // 2 (soft errors): take the first residue neither holds.
    free = next(r for r in range(1, every) if r != every // 2)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO quarantine (platform, app, token, status, error_count, failure_type, failure_reason, "
                "first_error_at, last_error_at, updated_at) "
                f"SELECT {key}, 'quarantine', 1, 'hard', 1, :t, :t, :t FROM {_series(engine, rows)} "
                "WHERE s.i % :every = :free ORDER BY s.i LIMIT :n"
            ).bindparams(_ts("t", when), sa.bindparam("every", every), sa.bindparam("free", free),
                         sa.bindparam("n", n))
        )


def count(engine: Engine, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.optout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="subscriptions to create")
    parser.add_argument("--dead-pct", type=float, default=1.0, help="%% of tokens declared unregistered")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--url", help="use this existing, empty database instead of a throwaway one")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--new", type=int, default=100, help="new quarantines before the incremental run")
    args = parser.parse_args(argv)
    if not 0 < args.dead_pct <= 100:
        parser.error("--dead-pct must be in (0, 100]")

    with database(args.db, args.url) as engine:
        upgrade(engine)
        t0 = time.perf_counter()
        dead, expected = fill(engine, args.rows, args.dead_pct)
        soft = count(engine, QUAR, QUAR.c.status == "with_errors")
        print(f"{engine.dialect.name}: filled {args.rows:,} subscriptions, {dead:,} unregistered "
              f"(+{soft:,} soft-error) quarantine rows in {time.perf_counter() - t0:.1f}s")

        clock, config = FakeClock(BASE), PushConfig()
        t0 = time.perf_counter()
        full = run_optout(engine, config, clock, chunk_size=args.chunk_size)
        took = time.perf_counter() - t0
        assert full.ok, full.error
        print(f"full run:        {took:8.3f}s  examined {full.rows_examined:,}  disabled {full.rows_changed:,}  "
              f"chunks {full.details['chunks']}")
        assert full.rows_changed == expected, (full.rows_changed, expected)

        clock.advance(days=1)
        if args.new:
            add_new_quarantines(engine, args.rows, args.dead_pct, args.new, clock.now())
        clock.advance(hours=6)
        t0 = time.perf_counter()
        inc = run_optout(engine, config, clock, chunk_size=args.chunk_size)
        took = time.perf_counter() - t0
        assert inc.ok, inc.error
        print(f"incremental run: {took:8.3f}s  examined {inc.rows_examined:,}  disabled {inc.rows_changed:,}")

        disabled = count(engine, SUBS, SUBS.c.disabled == sa.true())
        logged = count(engine, EXCL, EXCL.c.source == ExclusionSource.OPT_OUT_JOB.value)
        print(f"check: {disabled:,} disabled subscriptions, {logged:,} opt_out_job exclusion_log rows")
        assert disabled == logged == expected + inc.rows_changed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
