"""The opt-out job on SQLite and PostgreSQL, with a FakeClock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs import optout
from jobs.optout import OVERLAP, run_optout
from push.classify import classify
from push.clock import FakeClock
from push.config import PushConfig
from tables import store
from tables.models import (
    EXCL,
    RUNS,
    SUBS,
)
from tests.rows import insert_quarantine

T0 = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
APP = "com.example.app"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def config() -> PushConfig:
    return PushConfig()


def subscribe(engine: Engine, token: str, *, platform: str = "apns", app: str = APP,
              registered_at: datetime = T0 - timedelta(days=30), **extra: Any) -> int:
    with engine.begin() as conn:
        return int(conn.execute(
            sa.insert(SUBS).values(platform=platform, app=app, token=token, registered_at=registered_at, **extra)
            .returning(SUBS.c.id)
        ).scalar_one())


def quarantine(engine: Engine, token: str, *, platform: str = "apns", app: str = APP, status: str = "quarantine",
               failure_type: str = "hard", failure_reason: int = 1, updated_at: datetime = T0 - timedelta(hours=1),
               provider_timestamp: datetime | None = None) -> None:
    insert_quarantine(engine, token, status=status, at=updated_at, platform=platform, app=app,
                      failure_type=failure_type, failure_reason=failure_reason, provider_timestamp=provider_timestamp)


def dead(engine: Engine, token: str, **kw: Any) -> int:
    """A subscription whose token is declared unregistered."""
    sub = subscribe(engine, token, platform=kw.get("platform", "apns"))
    quarantine(engine, token, **kw)
    return sub


def subs(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.token: r for r in conn.execute(sa.select(SUBS))}


def exclusions(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(EXCL).order_by(EXCL.c.id)))


def job_runs(engine: Engine, job: str = "opt-out") -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(RUNS).where(RUNS.c.job == job).order_by(RUNS.c.id)))


def disabled_tokens(engine: Engine) -> set[str]:
    return {t for t, r in subs(engine).items() if r.disabled}


def test_disables_exactly_the_unregistered_subscriptions(engine, config, clock):
    registered = T0 - timedelta(days=30)
    dead(engine, "apns-410")  # no timestamp: disabled
    dead(engine, "fcm-unregistered", platform="fcm")
    dead(engine, "apns-410-after-registration", provider_timestamp=registered + timedelta(days=1))
    dead(engine, "apns-410-stale", provider_timestamp=registered - timedelta(days=1))  # app registered again since
    subscribe(engine, "soft")
    quarantine(engine, "soft", status="with_errors", failure_type="soft", failure_reason=20)
    subscribe(engine, "hard-refused")  # hard but not "user unknown"
    quarantine(engine, "hard-refused", failure_reason=20)
    subscribe(engine, "released")  # an operator released it: the failure fields are history only
    quarantine(engine, "released", status="valid")
    subscribe(engine, "other-app-dead")  # same token, the quarantine row is another app's
    quarantine(engine, "other-app-dead", app="com.other.app")
    subscribe(engine, "no-quarantine")
    disabled_before = T0 - timedelta(days=3)
    subscribe(engine, "already-disabled", disabled=True, disabled_at=disabled_before, disabled_reason=8)
    quarantine(engine, "already-disabled")

    result = run_optout(engine, config, clock)

    assert result.ok and result.job == "opt-out"
    expected = {"apns-410", "fcm-unregistered", "apns-410-after-registration"}
    assert result.rows_changed == 3
    # every status=quarantine hard/1 row, whatever its subscription's fate
    assert result.rows_examined == 6
    rows = subs(engine)
    assert disabled_tokens(engine) == expected | {"already-disabled"}
    for token in expected:
        assert rows[token].disabled_at == clock.now() and rows[token].disabled_reason == 1
        assert rows[token].updated_at == clock.now()
    assert rows["already-disabled"].disabled_at == disabled_before and rows["already-disabled"].disabled_reason == 8

    logs = exclusions(engine)
    assert sorted(r.token for r in logs) == sorted(expected)
    for log in logs:
        assert log.source == "opt_out_job" and log.failure_reason == 1 and log.delivery_id is None
        assert log.subscription_id == rows[log.token].id
        assert log.event_at == rows[log.token].disabled_at
        assert log.platform == rows[log.token].platform and log.app == APP

    (run,) = job_runs(engine)
    assert (run.status, run.rows_examined, run.rows_changed, run.error) == ("ok", 6, 3, None)
    assert run.started_at == T0 and run.finished_at == T0 and run.watermark == T0


def test_rerun_changes_nothing_and_writes_nothing(engine, config, clock):
    for i in range(5):
        dead(engine, f"t{i}")
    first = run_optout(engine, config, clock)
    before = {t: (r.disabled_at, r.updated_at) for t, r in subs(engine).items()}
    clock.advance(hours=6)

    again = run_optout(engine, config, clock, full=True)  # even re-examining every row
    assert first.rows_changed == 5
    assert (again.rows_examined, again.rows_changed) == (5, 0)
    assert {t: (r.disabled_at, r.updated_at) for t, r in subs(engine).items()} == before
    assert len(exclusions(engine)) == 5
    assert [r.status for r in job_runs(engine)] == ["ok", "ok"]


def test_incremental_run_examines_only_new_quarantine_rows(engine, config, clock):
    for i in range(5):
        dead(engine, f"old{i}")
    assert run_optout(engine, config, clock).rows_examined == 5

    clock.advance(days=1)
    dead(engine, "new0", updated_at=clock.now())
    dead(engine, "new1", updated_at=clock.now())
    subscribe(engine, "new-soft")
    quarantine(engine, "new-soft", status="with_errors", failure_type="soft", failure_reason=20,
               updated_at=clock.now())
    clock.advance(hours=6)

    second = run_optout(engine, config, clock)
    assert (second.rows_examined, second.rows_changed) == (2, 2)
    assert second.watermark == clock.now()
    assert disabled_tokens(engine) == {f"old{i}" for i in range(5)} | {"new0", "new1"}

    clock.advance(hours=6)
    assert run_optout(engine, config, clock).rows_examined == 0
    assert run_optout(engine, config, clock, full=True).rows_examined == 7


def test_overlap_catches_a_row_committed_late_with_an_older_timestamp(engine, config, clock):
    run_optout(engine, config, clock)  # watermark = T0
    # A writer whose clock lags (or whose transaction committed after that run read past it).
    dead(engine, "late", updated_at=T0 - OVERLAP / 2)
    dead(engine, "too-old", updated_at=T0 - 2 * OVERLAP)  # beyond the margin: left for a full run
    clock.advance(hours=6)

    result = run_optout(engine, config, clock)
    assert (result.rows_examined, result.rows_changed) == (1, 1)
    assert disabled_tokens(engine) == {"late"}
    assert run_optout(engine, config, clock, full=True).rows_changed == 1


def test_chunks_of_three_with_tied_timestamps(engine, config, clock):
    # 10 rows, timestamps tied in groups of 4, so chunk boundaries fall inside a tie.
    for i in range(10):
        dead(engine, f"t{i:02d}", updated_at=T0 - timedelta(hours=1, minutes=i // 4))
    result = run_optout(engine, config, clock, chunk_size=3)
    assert (result.rows_examined, result.rows_changed, result.details["chunks"]) == (10, 10, 4)
    assert len(disabled_tokens(engine)) == 10
    assert len(exclusions(engine)) == 10


def test_chunk_size_must_be_positive(engine, config, clock):
    with pytest.raises(ValueError):
        run_optout(engine, config, clock, chunk_size=0)


class StopAfter:
    """A stop flag that turns on after ``n`` checks (the job checks once per chunk)."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_stop_flag_ends_the_run_between_chunks_and_the_next_run_resumes(engine, config, clock):
    for i in range(7):
        dead(engine, f"t{i}", updated_at=T0 - timedelta(hours=1, minutes=10 - i))
    first = run_optout(engine, config, clock, chunk_size=3, stop=StopAfter(1))
    assert first.ok and first.stopped
    assert (first.rows_examined, first.rows_changed) == (3, 3)
    # The watermark is the last committed row, not the start time: rows after it are still owed.
    assert first.watermark == T0 - timedelta(hours=1, minutes=8)
    assert job_runs(engine)[-1].watermark == first.watermark

    clock.advance(hours=1)
    second = run_optout(engine, config, clock, chunk_size=3)
    assert not second.stopped and second.rows_changed == 4
    assert len(disabled_tokens(engine)) == 7 and len(exclusions(engine)) == 7


def test_a_failure_mid_run_keeps_committed_chunks_and_the_rerun_finishes(engine, config, clock, monkeypatch):
    for i in range(7):
        dead(engine, f"t{i}", updated_at=T0 - timedelta(hours=1, minutes=10 - i))
    calls = {"n": 0}
    real = store.insert_exclusions

    def flaky(conn: Any, rows: Any, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("database went away")
        return real(conn, rows, **kw)

    monkeypatch.setattr(optout.store, "insert_exclusions", flaky)
    failed = run_optout(engine, config, clock, chunk_size=3)
    assert failed.status == "error" and "database went away" in (failed.error or "")
    assert (failed.rows_changed, failed.watermark) == (3, None)
    # The failed chunk's UPDATE rolled back with its log rows: no disabled row lacks its log.
    assert len(disabled_tokens(engine)) == 3 and len(exclusions(engine)) == 3
    run = job_runs(engine)[-1]
    assert run.status == "error" and "database went away" in run.error and run.watermark is None

    monkeypatch.setattr(optout.store, "insert_exclusions", real)
    clock.advance(hours=1)
    rerun = run_optout(engine, config, clock, chunk_size=3)
    assert rerun.ok and rerun.rows_examined == 7 and rerun.rows_changed == 4  # resumes from the last ok run
    logs = exclusions(engine)
    assert len(disabled_tokens(engine)) == 7 and len(logs) == 7
    assert len({r.subscription_id for r in logs}) == 7


FCM_UNREGISTERED = (b'{"error":{"code":404,"status":"NOT_FOUND","message":"Requested entity was not found.",'
                    b'"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError",'
                    b'"errorCode":"UNREGISTERED"}]}}')


def test_reregistered_token_stays_enabled_until_it_fails_again(engine, config, clock):
    """FCM answers carry no timestamp: the failure's own time decides staleness."""
    key = ("fcm", APP, "tok")
    unregistered = classify("fcm", status=404, body=FCM_UNREGISTERED)
    with engine.begin() as conn:
        store.register_token(conn, app=APP, platform="fcm", token="tok", now=T0 - timedelta(days=10))
        store.apply_quarantine(conn, {key: unregistered}, now=T0 - timedelta(days=1))
    assert run_optout(engine, config, clock).rows_changed == 1

    clock.advance(days=1)
    with engine.begin() as conn:  # the app hands us the same token again: enabled, registered_at moves
        store.register_token(conn, app=APP, platform="fcm", token="tok", now=clock.now())
    clock.advance(days=1)
    assert run_optout(engine, config, clock, full=True).rows_changed == 0  # that failure predates it
    assert disabled_tokens(engine) == set()

    with engine.begin() as conn:  # an operator releases it; later FCM says UNREGISTERED again
        store.release_quarantine(conn, released_by="test", token="tok", now=clock.now())
        clock.advance(days=1)
        store.apply_quarantine(conn, {key: unregistered}, now=clock.now())
    clock.advance(hours=1)
    assert run_optout(engine, config, clock).rows_changed == 1
    logs = exclusions(engine)
    assert len(logs) == 2 and logs[0].event_at < logs[1].event_at  # one row per disable event


def test_real_apns_410_through_the_quarantine_store(engine, config, clock):
    """End to end: APNs 410 answers recorded by ``store.apply_quarantine``, then the job."""
    def apns_410(when: datetime) -> Any:
        body = b'{"reason":"Unregistered","timestamp":%d}' % int(when.timestamp() * 1000)
        return classify("apns", status=410, body=body)

    with engine.begin() as conn:
        for token in ("gone", "reinstalled"):
            store.register_token(conn, app=APP, platform="apns", token=token, now=T0 - timedelta(days=10))
        store.apply_quarantine(conn, {("apns", APP, "gone"): apns_410(T0 - timedelta(days=2)),
                                      ("apns", APP, "reinstalled"): apns_410(T0 - timedelta(days=2))},
                               now=T0 - timedelta(days=1))
        # The app reinstalled and registered the same token after Apple's timestamp.
        store.register_token(conn, app=APP, platform="apns", token="reinstalled", now=T0 - timedelta(hours=12))

    result = run_optout(engine, config, clock)
    assert (result.rows_examined, result.rows_changed) == (2, 1)
    assert disabled_tokens(engine) == {"gone"}
    assert [r.token for r in exclusions(engine)] == ["gone"]
