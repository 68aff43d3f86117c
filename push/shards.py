"""One delivery sent by many worker processes: prepare it once, then send it shard by shard.

Engine-agnostic: nothing here knows a task queue. ``push.celery_app`` is the
Celery integration; any other engine needs the same three calls.

* ``prepare(notifications, config, delivery)`` runs the delivery's analysis as
  ``send_batch`` does (streamed, in chunks: exclusions, quarantine, denylist,
  duplicates), writing every notification's ``delivery_log`` row — ``pending``
  with the notification in ``payload``, or ``excluded`` — and sends nothing.
  Then it records the layout: ``prepared_count`` notifications, seqs cut into
  shards of ``shard_size``.
* ``shards(engine, delivery_id)`` lists them: ``Shard(index, seq_from, seq_to)``.
* ``send_shard(delivery_id, shard, config, engine=..., clients=...)`` sends one:
  it takes the shard's lease (``tables.locks.named_lock``: a session-level
  Postgres advisory lock), reads the shard's ``pending`` rows, records the ones
  a dead worker had claimed as ``interrupted`` (the resume rule of
  ``send_batch``: at most once beats a duplicate push) and sends the rest
  through ``Pipeline.send_many`` with ``send_batch``'s own claim, record and
  unclaim, so there is one send / classify / record path. A shard whose lease is
  held elsewhere is not touched (``ShardResult.busy``): the caller tries again
  later. The worker that finds no ``pending`` row left in the delivery writes
  its summary.

Exactly once across workers rests on two things already in the ledger: a
shard is sent by one lease holder at a time, and every send is claimed by a
compare-and-set on its row before it leaves (``tables.delivery.claim_first_sends``),
so even a worker that lost its lease and has not noticed yet cannot send a row
another one claimed. A worker notices a lost lease (its database session was
terminated) before its next claim and stops sending that shard.

``send_batch`` stays the embedded, one-process form: it streams analysis
straight into the same ``send_many`` instead of writing every row and reading
it back, which would cost a second pass over the rows and keep the first
send waiting for the whole analysis.

Shared state is Postgres: the quarantine counters, qualification rules and
reports are written with key-ordered row locks and retried on deadlock
(``tables.retrying``), so many workers at once lose no increment. SQLite runs
one writer on one host; ``require_shared_ledger`` refuses a multi-worker
delivery on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Iterable, Mapping

from sqlalchemy.engine import Engine

from push.clock import Clock, SystemClock
from push.config import PushConfig
from push.errors import ConfigError, DeliveryBusy, StorageError, ValidationError
from push.notification import Notification, check_delivery_id
from push.outcome_table import OutcomeTable
from push.pipeline import (AnyOf, DeliveryReport, Job, Pipeline, Sender, SendRef, _chunks, _Delivery,
                           delivery_lock_name, load_table, read_report, write_summary)
from tables import delivery as dq
from tables import delivery_input
from tables import shards as sq
from tables import store
from tables.engine import make_engine
from tables.locks import current_holder, named_lock
from tables.migrate import upgrade
from tables.retrying import in_transaction

log = logging.getLogger("push.shards")


@dataclass(frozen=True)
class Shard:
    """Seqs ``seq_from`` .. ``seq_to`` (inclusive) of a prepared delivery."""

    index: int
    seq_from: int
    seq_to: int

    def __len__(self) -> int:
        return self.seq_to - self.seq_from + 1


def layout(count: int, shard_size: int) -> list[Shard]:
    return [Shard(i, lo, min(lo + shard_size, count) - 1) for i, lo in enumerate(range(0, count, shard_size))]


@dataclass
class Prepared:
    """A delivery ready for workers: ``count`` notifications in shards of ``shard_size``."""

    delivery_id: str
    count: int
    shard_size: int
    already_prepared: bool  # an earlier prepare finished: nothing was analysed again
    report: DeliveryReport  # the ledger right after analysis (exclusions done, the rest pending)

    @property
    def shards(self) -> list[Shard]:
        return layout(self.count, self.shard_size)


@dataclass
class ShardResult:
    delivery_id: str
    index: int
    busy: bool = False  # another worker holds the shard's lease: nothing was read or sent
    sent: int = 0  # sends claimed and recorded by this call
    interrupted: int = 0  # claimed by a worker that died before recording them: recorded, never resent
    claimed_elsewhere: int = 0
    stopped: bool = False  # a stop (drain) or a lost lease ended it early: the shard has rows left
    lease_lost: bool = False
    finished_delivery: bool = False  # no pending row was left in the delivery: its summary was written
    unsent_resends: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_lock_name(delivery_id: str, index: int) -> str:
    """The lease of one shard, in the lock space of ``tables.locks`` (fits ``job_lock.job``)."""
    digest = hashlib.blake2b(delivery_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"shard:{digest}:{index}"


def require_shared_ledger(engine_or_url: Engine | str) -> None:
    """Refuse a multi-worker delivery on SQLite (one writer, one host): one line naming the setting."""
    name = engine_or_url.dialect.name if isinstance(engine_or_url, Engine) else str(engine_or_url).split(":", 1)[0]
    if not name.startswith("postgresql"):
        raise ConfigError("PUSH_DATABASE_URL", "a delivery sent by many workers needs PostgreSQL as the shared "
                          f"ledger ({name} is one writer on one host); use send_batch / `push-feedback send` there")


def check_shard_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValidationError("shard_size", f"{value!r} is not a whole number from 1 to 1000000", limit=1_000_000)
    return value


# --------------------------------------------------------------------------- prepare


def prepare(notifications: Iterable[Notification | Mapping[str, Any]], config: PushConfig | None = None,
            delivery: str | None = None, *, shard_size: int | None = None, engine: Engine | None = None,
            clock: Clock | None = None, table: OutcomeTable | None = None, force: bool = False) -> Prepared:
    """Analyse and write a delivery's rows without sending; return its shard layout.

    ``shard_size`` defaults to ``config.shard_size``; giving the id of a delivery already
    prepared returns its recorded layout (a different explicit ``shard_size`` is an error) and
    analyses nothing again, since workers may be sending it. A prepare that stopped half way
    (crash, bad input) is resumed like ``send_batch``: what is written stays, the rest is analysed.
    """
    config = config or PushConfig.from_env()
    clock = clock or SystemClock()
    table = table or load_table(config)
    if shard_size is not None:
        check_shard_size(shard_size)
    if delivery is not None:
        check_delivery_id(delivery)
    delivery_id = delivery or uuid.uuid4().hex
    own_engine = engine is None
    engine = engine or make_engine(config.database_url)
    pipe = Pipeline(config, engine, clock=clock, table=table)
    try:
        upgrade(engine)
        chunks = _chunks(notifications, config.chunk_size)
        first = list(islice(chunks, 1))
        _require_settings(config, first[0] if first else [])
        with named_lock(engine, delivery_lock_name(delivery_id), clock) as lease:
            if lease is None:
                raise DeliveryBusy(delivery_id, current_holder(engine, delivery_lock_name(delivery_id)))
            head = first[0] if first else []
            count = len(notifications) if hasattr(notifications, "__len__") else None  # type: ignore[arg-type]
            with engine.begin() as conn:
                row = dq.delivery_row(conn, delivery_id)
                resumed = dq.ensure_delivery(conn, delivery_id, delivery, clock.now())
                delivery_input.check_input(conn, delivery_id, head, count, resumed=resumed, force=force)
            if row is not None and row.prepared_count is not None:
                if shard_size is not None and shard_size != row.shard_size:
                    raise ValidationError("shard_size", f"delivery {delivery_id} was prepared with shard size "
                                          f"{row.shard_size}; its layout cannot change")
                return Prepared(delivery_id, row.prepared_count, row.shard_size, True, read_report(engine, delivery_id))
            size = shard_size or config.shard_size
            d = _Delivery(pipe, delivery_id)
            seqs = 0
            for chunk in (first[0], *chunks) if first else ():
                if lease.lost.is_set():
                    raise StorageError(f"database error during delivery: {delivery_id}'s lease ended with its "
                                       "database session while it was being prepared (prepare it again to resume)")
                _require_settings(config, chunk)
                d.analyse(chunk)  # rows written pending (or excluded); the send jobs it returns are the workers'
                seqs = chunk[-1][0] + 1
            with engine.begin() as conn:
                sq.save_layout(conn, delivery_id, seqs, size, clock.now())
            report = read_report(engine, delivery_id)
            write_summary(engine, report, clock.now() if report.pending == 0 else None)
            log.info("delivery %s prepared: %d notifications, %d to send in %d shards of %d", delivery_id, seqs,
                     report.pending, len(layout(seqs, size)), size)
            return Prepared(delivery_id, seqs, size, False, report)
    finally:
        pipe.shutdown()
        if own_engine:
            engine.dispose()


def _require_settings(config: PushConfig, chunk: list[tuple[int, Notification]]) -> None:
    # The provider settings the chunk needs, before its rows are written (clients are the workers').
    for platform in {n.platform for _, n in chunk if n.token}:
        getattr(config, f"require_{platform}")()


def shards(engine: Engine, delivery_id: str) -> list[Shard]:
    """The shards of a prepared delivery (``ValidationError`` when it was not prepared)."""
    return layout(*_layout_of(engine, delivery_id))


def unfinished_shards(engine: Engine, delivery_id: str) -> list[Shard]:
    """The shards that still hold ``pending`` rows (what a re-enqueue needs to send)."""
    count, size = _layout_of(engine, delivery_id)
    with engine.connect() as conn:
        left = {p.shard for p in sq.progress(conn, delivery_id, size) if p.waiting or p.in_flight}
    return [s for s in layout(count, size) if s.index in left]


def _layout_of(engine: Engine, delivery_id: str) -> tuple[int, int]:
    with engine.connect() as conn:
        row = dq.delivery_row(conn, delivery_id)
    if row is None:
        raise ValidationError("delivery", f"unknown delivery id {delivery_id!r}")
    if row.prepared_count is None:
        raise ValidationError("delivery", f"delivery {delivery_id} was not prepared for workers")
    return row.prepared_count, row.shard_size


# --------------------------------------------------------------------------- send


class ClientPool:
    """Provider clients for the life of a worker process: their HTTP/2 connections and OAuth / JWT
    credentials outlive a shard instead of costing a TLS handshake and a token per shard. Use it
    from one event loop (the clients' connections belong to it)."""

    def __init__(self, config: PushConfig, *, clock: Clock | None = None, table: OutcomeTable | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.table = table or load_table(config)
        self._clients: dict[str, Sender] = {}

    def for_platforms(self, platforms: Iterable[str]) -> dict[str, Sender]:
        for platform in platforms:
            if platform not in self._clients:
                if platform == "apns":
                    from push.apns import ApnsClient
                    self._clients[platform] = ApnsClient(self.config, clock=self.clock, table=self.table)
                elif platform == "fcm":
                    from push.fcm import FcmClient
                    self._clients[platform] = FcmClient(self.config, clock=self.clock, table=self.table)
                else:  # rows are written from validated notifications
                    raise ValidationError("platform", f"unknown platform {platform!r}")
        return dict(self._clients)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.aclose()


async def send_shard(delivery_id: str, shard: Shard, config: PushConfig, *, engine: Engine,
                     clients: ClientPool | Mapping[str, Sender] | None = None, clock: Clock | None = None,
                     table: OutcomeTable | None = None, stop: Any = None) -> ShardResult:
    """Send one shard's ``pending`` rows, holding its lease; see the module docstring.

    ``clients``: a ``ClientPool`` kept by the worker (or ready clients); without it the call
    makes its own and closes them. ``stop`` (anything with ``is_set()``): a drain — the sends in
    flight finish and are recorded, the rest stay ``pending`` and the result says ``stopped``.
    """
    clock = clock or SystemClock()
    pool = clients if isinstance(clients, ClientPool) else None
    own_pool = clients is None
    if own_pool:
        pool = ClientPool(config, clock=clock, table=table)
    table = table or (pool.table if pool is not None else load_table(config))
    result = ShardResult(delivery_id, shard.index)
    loop = asyncio.get_running_loop()
    leases = ExitStack()
    pipe: Pipeline | None = None
    try:
        name = shard_lock_name(delivery_id, shard.index)
        lease = await loop.run_in_executor(None, lambda: leases.enter_context(named_lock(engine, name, clock)))
        if lease is None:
            result.busy = True
            return result
        rows = await loop.run_in_executor(None, _read_pending, engine, delivery_id, shard)
        notes = [(r, Notification.from_json(r.payload or "{}", check_expiration=False)) for r in rows]
        platforms = {n.platform for _, n in notes}
        ready = pool.for_platforms(platforms) if pool is not None else dict(clients or {})  # type: ignore[arg-type]
        pipe = Pipeline(config, engine, clock=clock, table=table, clients=ready)
        d = _Delivery(pipe, delivery_id)
        await pipe.load_rules()
        now = clock.now()
        # Claimed but never recorded: the worker that held this shard before us died mid-send (we hold
        # the lease now, so no live worker is sending them). They may have been delivered: never resent.
        interrupted = [d.interrupted_update(r.seq, n, r.attempts, now) for r, n in notes if r.attempts > 0]
        if interrupted:
            await pipe.db(in_transaction, engine, lambda conn: store.update_delivery_logs(conn, interrupted, now=now))
            result.interrupted = len(interrupted)
        # Analysis did not keep what it saw of the token: its quarantine entry is looked up per outcome.
        jobs: list[Job] = [(SendRef(delivery_id, r.seq, False), n, 0) for r, n in notes if r.attempts == 0]

        async def claim(refs: list[Any]) -> list[Any]:
            return await pipe.db(d.claim, refs)  # type: ignore[union-attr]

        async def unclaim(refs: list[Any]) -> None:
            await pipe.db(d.unclaim, refs)  # type: ignore[union-attr]

        stats = await pipe.send_many(jobs, claim, d.record, unclaim, stop=AnyOf(stop, lease.lost))
        result.sent, result.claimed_elsewhere = stats.claimed, stats.claimed_elsewhere
        result.unsent_resends = stats.unsent_resends
        result.lease_lost = lease.lost.is_set()
        result.stopped = stats.stopped or result.lease_lost or stats.given_back > 0
        if not result.stopped:
            result.finished_delivery = await pipe.db(_finish_if_last, engine, delivery_id, clock)
        return result
    finally:
        if pipe is not None:
            await pipe.aclose_clients()  # only clients it made itself; the pool's stay open
        if own_pool and pool is not None:
            await pool.aclose()
        await loop.run_in_executor(None, leases.close)
        if pipe is not None:
            pipe.shutdown()


def _read_pending(engine: Engine, delivery_id: str, shard: Shard) -> list[sq.PendingRow]:
    with engine.connect() as conn:
        return sq.pending_rows(conn, delivery_id, shard.seq_from, shard.seq_to)


def _finish_if_last(engine: Engine, delivery_id: str, clock: Clock) -> bool:
    """Write the delivery summary once no row is ``pending``: every shard finishing checks after its
    own outcomes are committed, so the last one to finish always sees zero (two at once write the same)."""
    with engine.connect() as conn:
        if sq.pending_count(conn, delivery_id):
            return False
    report = read_report(engine, delivery_id)
    write_summary(engine, report, clock.now())
    return True


def send_shard_sync(delivery_id: str, shard: Shard, config: PushConfig, **kw: Any) -> ShardResult:
    """``send_shard`` for code without an event loop (one loop per call: no connections kept)."""
    return asyncio.run(send_shard(delivery_id, shard, config, **kw))
