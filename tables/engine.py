"""Build a SQLAlchemy engine from ``PUSH_DATABASE_URL``, failing early and clearly.

Supported: ``sqlite:///path.db`` and PostgreSQL through psycopg 3
(``postgresql+psycopg://``; plain ``postgresql://`` / ``postgres://`` are routed
to psycopg). Anything else is a ``ConfigError`` naming the setting, raised
before the first real query, so a typo is not discovered mid-delivery; a
database that is there but refuses connections for now is a ``StorageError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from push.errors import ConfigError, StorageError

SETTING = "PUSH_DATABASE_URL"
CONNECT_TIMEOUT_S = 5  # a wrong host should fail in seconds, not hang the worker
SQLITE_BUSY_TIMEOUT_MS = 5_000

_PG_ALIASES = {"postgres", "postgresql", "postgresql+psycopg", "postgres+psycopg"}
_SQLITE_ALIASES = {"sqlite", "sqlite+pysqlite"}


def make_engine(url: str | URL, *, check: bool = True, **engine_kwargs: Any) -> Engine:
    """Validate ``url``, create the engine and (if ``check``) open one test connection."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, engine_kwargs)
    else:
        engine = _postgres_engine(parsed, engine_kwargs)
    if check:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            engine.dispose()
            where = parsed.render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if refused_for_now(exc):
                raise StorageError(f"database error: {where} refuses connections for now: {reason}") from exc
            raise ConfigError(SETTING, f"cannot connect to {where}: {reason}") from exc
    return engine


# What a database that is there says when it refuses for now (starting up, shutting down, in recovery, out of
# connection slots, closed to connections by an administrator): a database error to try again later, not a
# setting to fix. libpq gives a failed connection no SQLSTATE, so the server's own words are matched too.
# A refused TCP connection stays a setting error: a wrong port looks exactly like it.
_REFUSED_FOR_NOW_STATES = ("53", "57P", "55000")
_REFUSED_FOR_NOW_WORDS = ("is starting up", "is shutting down", "in recovery mode", "not yet accepting connections",
                          "not currently accepting connections", "too many clients", "too many connections",
                          "connection slots are reserved", "administrator command", "database is locked")


def refused_for_now(exc: DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None) or ""
    text = str(exc.orig if exc.orig is not None else exc)
    return state.startswith(_REFUSED_FOR_NOW_STATES) or any(w in text for w in _REFUSED_FOR_NOW_WORDS)


def _parse(url: str | URL) -> URL:
    if isinstance(url, str):
        if not url.strip():
            raise ConfigError(SETTING, "is empty; expected e.g. sqlite:///push.db or postgresql://user@host/db")
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError) as exc:
            raise ConfigError(
                SETTING, f"is not a database URL ({exc}); expected e.g. sqlite:///push.db or postgresql://user@host/db"
            ) from exc
    else:
        parsed = url
    driver = parsed.drivername.lower()
    if driver in _PG_ALIASES:
        return parsed.set(drivername="postgresql+psycopg")
    if driver in _SQLITE_ALIASES:
        return parsed.set(drivername="sqlite")
    raise ConfigError(
        SETTING,
        f"unsupported driver {parsed.drivername!r}; use sqlite:///... or postgresql://... (psycopg 3)",
    )


def _sqlite_engine(url: URL, kwargs: dict[str, Any]) -> Engine:
    if url.host or url.username or url.password or url.port:
        raise ConfigError(SETTING, "a SQLite URL has no host; use sqlite:///relative.db or sqlite:////absolute.db")
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise ConfigError(SETTING, f"directory {parent} for the SQLite file does not exist")
    try:
        engine = sa.create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(SETTING, str(exc)) from exc

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it neither
        # begins on SELECT nor on DDL); SQLAlchemy's "begin" hook below does it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
            cur.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster
            cur.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front. Our transactions read then
        # write (load state, decide, upsert); a deferred transaction would get
        # SQLITE_BUSY *without waiting* when upgrading to a writer under
        # concurrency, while IMMEDIATE simply waits out busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: URL, kwargs: dict[str, Any]) -> Engine:
    if not url.database:
        raise ConfigError(SETTING, "the PostgreSQL URL names no database (postgresql://user@host:5432/dbname)")
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
    connect_args.update(kwargs.pop("connect_args", {}))
    if "connect_timeout" in url.query:
        connect_args.pop("connect_timeout")
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return sa.create_engine(url, connect_args=connect_args, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(SETTING, str(exc)) from exc
