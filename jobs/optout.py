"""The opt-out job (seed 003 ``mobileAppOptOutMgt``, every 6 hours).

Subscriptions whose token was declared unregistered / no longer valid - a
``quarantine`` row in status ``quarantine`` with failure type ``hard`` and
reason 1 (user unknown) - get ``disabled = true``, ``disabled_at``,
``disabled_reason = 1`` and one ``exclusion_log`` row (source ``opt_out_job``).
An invalidation older than the token's latest registration is stale - the app
registered the token again after Apple's 410 timestamp (or, for answers without
a timestamp such as FCM's, after we recorded the failure) - so it stays enabled.

Incremental: only quarantine rows updated after the last successful run's
watermark (minus ``overlap``, for clock skew and late commits) are examined.
Chunked: each chunk of quarantine rows, in ``(updated_at, id)`` keyset order,
is one transaction with one set-based UPDATE and one batched INSERT. A run
stopped or failed half-way leaves whole chunks done and is simply resumed by
the next one: disabled rows are not touched again and the exclusion log's
unique key (source, subscription_id, event_at) absorbs any repeat.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from jobs.common import JobResult, Progress, StopFlag, recorded, should_stop
from push import metrics
from tables.retrying import in_transaction
from push.clock import Clock
from push.config import PushConfig
from push.outcomes import FailureReason
from tables import jobs as jt
from tables import store
from tables.models import ExclusionSource

JOB = "opt-out"
DEFAULT_CHUNK_SIZE = 50_000
# Rows written up to this long before the previous run's watermark are examined
# again: covers writers whose clock lags ours and transactions that committed
# after that run read past their updated_at. Re-examining is cheap and harmless.
OVERLAP = timedelta(minutes=10)
REASON_TEXT = "token unregistered or no longer valid (quarantine: hard, user unknown)"


def run_optout(
    engine: Engine,
    config: PushConfig,
    clock: Clock,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    stop: StopFlag | None = None,
    overlap: timedelta = OVERLAP,
    full: bool = False,
) -> JobResult:
    """Disable the subscriptions of unregistered tokens; see the module docstring.

    ``full=True`` ignores the watermark and examines every quarantine row (a
    repair run). ``rows_examined`` counts the unregistered-token quarantine rows
    looked at, ``rows_changed`` the subscriptions disabled.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    def body(progress: Progress) -> None:
        started = clock.now()
        with engine.connect() as conn:
            previous = None if full else jt.last_ok_watermark(conn, JOB)
        since = None if previous is None else previous - overlap
        progress.watermark = previous
        progress.details["chunks"] = 0
        after: jt.Keyset | None = None
        while True:
            if should_stop(stop):
                progress.stopped = True
                return  # watermark stays at the last committed chunk: the next run resumes there

            def chunk(conn: Any, after: jt.Keyset | None = after) -> tuple[list[jt.Keyset], list[Any], list[Any]]:
                keys = jt.unregistered_chunk(conn, since, after, chunk_size)
                if not keys:
                    return keys, [], []
                now = clock.now()
                disabled = jt.disable_unregistered(conn, since, after, keys[-1], now)
                excluded = [_exclusion(row) for row in disabled]
                store.insert_exclusions(conn, excluded, now=now)
                return keys, disabled, excluded

            keys, disabled, excluded = in_transaction(engine, chunk)  # again, whole, after a deadlock
            if not keys:
                break
            metrics.exclusions(excluded)
            after = keys[-1]
            progress.examined += len(keys)
            progress.changed += len(disabled)
            progress.details["chunks"] += 1
            progress.watermark = _later(previous, after.at)
            if len(keys) < chunk_size:
                break
        # Everything updated before this run started has been examined.
        progress.watermark = started

    return recorded(engine, JOB, clock, body)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _exclusion(row: Any) -> dict[str, Any]:
    return {
        "subscription_id": row.id,
        "token": row.token,
        "platform": row.platform,
        "app": row.app,
        "failure_reason": int(FailureReason.USER_UNKNOWN),
        "reason_text": REASON_TEXT,
        "source": ExclusionSource.OPT_OUT_JOB.value,
        "event_at": row.disabled_at,  # the unique key: one log row per disable event
    }
