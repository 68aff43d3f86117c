"""Fixtures for the concurrency suite: competing processes on one database and one fake server."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    """(engine, url) of a migrated, empty database; Postgres is never skipped."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")
