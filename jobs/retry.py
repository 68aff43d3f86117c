"""Retry runner: sends the ``retry_pending`` notifications whose time has come."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, NamedTuple

from sqlalchemy.engine import Engine

from push import metrics
from push.clock import Clock, utc
from push.config import PushConfig
from push.notification import Notification
from jobs.common import StopFlag
from push.pipeline import Pipeline, Sender, load_table
from push.errors import ValidationError
from tables import delivery as dq
from tables import store


class RetryRef(NamedTuple):
    """A retry: its ``delivery_log`` row, by id and by (delivery, seq), and its expiry."""

    row_id: int
    delivery_id: str
    seq: int
    expires_at: datetime | None


@dataclass
class RetryResult:
    examined: int = 0
    sent: int = 0
    failed: int = 0
    rescheduled: int = 0
    expired: int = 0

    @property
    def changed(self) -> int:
        return self.examined


async def run_retries(engine: Engine, config: PushConfig, clock: Clock, *, clients: Mapping[str, Sender] | None = None,
                      limit: int = 100_000, stop: StopFlag | None = None) -> RetryResult:
    """One pass: rows due when the pass starts are resent through the normal clients, each at most once;
    rows past their expiry become ``failed``. ``stop`` is checked between chunks."""
    table = load_table(config)
    pipe = Pipeline(config, engine, clock=clock, table=table, clients=clients)
    result = RetryResult()
    rec = metrics.DeliveryMetrics(config)
    try:
        await pipe.load_rules()
        done = 0
        last_id = 0
        now = clock.now()  # once per pass: a row rescheduled to "now" waits for the next pass
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
                    jobs.append((RetryRef(r.id, r.delivery_id, r.seq, exp), n, r.attempts))
            if expired:
                result.expired += len(expired)
                await pipe.db(_expire, pipe, expired, now)
                rec.expired(expired)

            async def launch(refs: list[Any]) -> None:
                await pipe.db(_launch, engine, [ref.row_id for ref in refs])

            def record(batch: list[tuple[Any, ...]]) -> None:
                rec_now = clock.now()
                updates = []
                for ref, n, attempts, out in batch:
                    cols = pipe.outcome_columns(n, attempts, out, ref.expires_at, rec_now)
                    updates.append({"id": ref.row_id, **cols})
                    if cols["status"] == "sent":
                        result.sent += 1
                    elif cols["status"] == "failed":
                        result.failed += 1
                    else:
                        result.rescheduled += 1
                with engine.begin() as conn:
                    store.update_delivery_logs(conn, updates, now=rec_now)
                    pipe.record_effects(conn, [(n, out) for _, n, _, out in batch], rec_now)
                rec.outcomes(batch, (u["status"] for u in updates))

            await pipe.send_many(jobs, launch, record)
        return result
    finally:
        await pipe.aclose()


def n_placeholder(row: Any) -> Notification:
    return Notification(token=None, platform=row.platform, app=row.app)


def _due(engine: Engine, now: datetime, limit: int, after_id: int) -> list[Any]:
    with engine.connect() as conn:
        return dq.due_retries(conn, now, limit, after_id)


def _launch(engine: Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        dq.mark_rows_launched(conn, ids)


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


