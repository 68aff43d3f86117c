"""Fixtures for the fault suite, and the figures printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.faults.helpers import FIGURES


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    """(engine, url) of a migrated, empty database; Postgres is never skipped."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key:40s} {FIGURES[key]}")
