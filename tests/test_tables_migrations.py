"""Migrations: fresh databases reach head, re-running is a no-op, schema == models."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

from tables.engine import make_engine
from tables.migrate import VERSION_TABLE, current_revision, head_revision, include_object, upgrade
from tables.models import TABLE_NAMES


@pytest.fixture
def empty_engine(empty_db_url: str):
    engine = make_engine(empty_db_url)
    yield engine
    engine.dispose()


def test_fresh_database_reaches_head(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    assert upgrade(empty_engine) == head_revision() == "0004"
    assert current_revision(empty_engine) == head_revision()
    names = set(sa.inspect(empty_engine).get_table_names())
    assert TABLE_NAMES | {VERSION_TABLE} <= names
    assert "alembic_version" not in names  # we never collide with the host app's Alembic


def test_second_upgrade_is_a_no_op(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO delivery (id) VALUES ('keep-me')"))
    before = _schema(empty_engine)
    assert upgrade(empty_engine) == head_revision()
    assert _schema(empty_engine) == before
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM delivery")).scalars().all() == ["keep-me"]
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1


def test_concurrent_upgrades_serialize(empty_db_url: str) -> None:
    engines = [make_engine(empty_db_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        try:
            barrier.wait()
            upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            e.dispose()


def test_migrated_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "compare_server_default": True, "include_object": include_object},
        )
        assert compare_metadata(ctx, SQLModel.metadata) == []


def test_check_and_unique_constraints_match_models(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in TABLE_NAMES:
            continue
        model_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        db_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert db_checks == model_checks, table.name
        model_uniques = {c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint)}
        db_uniques = {c["name"] for c in inspector.get_unique_constraints(table.name)}
        assert db_uniques == model_uniques, table.name


def test_current_revision_accepts_a_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()


def _schema(engine: Engine) -> dict[str, object]:
    inspector = sa.inspect(engine)
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
            sorted(i["name"] for i in inspector.get_indexes(name)),
        )
        for name in sorted(inspector.get_table_names())
    }
