"""The job registry and ``run_job``: one locked, recorded run of a named job.

    from jobs.runner import run_job
    result = run_job("opt-out", engine, config, SystemClock())
    print(result.summary())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine

from jobs.cleanup import run_cleanup
from jobs.common import AnyStop, JobResult, Progress, StopFlag, recorded, should_stop
from jobs.lock import job_lock
from jobs.optout import run_optout
from jobs.retry import run_retries
from push.clock import Clock
from push.config import PushConfig
from push.pipeline import Sender
from tables import jobs as jt

log = logging.getLogger("jobs")

RETRY_JOB = "retry"
RETRY_RUN_LIMIT = 100_000  # rows one retry run handles at most (jobs.retry's own default)
ABANDONED = "abandoned: the process running it stopped before recording an outcome"


@dataclass(frozen=True)
class JobOptions:
    stop: StopFlag | None = None
    clients: Mapping[str, Sender] | None = None


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Callable[[Engine, PushConfig, Clock, JobOptions], JobResult]
    interval: Callable[[PushConfig], float]  # seconds between scheduled runs


def run_retry_job(
    engine: Engine,
    config: PushConfig,
    clock: Clock,
    *,
    clients: Mapping[str, Sender] | None = None,
    stop: StopFlag | None = None,
) -> JobResult:
    """The retry runner as a recorded job: one ``jobs.retry.run_retries`` pass over the rows due
    now; a stop request takes effect between chunks."""

    def body(progress: Progress) -> None:
        r = asyncio.run(run_retries(engine, config, clock, clients=clients, limit=RETRY_RUN_LIMIT, stop=stop))
        progress.examined += r.examined
        progress.changed += r.changed
        for name in ("sent", "failed", "rescheduled", "expired"):
            progress.details[name] = progress.details.get(name, 0) + getattr(r, name)
        progress.stopped = should_stop(stop)

    return recorded(engine, RETRY_JOB, clock, body)


def _optout(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    return run_optout(engine, config, clock, stop=opts.stop)


def _retry(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    return run_retry_job(engine, config, clock, clients=opts.clients, stop=opts.stop)


def _cleanup(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    return run_cleanup(engine, config, clock, stop=opts.stop)


JOBS: dict[str, JobSpec] = {
    "opt-out": JobSpec("opt-out", _optout, lambda c: c.optout_interval),
    RETRY_JOB: JobSpec(RETRY_JOB, _retry, lambda c: c.retry_interval),
    "cleanup": JobSpec("cleanup", _cleanup, lambda c: c.cleanup_interval),
}


def run_job(
    name: str,
    engine: Engine,
    config: PushConfig,
    clock: Clock,
    *,
    clients: Mapping[str, Sender] | None = None,
    stop: StopFlag | None = None,
    min_gap: timedelta | None = None,
) -> JobResult:
    """Run job ``name`` once under its single-instance lock and return the result.

    ``status="skipped"`` (nothing recorded, not an error) when another run holds
    the lock, or - with ``min_gap`` - when the job last succeeded less than
    ``min_gap`` ago: the scheduler passes about one interval, so several
    scheduler processes together run each job once per interval. A manual run
    leaves ``min_gap`` unset. ``clients`` (provider senders) only matter to
    ``retry``. Raises ``ValueError`` for an unknown name.
    """
    spec = JOBS.get(name)
    if spec is None:
        raise ValueError(f"unknown job {name!r}; known jobs: {', '.join(JOBS)}")
    with job_lock(engine, name, clock) as lock:
        if lock is None:
            return _skipped(name, clock, "another run holds the lock")
        if min_gap is not None:
            with engine.connect() as conn:
                last = jt.last_ok_start(conn, name)
            if last is not None and clock.now() - last < min_gap:
                return _skipped(name, clock, f"already ran at {last.isoformat()}")
        with engine.begin() as conn:
            # We hold the lock, so any 'running' row of this job is a dead process's.
            jt.abandon_running(conn, name, clock.now(), ABANDONED)
        result = spec.run(engine, config, clock, JobOptions(stop=AnyStop(stop, lock.lost), clients=clients))
    (log.info if result.ok else log.error)("%s", result.summary())
    return result


def _skipped(name: str, clock: Clock, reason: str) -> JobResult:
    now = clock.now()
    result = JobResult(job=name, status="skipped", started_at=now, finished_at=now, error=reason)
    log.info("%s", result.summary())
    return result
