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
from push import metrics
from push.clock import Clock, SystemClock
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
    # Raises ConfigError when the job cannot work with these settings (checked before a process starts it).
    preflight: Callable[[Engine, PushConfig], None] | None = None


def check_provider(config: PushConfig, platform: str) -> None:
    """The provider's settings are complete and its credentials load (no network)."""
    if platform == "apns":
        from push.apns import ApnsJwt
        from push.tls import make_ssl_context

        config.require_apns()
        if config.apns_auth == "token":
            ApnsJwt(config.apns_key_file or "", config.apns_key_id or "", config.apns_team_id or "",
                    clock=SystemClock())
        else:
            make_ssl_context(config.ca_file, client_cert=config.apns_cert_file, client_key=config.apns_cert_key_file)
    elif platform == "fcm":
        from push.fcm import load_service_account

        config.require_fcm()
        load_service_account(config.fcm_credentials_file or "")


def configured_providers(config: PushConfig) -> list[str]:
    return [p for p, on in (("apns", config.apns_auth is not None), ("fcm", bool(config.fcm_credentials_file))) if on]


def _retry_preflight(engine: Engine, config: PushConfig) -> None:
    # Only the providers that have rows waiting: a deployment without FCM needs no FCM settings.
    with engine.connect() as conn:
        platforms = jt.retry_platforms(conn)
    for platform in platforms:
        check_provider(config, platform)


def preflight(engine: Engine, config: PushConfig, names: list[str] | None = None) -> None:
    """Fail fast (ConfigError) when a job about to be run or scheduled cannot work."""
    for name in names or list(JOBS):
        check = JOBS[name].preflight
        if check is not None:
            check(engine, config)


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

    result = recorded(engine, RETRY_JOB, clock, body)
    refresh_retry_backlog(engine, clock)
    return result


def refresh_retry_backlog(engine: Engine, clock: Clock) -> None:
    """push_retry_backlog, once per retry run (and at scheduler start), never per scrape."""
    try:
        with engine.connect() as conn:
            metrics.retry_backlog(*jt.retry_backlog(conn, clock.now()))
    except Exception:  # noqa: BLE001 - a gauge must never fail the job; the run's own line tells
        log.debug("could not refresh the retry backlog gauge", exc_info=True)


def refresh_quarantine_entries(engine: Engine) -> None:
    """push_quarantine_entries, after each opt-out and cleanup run (and at scheduler start)."""
    try:
        with engine.connect() as conn:
            metrics.quarantine_entries(jt.quarantine_by_status(conn))
    except Exception:  # noqa: BLE001 - as above
        log.debug("could not refresh the quarantine gauge", exc_info=True)


def _optout(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    result = run_optout(engine, config, clock, stop=opts.stop)
    refresh_quarantine_entries(engine)
    return result


def _retry(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    return run_retry_job(engine, config, clock, clients=opts.clients, stop=opts.stop)


def _cleanup(engine: Engine, config: PushConfig, clock: Clock, opts: JobOptions) -> JobResult:
    result = run_cleanup(engine, config, clock, stop=opts.stop)
    refresh_quarantine_entries(engine)
    return result


JOBS: dict[str, JobSpec] = {
    "opt-out": JobSpec("opt-out", _optout, lambda c: c.optout_interval),
    RETRY_JOB: JobSpec(RETRY_JOB, _retry, lambda c: c.retry_interval, _retry_preflight),
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
    (log.info if result.ok else log.error)("%s", result.summary(), extra=result.log_fields())
    return result


def _skipped(name: str, clock: Clock, reason: str) -> JobResult:
    now = clock.now()
    result = JobResult(job=name, status="skipped", started_at=now, finished_at=now, error=reason)
    metrics.job_finished(name, "skipped", None)
    log.info("%s", result.summary(), extra=result.log_fields())
    return result
