"""Retry runner: sends the ``retry_pending`` notifications whose time has come."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, NamedTuple

from sqlalchemy.engine import Engine

from push import metrics
from push.clock import Clock, utc
from push.config import PushConfig
from push.notification import Notification
from jobs.common import StopFlag
from push.pipeline import Pipeline, Sender, load_table
from push.errors import ValidationError
from push.classify import classify
from push.outcomes import FailureReason
from tables import delivery as dq
from tables import store
from tables.retrying import in_transaction

log = logging.getLogger("jobs.retry")
# How a "may have been delivered" outcome's error text starts (push.transport_errors).
IN_DOUBT = "may have been delivered"


class RetryRef(NamedTuple):
    """A retry: its ``delivery_log`` row, by id and by (delivery, seq), and its expiry."""

    row_id: int
    delivery_id: str
    seq: int
    expires_at: datetime | None
    in_doubt: bool = False  # the last attempt may have been delivered


@dataclass
class RetryResult:
    examined: int = 0
    sent: int = 0
    failed: int = 0
    rescheduled: int = 0
    expired: int = 0
    interrupted: int = 0  # claimed by a pass that died mid-send: recorded, never resent
    claimed_elsewhere: int = 0  # another runner claimed them first
    unsent_resends: int = 0

    @property
    def changed(self) -> int:
        return self.examined


async def run_retries(engine: Engine, config: PushConfig, clock: Clock, *, clients: Mapping[str, Sender] | None = None,
                      limit: int = 100_000, stop: StopFlag | None = None) -> RetryResult:
    """One pass: rows due when the pass starts are resent through the normal clients, each at most once;
    rows past their expiry become ``failed``. ``stop`` is checked between chunks and before each
    group of resends; once set, resends in flight finish and are recorded.

    Each row is claimed by compare-and-set just before it is resent (``tables.delivery.claim_retries``),
    so two passes at once (a lost job lock, two schedulers) never resend one row twice. A row claimed
    by a pass that died mid-send is recorded ``interrupted`` (never resent) once it is older than
    ``stale_claim_after(config)``."""
    table = load_table(config)
    pipe = Pipeline(config, engine, clock=clock, table=table, clients=clients)
    result = RetryResult()
    rec = metrics.DeliveryMetrics(config)
    try:
        await pipe.load_rules()
        now = clock.now()  # once per pass: a row rescheduled to "now" waits for the next pass
        result.interrupted = await pipe.db(_close_stale_claims, pipe, now - stale_claim_after(config))
        done = 0
        last_id = 0
        while done < limit and not (stop is not None and stop.is_set()):
            rows = await pipe.db(_due, engine, now, min(config.chunk_size, limit - done), last_id)
            if not rows:
                break
            done += len(rows)
            last_id = rows[-1].id
            result.examined += len(rows)
            jobs, expired = [], []
            for r in rows:
                try:
                    n = Notification.from_json(r.payload, check_expiration=False)
                except ValidationError as exc:
                    expired.append((r, n_placeholder(r), f"stored notification unreadable: {exc}"))
                    continue
                exp = utc(r.expires_at)
                if exp is not None and exp <= now:
                    expired.append((r, n, "validity period over"))
                else:
                    jobs.append((RetryRef(r.id, r.delivery_id, r.seq, exp, _in_doubt(r)), n, r.attempts))
            if expired:
                result.expired += len(expired)
                await pipe.db(_expire, pipe, expired, now)
                rec.expired(expired)

            async def claim(refs: list[Any]) -> list[Any]:
                won = await pipe.db(_claim, pipe, refs, now)
                return [ref for ref in refs if ref.row_id in won]

            async def unclaim(refs: list[Any]) -> None:
                await pipe.db(_unclaim, pipe, refs)

            def record(batch: list[tuple[Any, ...]]) -> None:
                rec_now = clock.now()
                updates = []
                counts = {"sent": 0, "failed": 0, "rescheduled": 0}
                for ref, n, attempts, out in batch:
                    values = pipe.outcome_values(n, attempts, out, ref.expires_at, rec_now)
                    updates.append(store.RetryOutcomeUpdate._make((ref.row_id, pipe.claimer, *values, rec_now)))
                    status = values[0]
                    counts["sent" if status == "sent" else "failed" if status == "failed" else "rescheduled"] += 1

                def write(conn: Any) -> None:
                    written = store.update_retry_outcomes(conn, updates)
                    if written < len(updates):
                        log.warning("retry: %d outcome(s) not written: their rows were claimed by another runner",
                                    len(updates) - written)
                    pipe.record_effects(conn, [(n, out) for _, n, _, out in batch], rec_now)

                pipe.write_outcomes(write)
                rec.outcomes(batch, (u.status for u in updates))
                result.sent += counts["sent"]
                result.failed += counts["failed"]
                result.rescheduled += counts["rescheduled"]

            stats = await pipe.send_many(jobs, claim, record, unclaim, stop=stop)
            result.claimed_elsewhere += stats.claimed_elsewhere
            result.unsent_resends += stats.unsent_resends
            if stats.stopped:
                break
        return result
    finally:
        await pipe.aclose()


def stale_claim_after(config: PushConfig) -> timedelta:
    """How long a claimed retry may go without an outcome before its pass is taken for dead: well past
    the stream timeout (every send in flight ends by then) and the outcome write's own retries."""
    return timedelta(seconds=max(120.0, 4 * config.stream_timeout))


def n_placeholder(row: Any) -> Notification:
    return Notification(token=None, platform=row.platform, app=row.app)


def _in_doubt(row: Any) -> bool:
    """The last attempt may have been delivered (a connection lost or a timeout with it in flight)."""
    return row.failure_reason == int(FailureReason.UNREACHABLE) and IN_DOUBT in (row.error_text or "")


def _due(engine: Engine, now: datetime, limit: int, after_id: int) -> list[Any]:
    with engine.connect() as conn:
        return dq.due_retries(conn, now, limit, after_id)


def _claim(pipe: Pipeline, refs: list[RetryRef], now: datetime) -> set[int]:
    def claim(conn: Any) -> set[int]:
        won = dq.claim_retries(conn, [ref.row_id for ref in refs], pipe.claimer, now)
        in_doubt: dict[str, int] = {}
        for ref in refs:
            if ref.row_id in won and ref.in_doubt:
                in_doubt[ref.delivery_id] = in_doubt.get(ref.delivery_id, 0) + 1
        for delivery_id, n in sorted(in_doubt.items()):
            dq.add_resent_in_doubt(conn, delivery_id, n)
        return won
    return in_transaction(pipe.engine, claim)


def _unclaim(pipe: Pipeline, refs: list[RetryRef]) -> None:
    due = pipe.clock.now()
    in_transaction(pipe.engine, lambda conn: dq.unclaim_retries(conn, [ref.row_id for ref in refs], pipe.claimer, due))


def _close_stale_claims(pipe: Pipeline, before: datetime) -> int:
    """Retries a dead pass claimed and never recorded: ``interrupted``, never resent (at most once)."""
    with pipe.engine.connect() as conn:
        rows = dq.stale_retry_claims(conn, before, 100_000)
    if not rows:
        return 0
    now = pipe.clock.now()
    updates = []
    for row in rows:
        out = classify(row.platform, error="interrupted", table=pipe.table,
                       detail="retry runner stopped while this resend was in flight")
        cols = pipe.outcome_columns(Notification(token=None, platform=row.platform, app="-"), row.attempts, out,
                                    None, now)
        cols["status"] = "failed"
        cols["next_retry_at"] = None
        updates.append(store.RetryOutcomeUpdate._make((row.id, row.claimed_by, *cols.values(), now)))
    log.warning("retry: %d resend(s) found in flight from a pass that stopped; recorded as interrupted", len(rows))
    in_transaction(pipe.engine, lambda conn: store.update_retry_outcomes(conn, updates))
    return len(rows)


def _expire(pipe: Pipeline, expired: list[tuple[Any, Notification, str]], now: datetime) -> None:
    updates = []
    for row, n, why in expired:
        # The last attempt's failure type, reason and text stay: they say why it never got through.
        update = {"id": row.id, "status": "failed", "next_retry_at": None}
        if n.token is None:
            update["error_text"] = why[:500]
        updates.append(update)
    with pipe.engine.begin() as conn:
        store.update_delivery_logs(conn, updates, now=now)


