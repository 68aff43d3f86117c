"""make_engine: URL validation, clear errors, SQLite pragmas, UTC round trips."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from push.errors import ConfigError
from tables.engine import make_engine
from tables.models import Delivery
from tables.types import as_utc


def _closed_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("not a url", "is not a database URL"),
        ("postgresql://u@h:notaport/db", "is not a database URL"),
        ("mysql://u@localhost/db", "unsupported driver 'mysql'"),
        ("postgresql+psycopg2://u@localhost/db", "unsupported driver"),
        ("postgresql://postgres@127.0.0.1:5432", "names no database"),
        ("sqlite://user@host/x.db", "has no host"),
    ],
)
def test_malformed_urls_name_the_setting(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(url)
    assert info.value.setting == "PUSH_DATABASE_URL"
    assert str(info.value).startswith("PUSH_DATABASE_URL: ")
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unreachable_postgres_is_a_clear_config_error() -> None:
    port = _closed_port()
    with pytest.raises(ConfigError) as info:
        make_engine(f"postgresql://postgres:secret@127.0.0.1:{port}/nope")
    message = str(info.value)
    assert message.startswith("PUSH_DATABASE_URL: cannot connect to postgresql+psycopg://postgres:***@127.0.0.1")
    assert "secret" not in message


def test_missing_sqlite_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        make_engine(f"sqlite:///{tmp_path}/missing/dir/push.db")


def test_unopenable_sqlite_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()  # a directory where the file should be
    with pytest.raises(ConfigError, match="cannot connect"):
        make_engine(f"sqlite:///{tmp_path}/adir.db")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_plain_postgres_urls_use_psycopg(scheme: str, pg_admin_url: str) -> None:
    rest = pg_admin_url.split("://", 1)[1]
    engine = make_engine(f"{scheme}://{rest}")
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_sqlite_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_sqlite_transactions_really_roll_back(sqlite_engine: Engine) -> None:
    # The sqlite3 module alone would autocommit DDL; our BEGIN hook must not.
    with pytest.raises(RuntimeError):
        with sqlite_engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            raise RuntimeError
    assert "scratch" not in sa.inspect(sqlite_engine).get_table_names()


def test_datetimes_round_trip_as_aware_utc(engine: Engine) -> None:
    paris = timezone(timedelta(hours=2))
    started = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    table = Delivery.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(id="d1", started_at=started))
        got = conn.execute(sa.select(table.c.started_at, table.c.created_at)).one()
        assert got.started_at == started
        assert got.started_at.tzinfo == timezone.utc
        assert got.started_at.hour == 12
        assert got.created_at.tzinfo == timezone.utc  # server default CURRENT_TIMESTAMP is UTC too
        assert abs(got.created_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
        # Comparisons with bound parameters see the same instant.
        n = conn.execute(sa.select(sa.func.count()).where(table.c.started_at == started.astimezone(timezone.utc)))
        assert n.scalar_one() == 1


def test_naive_datetimes_are_rejected(engine: Engine) -> None:
    table = Delivery.__table__  # type: ignore[attr-defined]
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(id="d1", started_at=datetime(2025, 1, 1)))


def test_as_utc() -> None:
    assert as_utc(datetime(2025, 1, 1, 10)) == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    assert as_utc(datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))).hour == 10
