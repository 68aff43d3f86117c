"""run_job: the registry, job_run rows and the single-instance lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fixtures.scenarios import fcm_token
from jobs import optout
from jobs.lock import job_lock, lock_key
from jobs.runner import JOBS, run_job
from push.classify import classify
from push.clock import FakeClock
from push.config import PushConfig
from push.notification import Notification
from push.pipeline import asend_batch
from tables.engine import make_engine
from tables.models import DLOG, LOCKS, RUNS
from tests.pipeline_helpers import ScriptedSender
from tests.test_jobs_optout import dead

T0 = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
WAIT = 10  # seconds: bound on every wait for another thread; never reached when things work


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config() -> PushConfig:
    return PushConfig(concurrency=4, chunk_size=10)




def runs(engine: Engine, job: str | None = None) -> list[Any]:
    stmt = sa.select(RUNS).order_by(RUNS.c.id)
    if job is not None:
        stmt = stmt.where(RUNS.c.job == job)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def lock_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(LOCKS)))


def test_every_registered_job_runs_and_records_a_job_run_row(engine, config, clock):
    assert set(JOBS) == {"opt-out", "retry", "cleanup"}
    dead(engine, "tok")
    results = {name: run_job(name, engine, config, clock) for name in JOBS}
    assert all(r.ok for r in results.values()), results
    assert results["opt-out"].rows_changed == 1
    recorded = runs(engine)
    assert [(r.job, r.status) for r in recorded] == [("opt-out", "ok"), ("retry", "ok"), ("cleanup", "ok")]
    assert [r.id for r in recorded] == [results[r.job].run_id for r in recorded]
    assert lock_rows(engine) == []  # SQLite lock rows are released (PostgreSQL never writes any)
    assert json.loads(json.dumps(results["opt-out"].as_dict()))["started_at"] == T0.isoformat()


def test_retry_job_sends_due_rows_and_records_its_run(engine, config, clock):
    token = fcm_token("quota_exceeded", 1)
    n = Notification(token=token, platform="fcm", app="com.example.app", title="hi", body="there")
    asyncio.run(asend_batch([n], config, "rt", engine=engine, clock=clock, clients={"fcm": ScriptedSender("fcm")}))
    ok = ScriptedSender("fcm", {token: classify("fcm", status=200, body=b'{"name":"projects/p/messages/1"}')})

    early = run_job("retry", engine, config, clock, clients={"fcm": ok})
    assert early.ok and early.rows_examined == 0  # not due yet
    clock.advance(seconds=61)
    result = run_job("retry", engine, config, clock, clients={"fcm": ok})
    assert result.ok and (result.rows_examined, result.details["sent"]) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.select(DLOG.c.status)).scalar_one() == "sent"
    assert [(r.status, r.rows_examined) for r in runs(engine, "retry")] == [("ok", 0), ("ok", 1)]


def test_unknown_job_name_is_an_error(engine, config, clock):
    with pytest.raises(ValueError, match="opt-out"):
        run_job("optout", engine, config, clock)


class Gate:
    """A stop flag that, the first time it is checked, parks the job until released.

    Jobs check the stop flag between chunks, outside any transaction, so a run
    parked here holds only its job lock (on SQLite, no write lock).
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def is_set(self) -> bool:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(WAIT)
        return False


def test_a_second_concurrent_run_is_skipped(engine, other_engine, config, clock):
    dead(engine, "tok")
    gate, first = Gate(), {}
    worker = threading.Thread(target=lambda: first.update(r=run_job("opt-out", engine, config, clock, stop=gate)))
    worker.start()
    try:
        assert gate.entered.wait(WAIT)
        second = run_job("opt-out", other_engine, config, clock)  # another process, same database
        assert second.status == "skipped" and "lock" in (second.error or "")
        assert second.run_id is None
    finally:
        gate.release.set()
        worker.join(WAIT)
    assert first["r"].ok and first["r"].rows_changed == 1
    assert [r.status for r in runs(engine, "opt-out")] == ["ok"]  # skipped runs write nothing
    assert run_job("opt-out", other_engine, config, clock).ok  # released at the end


def test_job_lock_is_exclusive_across_engines(engine, other_engine, clock):
    with job_lock(other_engine, "cleanup", clock) as held:
        assert held is not None
        with job_lock(engine, "cleanup", clock) as second:
            assert second is None
        with job_lock(engine, "opt-out", clock) as different_job:
            assert different_job is not None  # one lock per job
    with job_lock(engine, "cleanup", clock) as after_release:
        assert after_release is not None


def test_postgres_advisory_lock_held_elsewhere_skips_the_run(pg_engine, config, clock):
    other = make_engine(pg_engine.url)
    try:
        with other.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key("opt-out")}).scalar_one()
            assert run_job("opt-out", pg_engine, config, clock).status == "skipped"
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("opt-out")})
            conn.commit()
        assert run_job("opt-out", pg_engine, config, clock).ok
    finally:
        other.dispose()
    assert len(runs(pg_engine)) == 1


def test_lock_keys_are_stable_and_distinct():
    assert lock_key("opt-out") == lock_key("opt-out")
    assert len({lock_key(name) for name in JOBS}) == len(JOBS)
    assert all(-(2**63) <= lock_key(name) < 2**63 for name in JOBS)


def test_sqlite_lock_row_held_skips_and_an_expired_one_is_taken_over(sqlite_engine, config, clock):
    with sqlite_engine.begin() as conn:
        conn.execute(sa.insert(LOCKS).values(job="opt-out", holder="other-host:42:abcd", acquired_at=T0,
                                             expires_at=T0 + timedelta(minutes=5)))
    skipped = run_job("opt-out", sqlite_engine, config, clock)
    assert skipped.status == "skipped" and runs(sqlite_engine) == []
    assert [r.holder for r in lock_rows(sqlite_engine)] == ["other-host:42:abcd"]  # untouched

    clock.advance(minutes=6)  # the holder died: its lock expired
    assert run_job("opt-out", sqlite_engine, config, clock).ok
    assert lock_rows(sqlite_engine) == []


def test_sqlite_lock_lost_to_a_takeover_tells_the_job_to_stop(sqlite_engine, clock):
    with job_lock(sqlite_engine, "opt-out", clock, heartbeat_seconds=0.01) as held:
        assert held is not None and not held.lost.is_set()
        with sqlite_engine.begin() as conn:  # someone decided we were dead and took it
            conn.execute(sa.update(LOCKS).values(holder="thief"))
        assert held.lost.wait(WAIT)
    assert [r.holder for r in lock_rows(sqlite_engine)] == ["thief"]  # not ours to release


def test_min_gap_skips_a_job_that_just_succeeded(engine, config, clock):
    gap = timedelta(hours=5, minutes=59)
    assert run_job("opt-out", engine, config, clock, min_gap=gap).ok
    clock.advance(hours=3)
    recent = run_job("opt-out", engine, config, clock, min_gap=gap)
    assert recent.status == "skipped" and "already ran" in (recent.error or "")
    assert run_job("opt-out", engine, config, clock).ok  # a manual run ignores the gap
    clock.advance(hours=6)
    assert run_job("opt-out", engine, config, clock, min_gap=gap).ok
    assert len(runs(engine, "opt-out")) == 3


def test_running_rows_left_by_a_dead_process_are_closed(engine, config, clock):
    with engine.begin() as conn:
        conn.execute(sa.insert(RUNS).values(job="opt-out", started_at=T0 - timedelta(hours=6), status="running"))
        conn.execute(sa.insert(RUNS).values(job="cleanup", started_at=T0 - timedelta(hours=6), status="running"))
    run_job("opt-out", engine, config, clock)
    by_job = [(r.job, r.status, r.error) for r in runs(engine)]
    assert by_job[0][:2] == ("opt-out", "error") and "abandoned" in by_job[0][2]
    assert by_job[1] == ("cleanup", "running", None)  # another job's: not ours to judge
    assert by_job[2] == ("opt-out", "ok", None)


def test_a_failing_job_is_recorded_and_releases_its_lock(engine, config, clock, monkeypatch):
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("no such table: quarantine")

    monkeypatch.setattr(optout.jt, "unregistered_chunk", boom)
    failed = run_job("opt-out", engine, config, clock)
    assert failed.status == "error" and "no such table" in (failed.error or "")
    monkeypatch.undo()
    assert run_job("opt-out", engine, config, clock).ok  # the lock was released
    assert [r.status for r in runs(engine, "opt-out")] == ["error", "ok"]
