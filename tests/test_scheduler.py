"""The scheduler: in-process with a stop event, and as real processes stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs import optout
from jobs.common import JobResult
from jobs.optout import run_optout
from jobs.runner import JOBS, JobSpec
from jobs.scheduler import CLEAN_SHUTDOWN, min_gap, run_scheduler
from push.clock import FakeClock
from push.config import PushConfig
from tables import store
from tables.engine import make_engine
from tables.models import RUNS, SUBS
from tests.test_jobs_optout import dead

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
WAIT = 20.0  # upper bound on any wait below; a healthy run needs a few seconds


def test_min_gap_is_a_little_under_the_interval():
    assert min_gap(1) == timedelta(seconds=0.8)
    assert min_gap(60) == timedelta(seconds=48)
    assert min_gap(6 * 3600) == timedelta(hours=6) - timedelta(minutes=1)


def ok_runs(engine: Engine, job: str | None = None) -> list[Any]:
    stmt = sa.select(RUNS).where(RUNS.c.status == "ok").order_by(RUNS.c.started_at)
    if job is not None:
        stmt = stmt.where(RUNS.c.job == job)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def run_in_thread(fn: Callable[[], int]) -> tuple[threading.Thread, dict[str, int]]:
    out: dict[str, int] = {}
    thread = threading.Thread(target=lambda: out.update(rc=fn()), daemon=True)
    thread.start()
    return thread, out


def test_in_process_scheduler_runs_every_job_and_stops_on_the_event(engine):
    stop, seen, lock = threading.Event(), set(), threading.Lock()

    def on_result(result: JobResult) -> None:
        with lock:
            seen.add(result.job)
            if seen == set(JOBS):
                stop.set()

    thread, out = run_in_thread(lambda: run_scheduler(
        PushConfig(), engine=engine, clock=FakeClock(T0), stop_event=stop, run_immediately=True,
        on_result=on_result))
    thread.join(WAIT)
    assert not thread.is_alive() and out["rc"] == 0
    assert sorted(r.job for r in ok_runs(engine)) == sorted(JOBS)


def test_stop_lets_the_running_job_commit_its_chunk_then_exits(engine, monkeypatch):
    for i in range(6):
        dead(engine, f"t{i}", updated_at=T0 - timedelta(hours=1, minutes=10 - i))
    stop = threading.Event()
    # Small chunks for the scheduled opt-out job, and a stop request arriving mid-chunk.
    monkeypatch.setitem(JOBS, "opt-out", JobSpec(
        "opt-out", lambda e, c, k, o: run_optout(e, c, k, stop=o.stop, chunk_size=2), lambda c: c.optout_interval))
    real = store.insert_exclusions

    def insert_then_signal(*args: Any, **kw: Any) -> int:
        stop.set()  # as if SIGTERM arrived while this chunk is being written
        return real(*args, **kw)

    monkeypatch.setattr(optout.store, "insert_exclusions", insert_then_signal)
    thread, out = run_in_thread(lambda: run_scheduler(
        PushConfig(), engine=engine, clock=FakeClock(T0), stop_event=stop, run_immediately=True))
    thread.join(WAIT)
    assert not thread.is_alive() and out["rc"] == 0
    (run,) = ok_runs(engine, "opt-out")
    assert (run.rows_examined, run.rows_changed) == (2, 2)  # the chunk in flight committed, no more
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(SUBS.c.disabled == sa.true())).scalar_one() == 2


# --------------------------------------------------------------------------- real processes


def scheduler_env(database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}  # no stray settings
    env.update({"PUSH_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **settings})
    return env


@contextmanager
def scheduler_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.scheduler"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def wait_for(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen[bytes]],
             logs: list[Path]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    output = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in logs)
    pytest.fail(f"timed out waiting for {what}\n{output}")


def stop_and_check(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(WAIT)
    text = log.read_text(errors="replace")
    assert rc == 0, text
    assert "received SIGTERM" in text and CLEAN_SHUTDOWN in text, text
    assert "Traceback" not in text, text
    return text


def count_ok(engine: Engine, job: str) -> int:
    try:
        return len(ok_runs(engine, job))
    except sa.exc.OperationalError:  # the scheduler has not created the tables yet
        return 0


def test_scheduler_process_runs_jobs_and_exits_cleanly_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path}/scheduled.db"  # a fresh file: the scheduler migrates it
    log = tmp_path / "scheduler.log"
    with scheduler_process(scheduler_env(url, PUSH_OPTOUT_INTERVAL="1"), log) as proc:
        wait_for(lambda: (tmp_path / "scheduled.db").exists(), "the database file", [proc], [log])
        engine = make_engine(url)
        try:
            wait_for(lambda: count_ok(engine, "opt-out") >= 1, "an opt-out job_run row", [proc], [log])
            text = stop_and_check(proc, log)
        finally:
            engine.dispose()
    assert "job=opt-out status=ok examined=0 changed=0 duration=" in text


def test_two_scheduler_processes_run_each_job_once_per_interval(pg_engine, _pg_session_url, tmp_path):
    env = scheduler_env(_pg_session_url, PUSH_OPTOUT_INTERVAL="1", PUSH_RETRY_INTERVAL="1",
                        PUSH_CLEANUP_INTERVAL="1")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with scheduler_process(env, logs[0]) as a, scheduler_process(env, logs[1]) as b:
        procs = [a, b]
        wait_for(lambda: all("scheduler starting" in log.read_text() for log in logs), "both schedulers",
                 procs, logs)
        # Both processes tick every job every second; watch until each job ran 4 times.
        wait_for(lambda: all(count_ok(pg_engine, job) >= 4 for job in JOBS), "4 runs of each job", procs, logs)
        texts = [stop_and_check(p, log) for p, log in zip(procs, logs)]

    gap = min_gap(1).total_seconds()
    for job in JOBS:
        starts = [r.started_at for r in ok_runs(pg_engine, job)]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
        # Never two runs in one interval, whichever process ran them.
        assert min(gaps) >= gap, (job, gaps)
        skipped = sum(t.count(f"job={job} status=skipped") for t in texts)
        ran = sum(t.count(f"job={job} status=ok") for t in texts)
        assert ran == len(starts) and skipped >= 1, (job, ran, skipped)
    with pg_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RUNS).where(RUNS.c.status != "ok")).scalar() == 0
