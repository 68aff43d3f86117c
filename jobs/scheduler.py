"""The job scheduler: every registered job on its interval, in the foreground.

    python -m jobs.scheduler [--run-immediately]     # reads PUSH_* (PUSH_DATABASE_URL, PUSH_OPTOUT_INTERVAL, ...)

One APScheduler ``BlockingScheduler`` with one interval job per entry of
``jobs.runner.JOBS`` (``coalesce``, ``max_instances=1``). Each tick calls
``run_job`` with ``min_gap`` a little under the interval, so any number of
scheduler processes on one database run each job about once per interval.

At start, a job whose last successful run (by any process) is older than its
interval runs at once, the others when their interval since that run is over;
the start-up line gives each job's next run time. Before anything is scheduled,
every job's preflight runs (``jobs.runner.preflight``): a job that cannot work
(e.g. retry rows for a provider without settings) stops the start with a
``ConfigError`` - one line and exit status 2 from the command line.

``PUSH_METRICS_PORT`` set: ``/metrics``, ``/healthz`` and ``/readyz`` are served
on it (``push.health``); ready means the database answers, the configured
providers' credentials load, and no job's last run failed.

SIGTERM / SIGINT: no new runs start, a running job finishes the chunk it is on
and commits, then the process exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_STARTED, SchedulerEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler, SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.common import JobResult
from jobs.runner import (JOBS, check_provider, configured_providers, preflight, refresh_quarantine_entries,
                         refresh_retry_backlog, run_job)
from push import logs, metrics
from push.clock import Clock, SystemClock
from push.config import PushConfig
from push.errors import ConfigError
from push.health import Check, HealthServer
from tables import jobs as jt
from tables.engine import make_engine
from tables.migrate import upgrade

log = logging.getLogger("jobs.scheduler")

CLEAN_SHUTDOWN = "scheduler stopped cleanly"
MAX_GAP_SLACK = timedelta(seconds=60)


def min_gap(interval: float) -> timedelta:
    """A successful run this recent (by any process) stands in for this tick's run.

    A bit under the interval - 20 %, at most a minute - so the run's own start
    latency and small clock differences between hosts never make it skip a turn.
    """
    full = timedelta(seconds=interval)
    return full - min(full * 0.2, MAX_GAP_SLACK)


def run_scheduler(
    config: PushConfig,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    stop_event: threading.Event | None = None,
    run_immediately: bool = False,
    on_result: Callable[[JobResult], None] | None = None,
    on_listening: Callable[[HealthServer], None] | None = None,
) -> int:
    """Run the scheduler until ``stop_event`` is set (or SIGTERM/SIGINT, when called
    from the main thread); return the exit status, 0 after a clean shutdown.

    ``run_immediately`` starts every job once right away, whatever its last run.
    ``on_result`` is called with every run's result (including skipped ones), from
    the worker thread that ran it. ``on_listening`` gets the health server once it
    serves (with ``config.metrics_port`` set; port 0 picks a free one).
    Raises ``ConfigError`` before scheduling anything when a job cannot work.
    """
    own_engine = engine is None
    engine = engine if engine is not None else make_engine(config.database_url)
    clock = clock or SystemClock()
    stop = stop_event or threading.Event()
    health: HealthServer | None = None
    metrics.register_on(config.metrics_registry)
    try:
        upgrade(engine)  # a no-op at head; a fresh database gets its tables
        preflight(engine, config)
        state = _State(engine, config)
        scheduler = _build(config, engine, clock, stop, run_immediately, state.chain(on_result), state.last_ok)
        restore_signals = _install_signal_handlers(stop)
        try:
            if config.metrics_port is not None and not stop.is_set():
                health = HealthServer(config.metrics_host, config.metrics_port, state.checks)
                log.info("serving /metrics, /healthz, /readyz on %s:%d", health.host, health.port)
                if on_listening is not None:
                    on_listening(health)
            if not stop.is_set():
                plan = ", ".join(f"{name} every {spec.interval(config):g}s (next {_next_run(scheduler, name)})"
                                 for name, spec in JOBS.items())
                log.info("scheduler starting: %s", plan)
                scheduler.start()  # blocks until _stop_when_set shuts it down
        finally:
            restore_signals()
    finally:
        if health is not None:
            health.close()
        if own_engine:
            engine.dispose()
    log.info(CLEAN_SHUTDOWN)
    return 0


class _State:
    """What /readyz reads: the database, the providers' credentials, each job's last run. Also seeds the
    job gauges from ``job_run`` so a restart does not look like a fresh install."""

    def __init__(self, engine: Engine, config: PushConfig) -> None:
        self.engine = engine
        self.config = config
        self._lock = threading.Lock()
        with engine.connect() as conn:
            runs = jt.last_runs(conn)
            self.last_ok = {name: jt.last_ok_start(conn, name) for name in JOBS}
        self.last_status = {job: status for job, (status, _) in runs.items()}
        for job, started in self.last_ok.items():
            metrics.job_last_success(job, started)
        refresh_retry_backlog(engine, SystemClock())
        refresh_quarantine_entries(engine)

    def chain(self, on_result: Callable[[JobResult], None] | None) -> Callable[[JobResult], None]:
        def record(result: JobResult) -> None:
            if result.status != "skipped":
                with self._lock:
                    self.last_status[result.job] = result.status
            if on_result is not None:
                on_result(result)
        return record

    def checks(self) -> list[Check]:
        out: list[Check] = []
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            out.append(("database", True, ""))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append(("database", False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        for platform in configured_providers(self.config):
            try:
                check_provider(self.config, platform)
                out.append((f"{platform} credentials", True, ""))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                out.append((f"{platform} credentials", False, str(exc)))
        with self._lock:
            failing = sorted(job for job, status in self.last_status.items() if status == "error")
        out.append(("jobs", not failing, f"last run failed: {', '.join(failing)}" if failing else ""))
        return out


def _next_run(scheduler: BlockingScheduler, name: str) -> str:
    when = getattr(scheduler.get_job(name), "next_run_time", None)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds") if when else "-"


def first_run(interval: float, last_ok: datetime | None, now: datetime, run_immediately: bool) -> timedelta:
    """How long from ``now`` until a job's first run: at once when it never succeeded, when its last
    successful run is an interval old or older, or with ``run_immediately``; else when that interval ends."""
    if run_immediately or last_ok is None:
        return timedelta(0)
    return max(timedelta(0), last_ok + timedelta(seconds=interval) - now)


def _build(
    config: PushConfig,
    engine: Engine,
    clock: Clock,
    stop: threading.Event,
    run_immediately: bool,
    on_result: Callable[[JobResult], None] | None,
    last_ok: dict[str, datetime | None] | None = None,
) -> BlockingScheduler:
    # One worker per job: a long opt-out run must not hold up the retry runner.
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(len(JOBS))}, timezone=timezone.utc)
    for name, spec in JOBS.items():
        interval = spec.interval(config)
        # The job's clock may be a test's fake one; APScheduler runs on the wall clock.
        wait = first_run(interval, (last_ok or {}).get(name), clock.now(), run_immediately)
        extra: dict[str, Any] = {"next_run_time": datetime.now(timezone.utc) + wait}
        scheduler.add_job(
            _tick,
            IntervalTrigger(seconds=interval, timezone=timezone.utc),
            args=(name, engine, config, clock, stop, min_gap(interval), on_result),
            id=name,
            name=name,
            coalesce=True,  # after a stall, one catch-up run, not a burst
            max_instances=1,
            misfire_grace_time=max(1, int(interval)),  # late by less than an interval: still run
            **extra,
        )

    def started(_event: SchedulerEvent) -> None:
        threading.Thread(target=_stop_when_set, args=(scheduler, stop), name="scheduler-stop", daemon=True).start()

    scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
    return scheduler


def _tick(
    name: str,
    engine: Engine,
    config: PushConfig,
    clock: Clock,
    stop: threading.Event,
    gap: timedelta,
    on_result: Callable[[JobResult], None] | None,
) -> None:
    if stop.is_set():
        return  # queued just before shutdown: do not start it
    try:
        result = run_job(name, engine, config, clock, stop=stop, min_gap=gap)
    except Exception:  # noqa: BLE001 - e.g. database unreachable; try again next tick
        log.exception("job=%s status=error could not run", name, extra={"job": name, "status": "error"})
        metrics.job_finished(name, "error", None)
        result = JobResult(job=name, status="error", started_at=clock.now(), error="could not run")
        if on_result is not None:
            on_result(result)
        return
    if on_result is not None:
        on_result(result)


def _stop_when_set(scheduler: BaseScheduler, stop: threading.Event) -> None:
    stop.wait()
    log.info("stopping: no new runs; waiting for running jobs to finish their current chunk")
    try:
        scheduler.pause()  # no new runs from here on
        scheduler.shutdown(wait=True)  # waits for running jobs, then wakes the blocked start()
    except SchedulerNotRunningError:
        pass


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop``; returns a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals are only delivered to the main thread

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("received %s again; still waiting for running jobs", signal.Signals(signum).name)
            return
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-immediately", action="store_true", help="run every job once at start")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    args = parser.parse_args(argv)
    fmt = "json" if os.environ.get("PUSH_LOG_FORMAT") == "json" else "text"
    logs.setup(debug=args.debug, fmt=fmt, level=logging.INFO)  # our own per-run lines say more than apscheduler's
    try:
        config = PushConfig.from_env()
        return run_scheduler(config, run_immediately=args.run_immediately)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
