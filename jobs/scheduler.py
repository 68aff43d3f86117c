"""The job scheduler: every registered job on its interval, in the foreground.

    python -m jobs.scheduler [--run-immediately]     # reads PUSH_* (PUSH_DATABASE_URL, PUSH_OPTOUT_INTERVAL, ...)

One APScheduler ``BlockingScheduler`` with one interval job per entry of
``jobs.runner.JOBS`` (``coalesce``, ``max_instances=1``). Each tick calls
``run_job`` with ``min_gap`` a little under the interval, so any number of
scheduler processes on one database run each job about once per interval.

SIGTERM / SIGINT: no new runs start, a running job finishes the chunk it is on
and commits, then the process exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
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
from sqlalchemy.engine import Engine

from jobs.common import JobResult
from jobs.runner import JOBS, run_job
from push.clock import Clock, SystemClock
from push.config import PushConfig
from push.errors import ConfigError
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
) -> int:
    """Run the scheduler until ``stop_event`` is set (or SIGTERM/SIGINT, when called
    from the main thread); return the exit status, 0 after a clean shutdown.

    ``run_immediately`` starts every job once right away instead of after its
    first interval. ``on_result`` is called with every run's result (including
    skipped ones), from the worker thread that ran it.
    """
    own_engine = engine is None
    engine = engine if engine is not None else make_engine(config.database_url)
    clock = clock or SystemClock()
    stop = stop_event or threading.Event()
    try:
        upgrade(engine)  # a no-op at head; a fresh database gets its tables
        scheduler = _build(config, engine, clock, stop, run_immediately, on_result)
        restore_signals = _install_signal_handlers(stop)
        try:
            if not stop.is_set():
                plan = ", ".join(f"{name} every {spec.interval(config):g}s" for name, spec in JOBS.items())
                log.info("scheduler starting: %s", plan)
                scheduler.start()  # blocks until _stop_when_set shuts it down
        finally:
            restore_signals()
    finally:
        if own_engine:
            engine.dispose()
    log.info(CLEAN_SHUTDOWN)
    return 0


def _build(
    config: PushConfig,
    engine: Engine,
    clock: Clock,
    stop: threading.Event,
    run_immediately: bool,
    on_result: Callable[[JobResult], None] | None,
) -> BlockingScheduler:
    # One worker per job: a long opt-out run must not hold up the retry runner.
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(len(JOBS))}, timezone=timezone.utc)
    for name, spec in JOBS.items():
        interval = spec.interval(config)
        extra: dict[str, Any] = {"next_run_time": datetime.now(timezone.utc)} if run_immediately else {}
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
        log.exception("job=%s status=error could not run", name)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "alembic"):  # our own per-run lines say more
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = PushConfig.from_env()
        return run_scheduler(config, run_immediately=args.run_immediately)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
