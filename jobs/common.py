"""What every job shares: its result, the stop flag, and the ``job_run`` row it records."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Engine

from push import metrics
from push.clock import Clock
from tables import jobs as jt
from tables.models import JobStatus

log = logging.getLogger("jobs")

ResultStatus = Literal["ok", "error", "skipped"]
ERROR_TEXT_MAX = 4_000


class StopFlag(Protocol):
    """Anything with ``is_set()``, e.g. a ``threading.Event``; jobs check it between chunks."""

    def is_set(self) -> bool: ...


class AnyStop:
    """Set as soon as any of the given flags is (the scheduler's stop, a lost lock, ...)."""

    def __init__(self, *flags: StopFlag | None):
        self._flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self._flags)


def should_stop(stop: StopFlag | None) -> bool:
    return stop is not None and stop.is_set()


@dataclass
class JobResult:
    """One run of a job, as recorded in ``job_run`` (``skipped`` runs are not recorded).

    ``stopped`` means the stop flag ended the run early after a committed chunk;
    the next run resumes where it left off. ``duration`` is wall-clock seconds
    (the injected clock may be frozen). ``error`` holds the error text, or for a
    skipped run the reason it was skipped.
    """

    job: str
    status: ResultStatus
    started_at: datetime
    finished_at: datetime | None = None
    rows_examined: int = 0
    rows_changed: int = 0
    watermark: datetime | None = None
    error: str | None = None
    stopped: bool = False
    run_id: int | None = None
    duration: float = 0.0
    details: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601 text."""
        return {
            k: v.isoformat() if isinstance(v, datetime) else dict(v) if isinstance(v, dict) else v
            for k, v in asdict(self).items()
        }

    def log_fields(self) -> dict[str, Any]:
        """The run's line as ``extra`` for JSON logs (push.logs): stable keys."""
        return {"job": self.job, "status": self.status, "duration": round(self.duration, 3),
                "counts": {"examined": self.rows_examined, "changed": self.rows_changed, **self.details}}

    def summary(self) -> str:
        """The one log line per run."""
        text = (
            f"job={self.job} status={self.status} examined={self.rows_examined} "
            f"changed={self.rows_changed} duration={self.duration:.3f}s"
        )
        if self.stopped:
            text += " stopped-early=yes"
        if self.details:
            text += " " + " ".join(f"{k}={v}" for k, v in self.details.items())
        if self.error:
            text += f" {'reason' if self.status == 'skipped' else 'error'}={self.error!r}"
        return text


@dataclass
class Progress:
    """What a job body has committed so far; survives an exception half-way."""

    examined: int = 0
    changed: int = 0
    watermark: datetime | None = None
    stopped: bool = False
    details: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, *, examined: int = 0, changed: int = 0) -> None:
        self.examined += examined
        self.changed += changed
        self.details[name] = self.details.get(name, 0) + changed


def recorded(engine: Engine, job: str, clock: Clock, body: Callable[[Progress], None]) -> JobResult:
    """Run ``body`` as one recorded run of ``job``.

    The ``job_run`` row is inserted as ``running`` first (visible while the job
    works) and completed afterwards in its own transaction. An exception in
    ``body`` is logged and recorded as ``error`` and the result is returned,
    not raised: the scheduler must keep going, and callers read ``status``.
    The watermark is only kept for ``ok`` runs: incremental jobs resume from
    the last successful one.
    """
    started = clock.now()
    t0 = time.monotonic()
    with engine.begin() as conn:
        run_id = jt.start_run(conn, job, started)
    progress = Progress()
    error: str | None = None
    try:
        body(progress)
    except Exception as exc:  # noqa: BLE001 - recorded in job_run and returned as status=error
        # The run's one line (jobs.runner) carries the error; the traceback is for --debug.
        log.debug("job=%s failed", job, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]
    status = JobStatus.OK if error is None else JobStatus.ERROR
    watermark = progress.watermark if error is None else None
    finished = clock.now()
    with engine.begin() as conn:
        jt.finish_run(
            conn,
            run_id,
            status=status,
            finished_at=finished,
            rows_examined=progress.examined,
            rows_changed=progress.changed,
            error=error,
            watermark=watermark,
        )
    duration = time.monotonic() - t0
    metrics.job_finished(job, "ok" if error is None else "error", duration, started)
    return JobResult(
        job=job,
        status="ok" if error is None else "error",
        started_at=started,
        finished_at=finished,
        rows_examined=progress.examined,
        rows_changed=progress.changed,
        watermark=watermark,
        error=error,
        stopped=progress.stopped,
        run_id=run_id,
        duration=duration,
        details=dict(progress.details),
    )
