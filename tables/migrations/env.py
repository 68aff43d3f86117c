"""Alembic environment for push-feedback.

Normally driven by ``tables.migrate.upgrade(engine)``, which hands us an open
connection in ``config.attributes["connection"]``. For hand use (e.g. writing a
new revision) set ``PUSH_DATABASE_URL`` and build a Config the same way
``tables.migrate.alembic_config()`` does.
"""

from __future__ import annotations

import os

from alembic import context
from sqlmodel import SQLModel

import tables.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from tables.migrate import VERSION_TABLE, include_object

config = context.config
target_metadata = SQLModel.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url=os.environ["PUSH_DATABASE_URL"], literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from tables.engine import make_engine

        engine = make_engine(os.environ["PUSH_DATABASE_URL"])
        with engine.connect() as conn:
            _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
        return
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
