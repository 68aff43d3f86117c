"""The cleanup job on SQLite and PostgreSQL: each rule, with the clock moved."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.cleanup import run_cleanup
from push.clock import FakeClock
from push.config import PushConfig
from tables.models import (
    DELIV,
    DLOG,
    EXCL,
    QUAR,
    RULE,
    RUNS,
)
from tests.rows import insert_quarantine

T0 = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
APP = "com.example.app"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config() -> PushConfig:
    return PushConfig(log_retention_days=180, mailbox_full_release_days=30, quarantine_reset_days=10)


def add_quarantine(engine: Engine, token: str, *, status: str, last_error_at: datetime, failure_type: str = "soft",
                   failure_reason: int = 20, error_count: int = 2) -> None:
    insert_quarantine(engine, token, status=status, at=last_error_at, app=APP, error_count=error_count,
                      failure_type=failure_type, failure_reason=failure_reason)


def quarantine_states(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        return {r.token: (r.status, r.error_count) for r in conn.execute(sa.select(QUAR))}


def test_with_errors_entries_return_to_valid_after_ten_quiet_days(engine, config, clock):
    add_quarantine(engine, "soft", status="with_errors", last_error_at=T0)
    add_quarantine(engine, "mailbox-full", status="with_errors", last_error_at=T0, failure_reason=5)
    add_quarantine(engine, "quarantined", status="quarantine", last_error_at=T0, failure_type="hard", failure_reason=1)
    add_quarantine(engine, "denylisted", status="denylisted", last_error_at=T0, failure_type="hard", failure_reason=8)

    clock.advance(days=9)
    nine = run_cleanup(engine, config, clock)
    assert nine.ok and nine.details["quarantine_reset"] == 0
    assert quarantine_states(engine)["soft"] == ("with_errors", 2)

    clock.advance(days=2)  # 11 days since the last error
    eleven = run_cleanup(engine, config, clock)
    assert eleven.details["quarantine_reset"] == 1
    states = quarantine_states(engine)
    assert states["soft"] == ("valid", 0)
    assert states["mailbox-full"] == ("with_errors", 2)  # mailbox full waits 30 days

    clock.advance(days=20)  # 31 days
    thirty_one = run_cleanup(engine, config, clock)
    assert thirty_one.details["quarantine_reset"] == 1
    states = quarantine_states(engine)
    assert states["mailbox-full"] == ("valid", 0)
    # Seed 003: quarantine and denylisted are never released automatically.
    assert states["quarantined"][0] == "quarantine" and states["denylisted"][0] == "denylisted"
    assert run_cleanup(engine, config, clock).details["quarantine_reset"] == 0


def test_mailbox_full_window_follows_the_config(engine, clock):
    add_quarantine(engine, "mailbox-full", status="with_errors", last_error_at=T0, failure_reason=5)
    clock.advance(days=16)
    run_cleanup(engine, PushConfig(mailbox_full_release_days=20), clock)
    assert quarantine_states(engine)["mailbox-full"][0] == "with_errors"
    run_cleanup(engine, PushConfig(mailbox_full_release_days=15), clock)
    assert quarantine_states(engine)["mailbox-full"][0] == "valid"


def add_logs(engine: Engine, created_at: datetime, statuses: list[str], delivery: str = "d1") -> None:
    with engine.begin() as conn:
        if conn.execute(sa.select(DELIV.c.id).where(DELIV.c.id == delivery)).first() is None:
            conn.execute(sa.insert(DELIV).values(id=delivery, created_at=created_at))
        start = conn.execute(sa.select(sa.func.count()).select_from(DLOG)).scalar_one()
        conn.execute(sa.insert(DLOG), [
            {"delivery_id": delivery, "seq": start + i, "token": f"t{start + i}", "platform": "apns", "app": APP,
             "status": status, "created_at": created_at, "updated_at": created_at}
            for i, status in enumerate(statuses)])


def log_statuses(engine: Engine) -> list[tuple[str, datetime]]:
    with engine.connect() as conn:
        return sorted((r.status, r.created_at) for r in conn.execute(sa.select(DLOG)))


def test_old_delivery_logs_are_purged_in_chunks_except_unsent_ones(engine, config, clock):
    old = ["sent", "failed", "excluded", "sent", "sent", "failed", "pending", "retry_pending"]
    add_logs(engine, T0, old)
    add_logs(engine, T0 + timedelta(days=100), ["sent", "failed"])

    clock.advance(days=179)
    assert run_cleanup(engine, config, clock, chunk_size=2).details["delivery_logs_purged"] == 0

    clock.advance(days=2)  # 181 days after the first batch
    result = run_cleanup(engine, config, clock, chunk_size=2)
    assert result.ok and result.details["delivery_logs_purged"] == 6
    assert log_statuses(engine) == sorted([
        ("pending", T0), ("retry_pending", T0),  # still owed a send: never purged
        ("sent", T0 + timedelta(days=100)), ("failed", T0 + timedelta(days=100)),
    ])
    assert run_cleanup(engine, config, clock, chunk_size=2).details["delivery_logs_purged"] == 0


def add_exclusions(engine: Engine, created_at: datetime, n: int, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(EXCL), [
            {"token": f"x{start + i}", "platform": "apns", "app": APP, "failure_reason": 1,
             "source": "opt_out_job", "event_at": created_at + timedelta(microseconds=start + i),
             "created_at": created_at}  # tied created_at: chunk boundaries fall inside the tie
            for i in range(n)])


def exclusion_tokens(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(EXCL.c.token)).scalars())


def test_old_exclusion_logs_are_purged_in_chunks(engine, config, clock):
    add_exclusions(engine, T0, 5)
    add_exclusions(engine, T0 + timedelta(hours=1), 4, start=5)
    add_exclusions(engine, T0 + timedelta(days=30), 2, start=9)
    clock.advance(days=181)

    result = run_cleanup(engine, config, clock, chunk_size=2)
    assert result.details["exclusion_logs_purged"] == 9
    assert exclusion_tokens(engine) == {"x9", "x10"}
    assert (result.rows_examined, result.rows_changed) == (9, 9)


def rule(provider: str, text: str, occurrences: int) -> dict[str, Any]:
    return {"provider": provider, "normalized_text": text, "first_text": text, "occurrences": occurrences,
            "status": "to_qualify", "created_at": T0, "updated_at": T0}


@contextmanager
def planted_rules(engine: Engine, rows: list[dict[str, Any]]) -> Iterator[None]:
    """Insert rules past the CHECK constraint that keeps occurrences <= 100,000
    (a database written before it existed, or by hand), and restore it after."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:  # the pragma is per connection
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
            conn.execute(sa.insert(RULE), rows)
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = OFF")
            conn.commit()
        yield
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE qualification_rule DROP CONSTRAINT ck_qualification_rule_occurrences")
        conn.execute(sa.insert(RULE), rows)
    try:
        yield
    finally:
        with engine.begin() as conn:  # the session database is shared by later tests
            conn.exec_driver_sql("UPDATE qualification_rule SET occurrences = 100000 WHERE occurrences > 100000")
            conn.exec_driver_sql(
                "ALTER TABLE qualification_rule ADD CONSTRAINT ck_qualification_rule_occurrences "
                "CHECK (occurrences >= 0 AND occurrences <= 100000)")


def test_rule_occurrences_are_capped_at_100000(engine, config, clock):
    rows = [rule("apns", "over", 150_000), rule("apns", "at-cap", 100_000), rule("fcm", "low", 7)]
    with planted_rules(engine, rows):
        result = run_cleanup(engine, config, clock)
    assert result.details["rules_capped"] == 1
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(RULE.c.normalized_text, RULE.c.occurrences)).all())
    assert counts == {"over": 100_000, "at-cap": 100_000, "low": 7}
    assert run_cleanup(engine, config, clock).details["rules_capped"] == 0


def test_job_run_is_recorded_with_totals(engine, config, clock):
    add_quarantine(engine, "soft", status="with_errors", last_error_at=T0)
    add_logs(engine, T0, ["sent", "pending"])
    add_exclusions(engine, T0, 3)
    clock.advance(days=200)

    result = run_cleanup(engine, config, clock)
    assert result.ok and not result.stopped
    assert result.details == {"quarantine_reset": 1, "rules_capped": 0, "delivery_logs_purged": 1,
                              "exclusion_logs_purged": 3}
    assert (result.rows_examined, result.rows_changed) == (5, 5)
    with engine.connect() as conn:
        (run,) = conn.execute(sa.select(RUNS).where(RUNS.c.job == "cleanup")).all()
    assert (run.status, run.rows_examined, run.rows_changed, run.watermark) == ("ok", 5, 5, None)
    assert run.started_at == clock.now() and run.finished_at == clock.now()


def test_stop_flag_stops_between_purge_chunks(engine, config, clock):
    add_logs(engine, T0, ["sent"] * 5)
    clock.advance(days=200)
    checks = {"n": 0}

    class StopAfterFirstChunk:
        def is_set(self) -> bool:
            checks["n"] += 1
            return checks["n"] > 2  # the start check, then one purge chunk

    result = run_cleanup(engine, config, clock, chunk_size=2, stop=StopAfterFirstChunk())
    assert result.ok and result.stopped and result.details["delivery_logs_purged"] == 2
    assert len(log_statuses(engine)) == 3
    assert run_cleanup(engine, config, clock, chunk_size=2).details["delivery_logs_purged"] == 3
