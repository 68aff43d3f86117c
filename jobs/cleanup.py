"""The database cleanup job (seed 003 "Database cleanup" workflow), daily by default.

1. Quarantine: ``with_errors`` entries whose last error is older than
   ``quarantine_reset_days`` (10) go back to ``valid``; mailbox-full ones
   (failure reason 5) after ``mailbox_full_release_days`` (30). The rule itself
   lives in ``push.quarantine``; ``store.cleanup_quarantine`` applies it.
2. ``qualification_rule.occurrences`` capped at 100,000 (seed 004).
3. ``delivery_log`` rows older than ``log_retention_days`` purged in chunks,
   except ``pending`` / ``retry_pending`` ones (still owed a send).
4. ``exclusion_log`` rows older than ``log_retention_days`` purged in chunks.

Every step is idempotent, each purge chunk is its own transaction, and the stop
flag is honoured between chunks and steps.
"""

from __future__ import annotations

from datetime import timedelta
from sqlalchemy.engine import Engine

from jobs.common import JobResult, Progress, StopFlag, recorded, should_stop
from push.clock import Clock
from push.config import PushConfig
from push.quarantine import QuarantinePolicy
from tables import jobs as jt
from tables import store

JOB = "cleanup"
DEFAULT_CHUNK_SIZE = 10_000


def run_cleanup(
    engine: Engine,
    config: PushConfig,
    clock: Clock,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    stop: StopFlag | None = None,
) -> JobResult:
    """Run the cleanup steps; ``details`` says how many rows each one changed."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    def body(progress: Progress) -> None:
        if _stopping(stop, progress):
            return
        now = clock.now()
        policy = QuarantinePolicy.from_config(config)
        with engine.begin() as conn:
            cutoff = now - min(policy.reset_after, policy.mailbox_full_reset_after)
            candidates = jt.count_with_errors_before(conn, cutoff)
            released = store.cleanup_quarantine(conn, now=now, policy=policy)
        progress.add("quarantine_reset", examined=candidates, changed=released)

        with engine.begin() as conn:
            capped = jt.cap_rule_occurrences(conn, now)
        progress.add("rules_capped", examined=capped, changed=capped)

        retention_cutoff = now - timedelta(days=config.log_retention_days)
        progress.details.setdefault("delivery_logs_purged", 0)
        after_id: int | None = 0
        while after_id is not None and not _stopping(stop, progress):
            with engine.begin() as conn:
                deleted, after_id = jt.purge_delivery_logs(conn, retention_cutoff, after_id, chunk_size)
            progress.add("delivery_logs_purged", examined=deleted, changed=deleted)

        progress.details.setdefault("exclusion_logs_purged", 0)
        after: jt.Keyset | None = None
        while not _stopping(stop, progress):
            with engine.begin() as conn:
                deleted, after = jt.purge_exclusion_logs(conn, retention_cutoff, after, chunk_size)
            progress.add("exclusion_logs_purged", examined=deleted, changed=deleted)
            if after is None:
                break

    return recorded(engine, JOB, clock, body)


def _stopping(stop: StopFlag | None, progress: Progress) -> bool:
    if should_stop(stop):
        progress.stopped = True
    return progress.stopped
