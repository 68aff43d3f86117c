"""Bring a database to the latest schema, programmatically (no alembic.ini on disk).

``upgrade(engine)`` is meant to run on every start: when the database is already
at head it is a cheap no-op. Concurrent starts are serialized (advisory lock
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), and the whole upgrade runs in
one transaction, so a failed migration leaves the database as it was.

We keep our own version table (``push_feedback_alembic_version``) so the
library can live in a database whose owner also uses Alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

VERSION_TABLE = "push_feedback_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary fixed key for pg_advisory_xact_lock; the text spells "pushfeed".
_PG_LOCK_KEY = 0x7075736866656564


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine | Connection) -> str | None:
    """The revision the database is at, or None for a database we never migrated."""
    if isinstance(engine, Connection):
        return _current(engine)
    with engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate to ``revision`` (default head) and return the revision now current."""
    with engine.begin() as conn:  # on SQLite this BEGIN is IMMEDIATE (see tables.engine)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        if revision == "head" and _current(conn) == head_revision():
            return _current(conn)
        command.upgrade(alembic_config(conn), revision)
        return _current(conn)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Limit autogenerate/compare to our tables: the database may hold others."""
    from tables.models import TABLE_NAMES

    if type_ == "table":
        return name in TABLE_NAMES
    table = getattr(obj, "table", None)
    return table is None or table.name in TABLE_NAMES
