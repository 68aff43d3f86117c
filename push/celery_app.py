"""Celery integration (``pip install 'push-feedback[celery]'``): one task per shard of a prepared delivery.

Brokers: RabbitMQ (``PUSH_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//``) or Redis
(``redis://127.0.0.1:6379/0``). Postgres is the shared ledger (SQLite is refused).

Delivery semantics of the task, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a shard's message is
  acknowledged after it ran, so a worker killed mid-shard leaves it unacknowledged
  and the broker hands it to another worker (RabbitMQ at once, when the dead
  worker's connection closes; Redis after ``PUSH_BROKER_VISIBILITY_TIMEOUT``).
  That worker takes the shard's lease, records the dead worker's claimed rows
  ``interrupted`` (never resent) and sends the rest.
* A shard whose lease is held (a redelivery while the first worker is merely
  slow, as a Redis visibility timeout does) is *not* acknowledged away: the task
  is retried after ``BUSY_RETRY_SECONDS`` until the lease is free; by then the
  shard is done (nothing pending: the retry ends at once) or its holder died
  (the retry finishes the shard).
* ``worker_prefetch_multiplier=1``: a worker holds one shard at a time, so a
  slow worker does not sit on shards others could send.
* SIGTERM to a worker (Celery's warm shutdown) drains: the sends in flight
  finish and are recorded, nothing new starts, and the shard goes back to the
  queue (``Reject(requeue=True)``) for another worker to finish.

Each worker process keeps one event loop, one engine and one ``ClientPool``
for its whole life, so HTTP/2 connections and OAuth / JWT credentials carry
over from shard to shard. ``push-feedback worker`` runs Celery's solo pool
(one process: one loop, one core); run one worker per core.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Coroutine, Sequence, TypeVar

try:
    from celery import Celery, signals
    from celery.exceptions import Reject
except ImportError as exc:  # pragma: no cover - depends on the extra
    from push.errors import ConfigError
    raise ConfigError("celery", "the Celery integration needs the extra: pip install 'push-feedback[celery]'") from exc

from push.clock import SystemClock
from push.config import PushConfig
from push.errors import ConfigError, StorageError
from push.pipeline import load_table
from push.shards import ClientPool, Prepared, Shard, ShardResult, require_shared_ledger, send_shard
from tables.engine import make_engine

log = logging.getLogger("push.celery")
T = TypeVar("T")

SHARD_TASK = "push_feedback.send_shard"
BUSY_RETRY_SECONDS = 2.0  # a shard held by another worker is asked for again after this
STORAGE_RETRY_MAX_SECONDS = 60  # database trouble: retried with backoff up to this, never dropped


def make_app(config: PushConfig | None = None) -> Celery:
    """A Celery app for push-feedback's shard tasks, configured from ``config`` (``PUSH_*``)."""
    config = config or PushConfig.from_env()
    if not config.broker_url:
        raise ConfigError("PUSH_BROKER_URL", "is required for workers: amqp://guest:guest@127.0.0.1:5672// "
                          "(RabbitMQ) or redis://127.0.0.1:6379/0 (Redis)")
    app = Celery("push_feedback", broker=config.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=config.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True,  # progress and outcomes are in the ledger, not in a result backend
        broker_transport_options=transport_options(config),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    app.task(name=SHARD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
             autoretry_for=(StorageError,), retry_backoff=True, retry_backoff_max=STORAGE_RETRY_MAX_SECONDS,
             retry_jitter=True)(_shard_task)
    return app


def transport_options(config: PushConfig) -> dict[str, Any]:
    """Redis: how long a delivered, unacknowledged shard waits before it is delivered again, and a sweep
    for such shards often enough to honour it (kombu's default sweep runs every ~100 s). RabbitMQ needs
    none: a dead consumer's messages come back when its connection closes."""
    if not (config.broker_url or "").startswith(("redis", "rediss")):
        return {}
    timeout = config.broker_visibility_timeout
    return {"visibility_timeout": timeout, "unacked_restore_interval": max(1, min(10, int(timeout // 4))),
            "unacked_restore_throttle": 1}


def enqueue(app: Celery, prepared: Prepared | str, shards: Sequence[Shard], *, queue: str | None = None) -> int:
    """One task per shard on ``queue`` (default: the app's). Returns how many were sent."""
    delivery_id = prepared if isinstance(prepared, str) else prepared.delivery_id
    with app.producer_or_acquire() as producer:
        for s in shards:
            app.send_task(SHARD_TASK, args=[delivery_id, s.index, s.seq_from, s.seq_to], queue=queue,
                          producer=producer)
    return len(shards)


# --------------------------------------------------------------------------- the worker process


class WorkerState:
    """What one worker process keeps across tasks: settings, engine, event loop, provider clients."""

    def __init__(self, config: PushConfig):
        self.pid = os.getpid()
        self.config = config
        self.clock = SystemClock()
        self.table = load_table(config)
        self.engine = make_engine(config.database_url)
        require_shared_ledger(self.engine)
        self.loop = asyncio.new_event_loop()
        self.pool = ClientPool(config, clock=self.clock, table=self.table)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.pool.aclose())
        finally:
            self.loop.close()
            self.engine.dispose()


_state: WorkerState | None = None
_state_lock = threading.Lock()
# Set by a warm shutdown (SIGTERM): the shard in progress drains and goes back to the queue.
DRAIN = threading.Event()


def worker_state() -> WorkerState:
    """This process's state, made on first use (after a fork: a child never reuses its parent's)."""
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            _state = WorkerState(PushConfig.from_env())
        return _state


def _shard_task(task: Any, delivery_id: str, index: int, seq_from: int, seq_to: int) -> dict[str, Any]:
    w = worker_state()
    shard = Shard(index, seq_from, seq_to)
    log.info("delivery %s shard %d (seqs %d-%d): started", delivery_id, index, seq_from, seq_to)
    result: ShardResult = w.run(send_shard(delivery_id, shard, w.config, engine=w.engine, clients=w.pool,
                                           clock=w.clock, table=w.table, stop=DRAIN))
    if result.busy:
        log.info("delivery %s shard %d: held by another worker; asked for again in %gs", delivery_id, index,
                 BUSY_RETRY_SECONDS)
        raise task.retry(countdown=BUSY_RETRY_SECONDS, max_retries=None)
    if result.stopped:
        why = "its lease ended with its database session" if result.lease_lost else "draining"
        log.warning("delivery %s shard %d: %s after %d sends; given back to the queue", delivery_id, index, why,
                    result.sent)
        raise Reject(f"shard {index} of {delivery_id}: {why}", requeue=True)
    log.info("delivery %s shard %d: done: %d sent, %d interrupted%s", delivery_id, index, result.sent,
             result.interrupted, "; delivery finished" if result.finished_delivery else "")
    return result.as_dict()


@signals.worker_shutting_down.connect
def _drain_on_shutdown(**_: Any) -> None:
    DRAIN.set()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_state(**_: Any) -> None:
    global _state
    state, _state = _state, None
    if state is not None and state.pid == os.getpid():
        try:
            state.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            log.warning("closing the worker's connections failed", exc_info=True)


def __getattr__(name: str) -> Any:
    # ``celery -A push.celery_app worker`` finds ``app``: built on first use, from PUSH_* at that time.
    if name == "app":
        globals()["app"] = made = make_app()
        return made
    raise AttributeError(name)
