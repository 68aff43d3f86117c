"""pytest plugin: throwaway, migrated databases for storage tests.

Fixtures (function scope unless noted):

* ``engine``        -- parametrized ``sqlite`` / ``postgres``: a migrated, empty Engine.
* ``conn``          -- a Connection in a transaction on ``engine`` (committed at the end).
* ``db_url``        -- parametrized ``sqlite`` / ``postgres``: URL of a migrated, empty database.
* ``empty_db_url``  -- parametrized ``sqlite`` / ``postgres``: URL of a brand-new, *unmigrated* database.
* ``sqlite_engine`` / ``pg_engine`` -- one backend only (migrated, empty).
* ``pg_admin_url`` (session) -- the server's maintenance URL (``PUSH_TEST_PG_ADMIN_URL``,
  default ``postgresql://postgres@127.0.0.1:5432/test``).

Other people run tests against the same PostgreSQL server at the same time, so
each pytest session creates its own database ``pf_<pid>_<random>`` and drops it
at the end; between tests every table is truncated. SQLite databases are files
in ``tmp_path``. PostgreSQL is never skipped: if it is unreachable the tests
fail with a message saying so.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from tables.engine import make_engine
from tables.migrate import VERSION_TABLE, upgrade

BACKENDS = ["sqlite", "postgres"]
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _libpq_url(url: str) -> str:
    """SQLAlchemy URL -> libpq URL (psycopg does not know ``+psycopg``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(admin_url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(_libpq_url(admin_url), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required for the storage tests and is unreachable at {admin_url} "
            f"(set PUSH_TEST_PG_ADMIN_URL to point elsewhere): {exc}",
            pytrace=False,
        )


def _create_database(admin_url: str, suffix: str = "") -> str:
    name = f"pf_{os.getpid()}_{secrets.token_hex(4)}{suffix}"
    with _admin(admin_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def _drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    with _admin(admin_url) as admin:
        # FORCE (PostgreSQL 13+) ends connections a failed test may have leaked.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return os.environ.get("PUSH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)


@pytest.fixture(scope="session")
def _pg_session_url(pg_admin_url: str) -> Iterator[str]:
    url = _create_database(pg_admin_url)
    try:
        yield url
    finally:
        _drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def _pg_session_engine(_pg_session_url: str) -> Iterator[Engine]:
    engine = make_engine(_pg_session_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        names = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> :v"),
            {"v": VERSION_TABLE},
        ).scalars().all()
        if names:
            tables = ", ".join(f'"{n}"' for n in names)
            conn.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def pg_engine(_pg_session_engine: Engine) -> Engine:
    _truncate_all(_pg_session_engine)  # before, not after: a failed test's rows stay inspectable
    return _pg_session_engine


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.fspath(tmp_path)}/push.db"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Engine:
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as connection:
        yield connection


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        request.getfixturevalue("sqlite_engine")  # creates and migrates the file
        return request.getfixturevalue("sqlite_url")
    request.getfixturevalue("pg_engine")  # truncates
    return request.getfixturevalue("_pg_session_url")


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{os.fspath(tmp_path)}/empty.db"
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    url = _create_database(admin_url, suffix="_e")
    try:
        yield url
    finally:
        _drop_database(admin_url, url)


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    """A second engine (own pool, own connections) on ``engine``'s database: another process's view."""
    second = make_engine(engine.url)
    try:
        yield second
    finally:
        second.dispose()
