"""``send_batch``: analysis, sending, recording, quarantine and retries for one delivery.

Durability rule: a notification's ``delivery_log`` row is written (``pending``)
before it is sent and its outcome after. A send is *claimed* just before it is
written to a stream: a compare-and-set raises ``attempts`` from 0 to 1 and names
this runner in ``claimed_by`` (``tables.delivery.claim_first_sends``), and only
sends the claim won go out. So after a crash a ``pending`` row with
``attempts = 0`` was never sent (it is sent on resume) and one with
``attempts > 0`` may have been (it is recorded ``interrupted`` and never resent:
at most once beats a duplicate push). Claims are taken only once a send holds a
concurrency slot and its provider has an open connection with a free stream, and
a slot is freed only once its outcome is written, so one crash leaves at most
``PUSH_CONCURRENCY`` sends in doubt, and those had been handed to the provider.

Many processes: one runner per delivery holds its lease (``tables.locks``; a
second runner of a live delivery gets ``DeliveryBusy``), and the claims make a
double send impossible even where the lease is lost; an outcome is written only
for rows this runner still holds the claim on.

Database work runs off the event loop, so the loop only waits on the network:
on one worker thread for SQLite (one writer per process), and on Postgres on
two, each with its own connection: chunk analysis on one, claims and outcomes
on the other, so analysing the next chunk (done while the current one is being
sent) never holds up the outcome writes that free concurrency slots.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import signal
import threading
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from typing import (Any, AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, NamedTuple,
                    Protocol, Sequence, Sized, TypeVar)

from sqlalchemy.engine import Engine

from push import metrics, unwritten
from push.classify import classify
from push.clock import Clock, SystemClock
from push.config import PushConfig
from push.errors import DeliveryBusy, StorageError, ValidationError
from push.notification import Notification, check_delivery_id
from push.outcome_table import DEFAULT_TABLE, OutcomeTable
from push.outcomes import FailureReason, FailureType, Outcome
from push.qualification import QualificationRule, apply_rules
from push.quarantine import QuarantinePolicy, QuarantineStatus, may_change, may_change_valid
from tables import delivery as dq
from tables import delivery_input
from tables import store
from tables.engine import make_engine
from tables.locks import current_holder, named_lock
from tables.retrying import in_transaction
from tables.migrate import upgrade
from tables.models import LogStatus

log = logging.getLogger("push.pipeline")
# What ``Pipeline.outcome_values`` returns, in order: ``store.OutcomeUpdate`` between its key and
# ``updated_at`` (a test holds the two together; tables.store cannot be read while push loads).
OUTCOME_COLUMNS = ("status", "failure_type", "failure_reason", "error_text", "provider_status", "provider_reason",
                   "provider_id", "attempts", "next_retry_at")
T = TypeVar("T")
Key = tuple[str, str, str]
_ID_NAMESPACE = uuid.UUID("6f1c1c1e-9b7a-4d35-9d0e-5a2f4f0b7d11")
_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
# Postgres plans the per-chunk lookups from table statistics; a table that grew from empty in
# this delivery has none until autovacuum comes by, and every lookup then scans the whole table.
_ANALYZE_AFTER = frozenset({1, 4, 16, 64, 256})
FLUSH_EVERY = 500  # outcomes per database write
FLUSH_SECONDS = 0.25  # ... or at least this often, so a crash loses little
GROUP_MAX = 200  # sends claimed per statement, once each holds a slot
STOP_CHECK_SECONDS = 0.2  # how often a stop flag (or a lease's liveness) is asked
UNSENT_FIRST_DELAY = 0.05  # seconds before resending what provably never left; doubles each time,
UNSENT_MAX_DELAY = 1.0  # ... up to this: 0.05 + 0.1 + ... + 0.8, five resends over 1.55 s per send
UNSENT_BUDGET_MIN = 1000
OUTCOME_WRITE_ATTEMPTS = 12  # 0.05 s doubling to 2 s: about 15 s of database trouble survived


def apns_id(delivery_id: str, seq: int) -> str:
    """``str(uuid.uuid5(namespace, f"{delivery_id}:{seq}"))`` without building two UUID objects
    (1.3 µs a send instead of 4): SHA-1 name-based, RFC 4122 version 5."""
    h = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + f"{delivery_id}:{seq}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class SendRef(NamedTuple):
    """A send of ``send_batch``: its ``delivery_log`` row, and what analysis saw of its token."""

    delivery_id: str
    seq: int
    valid_at_analysis: bool  # no quarantine entry, or a valid one (False: not looked up)


Job = tuple[Any, Notification, int]  # (ref, notification, attempts so far); a ref has delivery_id and seq


async def _blocks(jobs: Iterable[Job] | AsyncIterator[Job], size: int) -> AsyncGenerator[list[Job], None]:
    if isinstance(jobs, AsyncIterator):
        buf: list[Job] = []
        try:
            async for job in jobs:
                buf.append(job)
                if len(buf) >= size:
                    yield buf
                    buf = []
            if buf:
                yield buf
        finally:
            close = getattr(jobs, "aclose", None)
            if close is not None:  # stopping early: let the source finish its own work
                await close()
        return
    it = iter(jobs)
    while chunk := list(islice(it, size)):
        yield chunk


class NotificationResult(NamedTuple):
    """One notification's recorded fate, handed to ``send_batch(on_result=...)`` once it is durable."""

    seq: int  # position in the input, from 0
    token: str | None
    platform: str
    app: str
    profile_id: str | None
    status: str  # sent | failed | excluded | retry_pending
    failure_type: str | None  # hard | soft | ignored | undefined
    failure_reason: int | None  # the technical value (1 user unknown, 9 quarantined, ...)
    provider_reason: str | None
    entered_quarantine: bool  # this answer put the token in quarantine: delete it from your user table

    @property
    def dead(self) -> bool:
        """The provider says the token is gone (unregistered, invalid): it will never work again."""
        return self.status == "failed" and self.failure_type == "hard" and self.failure_reason == 1


@dataclass
class SendStats:
    """What one ``send_many`` did besides the outcomes it recorded."""

    claimed: int = 0
    claimed_elsewhere: int = 0  # skipped: another runner won the claim, or the row already had an outcome
    unsent_resends: int = 0  # resends of requests that provably never reached the provider
    given_back: int = 0  # claims returned at a stop because the send never left
    stopped: bool = False


class Sender(Protocol):
    """A provider client: what ``send_batch`` and the retry runner send through (``clients=`` may pass
    your own). ``apns_id`` is the stable id of the notification; a client may ignore it."""

    provider: str

    async def send(self, n: Notification, *, apns_id: str | None = None) -> Outcome: ...

    async def aclose(self) -> None: ...


# Seed 004: how each analysis exclusion is typed.
EXCLUSION_TYPES: dict[FailureReason, FailureType] = {
    FailureReason.ADDRESS_NOT_SPECIFIED: FailureType.HARD,
    FailureReason.DUPLICATE: FailureType.IGNORED,
    FailureReason.USER_UNKNOWN: FailureType.HARD,
    FailureReason.QUARANTINED: FailureType.HARD,
    FailureReason.DENYLISTED: FailureType.HARD,
    FailureReason.REFUSED: FailureType.SOFT,
}


@dataclass
class DeliveryReport:
    """The seed's delivery summary, read back from ``delivery_log`` so it always matches the table.

    Every count is an int; the breakdowns sit beside them as ``*_by_reason`` mappings.
    """

    delivery_id: str
    total: int = 0
    to_deliver: int = 0
    sent: int = 0
    failed: int = 0
    excluded: int = 0
    retry_pending: int = 0
    pending: int = 0
    excluded_by_reason: dict[str, int] = field(default_factory=dict)  # by failure reason label
    failed_by_type_reason: dict[str, int] = field(default_factory=dict)  # by "type / reason"
    quarantined_at_analysis: int = 0
    quarantined_after_delivery: int = 0
    resumed: bool = False
    stopped: bool = False  # a stop request ended the run early: ``pending`` rows are sent on resume
    unsent_resends: int = 0  # requests that provably never reached the provider, sent again at once
    resent_in_doubt: int = 0  # retries of sends that may already have been delivered (connection lost)
    stop_signal: str | None = None  # the signal that asked for the drain, when one did

    @property
    def excluded_total(self) -> int:  # the name before the counts were ints
        return self.excluded

    @property
    def failed_total(self) -> int:
        return self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id, "total": self.total, "to_deliver": self.to_deliver,
            "excluded": self.excluded, "excluded_by_reason": dict(self.excluded_by_reason), "sent": self.sent,
            "failed": self.failed, "failed_by_type_reason": dict(self.failed_by_type_reason),
            "retry_pending": self.retry_pending, "pending": self.pending,
            "quarantined_at_analysis": self.quarantined_at_analysis,
            "quarantined_after_delivery": self.quarantined_after_delivery, "resumed": self.resumed,
            "stopped": self.stopped, "stop_signal": self.stop_signal, "unsent_resends": self.unsent_resends,
            "resent_in_doubt": self.resent_in_doubt,
        }


def read_report(engine: Engine, delivery_id: str) -> DeliveryReport:
    """A delivery's summary, counted from its ``delivery_log`` rows (``ValidationError`` if unknown)."""
    with engine.connect() as conn:
        row = dq.delivery_row(conn, delivery_id)
        if row is None:
            raise ValidationError("delivery", f"unknown delivery id {delivery_id!r}")
        counts = dq.status_counts(conn, delivery_id)
        q_analysis = dq.quarantined_at_analysis(conn, delivery_id)
    rep = DeliveryReport(delivery_id, quarantined_at_analysis=q_analysis,
                         quarantined_after_delivery=row.quarantined_after_delivery,
                         resent_in_doubt=row.resent_in_doubt)
    excluded: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for status, ftype, reason, n in counts:
        rep.total += n
        if status == LogStatus.SENT.value:
            rep.sent += n
        elif status == LogStatus.RETRY_PENDING.value:
            rep.retry_pending += n
        elif status == LogStatus.PENDING.value:
            rep.pending += n
        elif status == LogStatus.EXCLUDED.value:
            excluded[_reason_label(reason)] += n
        elif status == LogStatus.FAILED.value:
            failed[f"{ftype or 'undefined'} / {_reason_label(reason)}"] += n
    rep.excluded_by_reason, rep.failed_by_type_reason = dict(excluded), dict(failed)
    rep.excluded, rep.failed = sum(excluded.values()), sum(failed.values())
    rep.to_deliver = rep.total - rep.excluded
    return rep


def write_summary(engine: Engine, report: DeliveryReport, finished_at: datetime | None) -> None:
    """Store ``report``'s counts on the delivery row (``finished_at`` None: not finished)."""
    with engine.begin() as conn:
        dq.save_summary(conn, report.delivery_id, {
            "finished_at": finished_at, "to_deliver": report.to_deliver, "excluded": report.excluded_total,
            "sent": report.sent, "failed": report.failed_total, "retry_pending": report.retry_pending,
            "quarantined_at_analysis": report.quarantined_at_analysis})


def _reason_label(reason: int | None) -> str:
    try:
        return FailureReason(reason or 0).label
    except ValueError:
        return str(reason)


def backoff_delay(attempts: int, config: PushConfig) -> float:
    """1 min, 2, 4, … capped: the delay before attempt ``attempts + 1``."""
    return min(config.retry_base_delay * (2 ** max(0, attempts - 1)), config.retry_max_delay)


def quarantine_policy(config: PushConfig) -> QuarantinePolicy:
    return QuarantinePolicy.from_config(config)


def load_table(config: PushConfig) -> OutcomeTable:
    return OutcomeTable.from_file(config.outcome_overrides) if config.outcome_overrides else DEFAULT_TABLE


class Pipeline:
    """One run of sends against one database; used by ``send_batch`` and by the retry job."""

    def __init__(self, config: PushConfig, engine: Engine, *, clock: Clock, table: OutcomeTable,
                 clients: Mapping[str, Sender] | None = None,
                 progress: Callable[[int], None] | None = None):
        self.config = config
        self.engine = engine
        self.clock = clock
        self.table = table
        self._clients: dict[str, Sender] = dict(clients or {})
        self._owned: list[Sender] = []
        self._progress = progress
        self._policy = quarantine_policy(config)
        self._exec = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-db")
        # Analysis and outcome writes touch different rows (new seqs vs sent ones), so on Postgres they
        # run side by side; SQLite serializes writers anyway.
        self._analysis_exec = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-db-analysis")
            if engine.dialect.name == "postgresql" else self._exec)
        self._rules: dict[tuple[str, str], QualificationRule] = {}
        # This run's name in the ledger's ``claimed_by``: only it writes outcomes for what it claimed.
        self.claimer = uuid.uuid4().hex[:16]
        # Resends of requests that provably never left, for the whole run (not per request): under
        # provider churn they go out again at once; if the provider stays unreachable the run stops
        # spending time on them and they wait for the retry runner, still without an attempt counted.
        self._unsent_budget = max(UNSENT_BUDGET_MIN, 10 * config.concurrency)

    # ---- plumbing --------------------------------------------------------------------
    async def db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await self._on(self._exec, partial(fn, *args, **kw))

    async def db_analysis(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._on(self._analysis_exec, partial(fn, *args))

    async def _on(self, executor: concurrent.futures.Executor, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, call)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated at this one boundary
            if exc.__class__.__module__.startswith(("sqlalchemy", "psycopg", "sqlite3")):
                raise StorageError(f"database error during delivery: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
            raise

    def write_outcomes(self, write: Callable[[Any], None]) -> None:
        """Run ``write(conn)`` (a batch of provider answers) in one transaction, again on a fresh
        connection after a deadlock or a dropped connection, ``OUTCOME_WRITE_ATTEMPTS`` times in all:
        answers the provider gave are worth a wait (they carry dead tokens)."""
        in_transaction(self.engine, write, attempts=OUTCOME_WRITE_ATTEMPTS)

    def client(self, platform: str) -> Sender:
        if platform not in self._clients:
            if platform == "apns":
                from push.apns import ApnsClient
                c: Sender = ApnsClient(self.config, clock=self.clock, table=self.table)
            elif platform == "fcm":
                from push.fcm import FcmClient
                c = FcmClient(self.config, clock=self.clock, table=self.table)
            else:  # Notification validation makes this unreachable for real input
                raise ValidationError("platform", f"unknown platform {platform!r}")
            self._clients[platform] = c
            self._owned.append(c)
        return self._clients[platform]

    def require_clients(self, notifications: Iterable[Notification]) -> None:
        """Build the client of every platform these notifications need, so a missing setting fails
        before anything of theirs is written or marked launched."""
        for platform in {n.platform for n in notifications if n.token}:
            self.client(platform)

    async def aclose(self) -> None:
        await self.aclose_clients()
        self.shutdown()

    async def aclose_clients(self) -> None:
        owned, self._owned = self._owned, []
        for c in owned:
            await c.aclose()

    def shutdown(self) -> None:
        self._exec.shutdown(wait=True)
        self._analysis_exec.shutdown(wait=True)

    async def load_rules(self) -> None:
        def _load() -> dict[tuple[str, str], QualificationRule]:
            with self.engine.connect() as conn:
                return store.load_qualification_rules(conn)
        self._rules = await self.db(_load)

    # ---- sending ---------------------------------------------------------------------
    async def send_many(self, jobs: Iterable[Job] | AsyncIterator[Job],
                        claim: Callable[[list[Any]], Awaitable[Iterable[Any]]],
                        record: Callable[[list[tuple[Any, ...]]], Any],
                        unclaim: Callable[[list[Any]], Awaitable[None]], *,
                        stop: Any = None) -> SendStats:
        """Send ``(ref, notification, attempts_before)`` jobs with bounded concurrency.

        ``jobs`` may be an async iterator: the next chunk is then analysed while the
        previous one's sends are still in flight, so one slow stream never stalls the batch.

        A send is *claimed* (``claim(refs)``, a compare-and-set in the ledger that returns
        the refs this runner won) only once it holds a concurrency slot and its provider has
        a ready connection, in groups of at most ``GROUP_MAX``: what is recorded as possibly
        sent is what was about to be written to a stream, and a ref another runner won is
        never sent here. ``record(results)`` writes batches of ``(ref, notification,
        attempts, outcome)`` on the DB thread; ``unclaim(refs)`` gives back claims on sends
        that provably never left.

        ``stop`` (anything with ``is_set()``): once set, no new send is claimed; the ones in
        flight finish (each within the stream timeout), their outcomes are written, and the
        call returns with ``stopped`` set. Cancelling the call instead abandons what is in
        flight (recorded ``interrupted`` on resume).
        """
        # A slot is held from claim until the outcome is written, so sends in doubt after a crash
        # (claimed, outcome not yet durable) never exceed the concurrency.
        sem = asyncio.Semaphore(self.config.concurrency)
        stats = SendStats()
        results: list[tuple[Any, ...]] = []
        given_back: list[Any] = []
        pending: set[asyncio.Task[None]] = set()
        flush_lock = asyncio.Lock()
        wake = asyncio.Event()
        threshold = max(1, min(FLUSH_EVERY, self.config.concurrency // 2))
        block = max(1, min(self.config.concurrency, 1000))
        fatal: list[BaseException] = []
        loop = asyncio.get_running_loop()
        next_stop_check = 0.0
        stopped = False

        def stopping() -> bool:
            # ``stop`` may ask the database (a lock's liveness): at most a few times a second.
            nonlocal next_stop_check, stopped
            if stopped or stop is None:
                return stopped
            now = loop.time()
            if now >= next_stop_check:
                next_stop_check = now + STOP_CHECK_SECONDS
                stopped = bool(stop.is_set())
            return stopped

        async def flush() -> None:
            nonlocal results, given_back
            async with flush_lock:
                if given_back:
                    back, given_back = given_back, []
                    try:
                        await unclaim(back)
                    finally:
                        for _ in back:
                            sem.release()
                if not results:
                    return
                batch, results = results, []
                try:
                    await self.db(record, batch)
                finally:
                    for _ in batch:
                        sem.release()
                if self._progress:
                    self._progress(len(batch))

        halt = asyncio.Event()

        async def flusher() -> None:
            # Never cancelled mid-write: a cancelled executor job that has not started would drop its batch.
            try:
                while not halt.is_set():
                    waiter = asyncio.ensure_future(wake.wait())
                    try:
                        await asyncio.wait({waiter}, timeout=FLUSH_SECONDS)
                    finally:
                        waiter.cancel()
                    wake.clear()
                    await flush()
            except BaseException as exc:  # the database failed: stop launching
                fatal.append(exc)
                sem.release()

        async def stop_flusher() -> None:
            halt.set()
            wake.set()
            await asyncio.gather(flush_task, return_exceptions=True)

        async def one(ref: Any, n: Notification, attempts: int) -> None:
            client = self.client(n.platform)
            kw = self._send_kw(n, ref)
            delay = UNSENT_FIRST_DELAY
            try:
                while True:
                    try:
                        out = await client.send(n, **kw)
                    except Exception as exc:  # noqa: BLE001 - a bug in a client must not lose the notification
                        log.exception("send failed unexpectedly")
                        out = classify(n.platform, error="connection_lost",  # type: ignore[arg-type]
                                       detail=f"{type(exc).__name__}: {exc}"[:200], table=self.table)
                    # Provably never processed: send it again at once, within the run's budget; it
                    # costs no attempt. A server that is up but closing connections (GOAWAY churn)
                    # gets it again and again; one that cannot be reached at all gets a few tries
                    # with a pause between connection attempts, then the retry runner takes over.
                    if not out.unsent or self._unsent_budget <= 0 or stopping():
                        break
                    if out.unsent == "connect":
                        if delay > UNSENT_MAX_DELAY:
                            break
                        await asyncio.sleep(delay)
                        delay *= 2
                    self._unsent_budget -= 1
                    stats.unsent_resends += 1
            except BaseException as exc:  # cancellation, KeyboardInterrupt: stop the batch, outcome unknown
                fatal.append(exc)
                sem.release()
                return
            if out.unsent and stopping():
                given_back.append(ref)  # never left: pending again, sent on resume
                stats.given_back += 1
                wake.set()
                return
            out = apply_rules(out, n.platform, self._rules)
            # A send that never left is recorded without counting an attempt.
            results.append((ref, n, attempts if out.unsent else attempts + 1, out))
            if len(results) >= threshold:
                wake.set()

        async def start(group: list[Job]) -> None:
            # A claim is a promise that the send leaves now: claim only what the provider's open
            # connections can take at once (the rest keep their slots and wait for stream room).
            while group:
                room: dict[str, int | None] = {}
                for platform in dict.fromkeys(n.platform for _, n, _ in group):
                    client = self.client(platform)
                    ready = getattr(client, "ready", None)
                    if ready is not None:
                        await ready()
                    capacity = getattr(client, "capacity", None)
                    room[platform] = capacity() if capacity is not None else None
                now: list[Job] = []
                later: list[Job] = []
                for job in group:
                    free = room[job[1].platform]
                    if free is None or free > 0:
                        now.append(job)
                        if free is not None:
                            room[job[1].platform] = free - 1
                    else:
                        later.append(job)
                if not now:  # no room reported although ready: let the transport sort it out
                    now, later = later[:1], later[1:]
                won = set(map(id, await claim([ref for ref, _, _ in now])))
                for ref, n, attempts in now:
                    if id(ref) not in won:
                        stats.claimed_elsewhere += 1
                        sem.release()  # another runner has it, or it already has an outcome
                        continue
                    stats.claimed += 1
                    task = asyncio.create_task(one(ref, n, attempts))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(0)  # the new sends take their streams before room is counted again
                group = later
                if group and stopping():
                    for _ in group:
                        sem.release()
                    return

        flush_task = asyncio.create_task(flusher())
        blocks = _blocks(jobs, block)
        try:
            async for chunk in blocks:
                self.require_clients(n for _, n, _ in chunk)
                if fatal:
                    raise fatal[0]
                group: list[Job] = []
                for job in chunk:
                    if stopping():
                        break
                    if group and sem.locked():  # no slot free now: send what holds one
                        await start(group)
                        group = []
                    await sem.acquire()
                    if fatal:
                        sem.release()
                        raise fatal[0]
                    group.append(job)
                    if len(group) >= GROUP_MAX:
                        await start(group)
                        group = []
                if group:
                    if stopping():
                        for _ in group:
                            sem.release()
                    else:
                        await start(group)
                if stopping():
                    break
            while pending:
                await asyncio.wait(pending, timeout=FLUSH_SECONDS)
                if fatal:
                    raise fatal[0]
        except BaseException as exc:
            if isinstance(exc, Exception):
                # A failure (the database went away): stop launching, but let what is in flight get its
                # answer (each within the stream timeout), so the answers can still be written or kept.
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            else:
                # Stopping hard (cancelled, interrupted): what is in flight stays claimed ('interrupted'
                # on resume).
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            await stop_flusher()
            await flush()
            raise
        finally:
            await blocks.aclose()
        await stop_flusher()
        await flush()
        if fatal:
            raise fatal[0]
        stats.stopped = stopped
        return stats

    def _send_kw(self, n: Notification, ref: Any) -> dict[str, Any]:
        if n.platform == "apns":
            # Stable per (delivery, seq): a resend or retry of the same notification carries the same apns-id.
            return {"apns_id": apns_id(ref.delivery_id, ref.seq)}
        return {}

    # ---- recording (DB thread) ------------------------------------------------------
    def outcome_values(self, n: Notification, attempts: int, out: Outcome, expires_at: datetime | None,
                       now: datetime) -> tuple[Any, ...]:
        """The outcome's ``delivery_log`` columns, in ``OUTCOME_COLUMNS`` order."""
        if out.ok:
            status = LogStatus.SENT
            next_retry = None
        else:
            delay = max(out.retry_after or 0.0, backoff_delay(attempts, self.config))
            next_retry = now + timedelta(seconds=delay)
            can_retry = (out.retry and attempts < self.config.retry_max_attempts
                         and (expires_at is None or next_retry < expires_at))
            status = LogStatus.RETRY_PENDING if can_retry else LogStatus.FAILED
            if status is LogStatus.FAILED:
                next_retry = None
        failed = out.failure_type is not None
        return (status.value, out.failure_type.value if failed else None,  # type: ignore[union-attr]
                int(out.failure_reason) if failed else None, out.error_text or None, out.provider_status,
                (out.provider_reason or None) and out.provider_reason[:255],
                (out.provider_id or None) and out.provider_id[:255], attempts, next_retry)

    def outcome_columns(self, n: Notification, attempts: int, out: Outcome, expires_at: datetime | None,
                        now: datetime) -> dict[str, Any]:
        return dict(zip(OUTCOME_COLUMNS, self.outcome_values(n, attempts, out, expires_at, now)))

    def record_effects(self, conn: Any, items: list[tuple[Notification, Outcome]], now: datetime,
                       valid_at_analysis: Sequence[bool] | None = None, entered_keys: set[Key] | None = None) -> int:
        """Quarantine transitions and qualification-rule counts for recorded outcomes.

        ``valid_at_analysis[i]``: analysis saw no quarantine entry, or a valid one, for item i's token.
        """
        by_key: dict[Key, list[Outcome]] = defaultdict(list)
        rules: list[tuple[str, str, str]] = []
        for i, (n, out) in enumerate(items):
            # A batch of successes to valid tokens, or of provider timeouts, costs no quarantine lookup.
            if may_change_valid(out) if valid_at_analysis is not None and valid_at_analysis[i] else may_change(out):
                by_key[(n.platform, n.app, n.token or "")].append(out)
            if not out.ok and out.error_text:
                rules.append((n.platform, out.error_text, out.raw_error_text or out.error_text))
        entered = store.apply_quarantine(conn, by_key, now=now, policy=self._policy,
                                         entered_keys=entered_keys) if by_key else 0
        if rules:
            store.bump_qualification_rules(conn, rules, now=now)
        return entered


class _Delivery:
    """Chunked analysis and logging for one ``send_batch`` call."""

    def __init__(self, pipe: Pipeline, delivery_id: str,
                 on_result: Callable[[NotificationResult], None] | None = None):
        self.pipe = pipe
        self.id = delivery_id
        self.cfg = pipe.config
        self._chunks_done = 0
        self.metrics = metrics.DeliveryMetrics(self.cfg)
        self.on_result = on_result
        self._loop = asyncio.get_running_loop() if on_result is not None else None
        self._excluded: list[NotificationResult] = []  # from the analysis thread, emitted on the loop

    def _emit(self, results: list[NotificationResult]) -> None:
        """Hand durable results to the caller (on the event loop); a failing callback is logged, not raised."""
        assert self.on_result is not None
        for result in results:
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - the caller's code must not stop the delivery
                log.exception("delivery %s: on_result raised", self.id)

    def emit_excluded(self) -> None:
        if self._excluded:
            batch, self._excluded = self._excluded, []
            self._emit(batch)
        self.metrics = metrics.DeliveryMetrics(self.cfg)

    # runs on a database thread (the analysis one on Postgres)
    def analyse(self, items: list[tuple[int, Notification]]) -> list[Job]:
        now = self.pipe.clock.now()
        # Run again as a whole after a deadlock or a dropped connection (it only touches the database).
        to_send = in_transaction(self.pipe.engine, lambda conn: self._analyse_in(conn, items, now))
        self._chunks_done += 1
        if self._chunks_done in _ANALYZE_AFTER and self.pipe.engine.dialect.name == "postgresql":
            dq.refresh_statistics(self.pipe.engine)
        return to_send

    def _analyse_in(self, conn: Any, items: list[tuple[int, Notification]], now: datetime) -> list[Job]:
        existing = dq.log_states(conn, self.id, items[0][0], items[-1][0])
        fresh = [(seq, n) for seq, n in items if seq not in existing]
        resend: list[Job] = []
        interrupted: list[dict[str, Any]] = []
        by_seq = dict(items)
        for seq, (status, attempts, _platform) in existing.items():
            if status != LogStatus.PENDING.value:
                continue  # already has its outcome: never sent again
            n = by_seq[seq]
            if attempts == 0:
                resend.append((SendRef(self.id, seq, False), n, 0))  # its quarantine entry was not looked up
            else:
                interrupted.append(self.interrupted_update(seq, n, attempts, now))
        if interrupted:
            store.update_delivery_logs(conn, interrupted, now=now)
        return resend + self._analyse_fresh(conn, fresh, now)

    def interrupted_update(self, seq: int, n: Notification, attempts: int, now: datetime) -> dict[str, Any]:
        """The row update for a send claimed by a runner that stopped before its outcome was written:
        it may have been delivered, so it is recorded ``interrupted`` and never sent again."""
        out = classify(n.platform, error="interrupted",  # type: ignore[arg-type]
                       detail="process stopped while this send was in flight", table=self.pipe.table)
        return {"delivery_id": self.id, "seq": seq, **self.pipe.outcome_columns(n, attempts, out, None, now)}

    def _analyse_fresh(self, conn: Any, fresh: list[tuple[int, Notification]], now: datetime
                       ) -> list[Job]:
        if not fresh:
            return []
        keys = [(n.platform, n.app, n.token) for _, n in fresh if n.token]
        store.upsert_subscriptions(conn, [{"platform": n.platform, "app": n.app, "token": n.token,
                                           "profile_id": n.profile_id} for _, n in fresh if n.token], now=now)
        state = store.load_analysis_state(conn, keys)
        earlier = dq.first_seq_of_keys(conn, self.id, keys)
        seen: dict[Key, int] = {}
        logs: list[store.LogRow] = []
        exclusions: list[dict[str, Any]] = []
        send: list[Job] = []
        pending, excluded = LogStatus.PENDING.value, LogStatus.EXCLUDED.value
        validity = now + timedelta(seconds=self.cfg.validity_seconds)
        for seq, n in fresh:
            key = (n.platform, n.app, n.token or "")
            reason, text = self._exclusion(n, key, seq, state, earlier, seen)
            expires = _expiry(n, validity)
            if reason is None:
                seen.setdefault(key, seq)
                logs.append(store.LogRow(self.id, seq, key[2], n.platform, n.app, now, now, n.profile_id, pending,
                                         expires_at=expires, payload=n.to_json()))
                st = state.get(key)
                valid = st is None or st.quarantine_status in (None, QuarantineStatus.VALID)
                send.append((SendRef(self.id, seq, valid), n, 0))
            else:
                logs.append(store.LogRow(self.id, seq, key[2], n.platform, n.app, now, now, n.profile_id, excluded,
                                         EXCLUSION_TYPES[reason].value, int(reason), text, expires_at=expires))
                sub = state.get(key) if n.token else None
                if self.on_result is not None:
                    self._excluded.append(NotificationResult(seq, n.token, n.platform, n.app, n.profile_id, excluded,
                                                             EXCLUSION_TYPES[reason].value, int(reason), None, False))
                exclusions.append({"delivery_id": self.id, "subscription_id": sub.subscription_id if sub else None,
                                   "token": n.token or "", "platform": n.platform, "app": n.app,
                                   "failure_reason": int(reason), "reason_text": text, "source": "analysis"})
        store.insert_log_rows(conn, logs)
        if exclusions:
            store.insert_exclusions(conn, exclusions, now=now)
            self.metrics.excluded(exclusions)
        return send

    def _exclusion(self, n: Notification, key: Key, seq: int, state: Mapping[Key, Any], earlier: Mapping[Key, int],
                   seen: Mapping[Key, int]) -> tuple[FailureReason | None, str | None]:
        if not n.token:
            return FailureReason.ADDRESS_NOT_SPECIFIED, "no device token"
        first = earlier.get(key)
        if (first is not None and first < seq) or key in seen:
            return FailureReason.DUPLICATE, "device token already in this delivery"
        st = state.get(key)
        if st is not None:
            if st.disabled:
                return FailureReason.USER_UNKNOWN, "subscription disabled"
            q = st.quarantine_status.value if st.quarantine_status is not None else None
            if q == "quarantine":
                return FailureReason.QUARANTINED, "device token in quarantine"
            if q == "denylisted":
                return FailureReason.DENYLISTED, "device token denylisted"
            if st.denylisted:
                return FailureReason.DENYLISTED, f"profile denylisted for {n.platform}"
        size, limit = n.payload_size()
        if size > limit:
            return FailureReason.REFUSED, f"payload is {size} bytes, limit {limit}"
        return None, None

    def claim(self, refs: list[Any]) -> list[Any]:
        now = self.pipe.clock.now()
        claimer = self.pipe.claimer
        won = in_transaction(self.pipe.engine, lambda conn: dq.claim_first_sends(
            conn, self.id, [ref.seq for ref in refs], claimer, now))
        return [ref for ref in refs if ref.seq in won]

    def unclaim(self, refs: list[Any]) -> None:
        in_transaction(self.pipe.engine, lambda conn: dq.unclaim_first_sends(
            conn, self.id, [ref.seq for ref in refs], self.pipe.claimer))

    def record(self, batch: list[tuple[Any, ...]]) -> None:
        now = self.pipe.clock.now()
        values = self.pipe.outcome_values
        validity = now + timedelta(seconds=self.cfg.validity_seconds)
        claimer = self.pipe.claimer
        updates = [store.OutcomeUpdate._make((ref.delivery_id, ref.seq, claimer,
                                              *values(n, attempts, out, _expiry(n, validity), now), now))
                   for ref, n, attempts, out in batch]
        effects = [(n, out) for _, n, _, out in batch]
        valid = [ref.valid_at_analysis for ref, _, _, _ in batch]
        entered_keys: set[Key] = set()

        def write(conn: Any) -> None:
            entered_keys.clear()  # a retried transaction decides again
            written = store.update_log_outcomes(conn, updates)
            if written < len(updates):
                log.warning("delivery %s: %d outcome(s) not written: their rows were claimed by another runner",
                            self.id, len(updates) - written)
            # The answers are real whoever holds the rows now: their effects on tokens apply.
            entered = self.pipe.record_effects(conn, effects, now, valid, entered_keys)
            dq.add_quarantined_after(conn, self.id, entered)

        try:
            self.pipe.write_outcomes(write)
        except Exception:
            # The database stayed away: keep the answers (a 410 among them must still quarantine its
            # token) where the resume of this delivery finds them, then stop.
            path = unwritten.path_for(self.cfg.unwritten_dir, self.id)
            try:
                kept = unwritten.keep(path, self.id, claimer, batch, [u[3:-1] for u in updates])
                log.error("delivery %s: %d provider answers could not be written; kept in %s for the resume",
                          self.id, kept, path)
            except OSError as exc:
                log.error("delivery %s: %d provider answers could not be written nor kept (%s)",
                          self.id, len(batch), exc)
            raise
        self.metrics.outcomes(batch, (u.status for u in updates))
        if self._loop is not None:
            results = [NotificationResult(ref.seq, n.token, n.platform, n.app, n.profile_id, u.status, u.failure_type,
                                          u.failure_reason, u.provider_reason,
                                          (n.platform, n.app, n.token or "") in entered_keys)
                       for (ref, n, _, _), u in zip(batch, updates)]
            self._loop.call_soon_threadsafe(self._emit, results)

    def write_kept_answers(self) -> int:
        """Answers an earlier run of this delivery could not write (see ``push.unwritten``): written now,
        with their effects, for rows still held by the claim that sent them."""
        path = unwritten.path_for(self.cfg.unwritten_dir, self.id)
        if not path.exists():
            return 0
        records = [r for r in unwritten.read(path) if r["delivery_id"] == self.id]
        now = self.pipe.clock.now()
        updates = [store.OutcomeUpdate._make((self.id, r["seq"], r["claimed_by"], *r["columns"], now)) for r in records]
        effects = [(r["notification"], r["outcome"]) for r in records]
        valid = [bool(r["valid_at_analysis"]) for r in records]
        written = 0

        def write(conn: Any) -> None:
            nonlocal written
            written = store.update_log_outcomes(conn, updates)
            dq.add_quarantined_after(conn, self.id, self.pipe.record_effects(conn, effects, now, valid))

        if records:
            self.pipe.write_outcomes(write)
        path.unlink()
        log.warning("delivery %s: wrote %d provider answers kept by an earlier run (%d rows)", self.id,
                    len(records), written)
        return len(records)


def _expiry(n: Notification, validity: datetime) -> datetime:
    """When the notification stops being worth sending: the delivery's validity window, or earlier."""
    return min(validity, n.expiration) if n.expiration else validity


def _notification(item: Any, seq: int) -> Notification:
    if isinstance(item, Notification):
        return item
    if isinstance(item, Mapping):
        try:
            return Notification.from_dict(item)
        except ValidationError as exc:
            raise ValidationError(exc.field, f"notification #{seq}: {exc.message}", limit=exc.limit) from None
    raise ValidationError("notifications", f"item #{seq} is a {type(item).__name__}, expected a Notification")


Source = Iterable[Notification | Mapping[str, Any]] | AsyncIterable[Notification | Mapping[str, Any]]


class _Chunks:
    """The caller's notifications, read a chunk at a time: any iterable, or an async iterable (an
    audience streamed from asyncpg or an async ORM), numbered from 0 in input order."""

    def __init__(self, notifications: Source, size: int):
        self._size = size
        self._seq = 0
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(notifications, AsyncIterable):
            self._async = notifications.__aiter__()
        else:
            self._sync = iter(notifications)

    async def next(self) -> list[tuple[int, Notification]] | None:
        if self._sync is not None:
            raw = list(islice(self._sync, self._size))
        else:
            raw = []
            assert self._async is not None
            while len(raw) < self._size:
                try:
                    raw.append(await self._async.__anext__())
                except StopAsyncIteration:
                    break
        if not raw:
            return None
        chunk = []
        for item in raw:
            chunk.append((self._seq, _notification(item, self._seq)))
            self._seq += 1
        return chunk


def _chunks(notifications: Iterable[Notification | Mapping[str, Any]], size: int, start: int = 0
            ) -> Iterator[list[tuple[int, Notification]]]:
    """``_Chunks`` for a plain iterable, without an event loop."""
    seq = start
    it = iter(notifications)
    while raw := list(islice(it, size)):
        yield [(seq + i, _notification(item, seq + i)) for i, item in enumerate(raw)]
        seq += len(raw)


async def asend_batch(notifications: Source, config: PushConfig | None = None,
                      delivery: str | None = None, *, engine: Engine | None = None, clock: Clock | None = None,
                      clients: Mapping[str, Sender] | None = None, table: OutcomeTable | None = None,
                      progress: Callable[[int], None] | None = None, force: bool = False,
                      stop: Any = None, drain_on_signals: bool = False,
                      on_result: Callable[[NotificationResult], None] | None = None) -> DeliveryReport:
    """Send a delivery and record every notification's fate; see ``send_batch``. ``notifications`` may
    also be an async iterable."""
    if drain_on_signals:
        with DrainOnSignals() as drain:
            report = await asend_batch(notifications, config, delivery, engine=engine, clock=clock, clients=clients,
                                       table=table, progress=progress, force=force, stop=AnyOf(stop, drain),
                                       on_result=on_result)
        report.stop_signal = drain.signal_name
        return report
    config = config or PushConfig.from_env()
    clock = clock or SystemClock()
    table = table or load_table(config)
    if delivery is not None:
        check_delivery_id(delivery)
    delivery_id = delivery or uuid.uuid4().hex
    own_engine = engine is None
    engine = engine or make_engine(config.database_url)
    pipe = Pipeline(config, engine, clock=clock, table=table, clients=clients, progress=progress)
    leases = ExitStack()
    try:
        await pipe.db(upgrade, engine)
        await pipe.load_rules()

        def _check(chunk: list[tuple[int, Notification]]) -> list[tuple[int, Notification]]:
            pipe.require_clients(n for _, n in chunk)
            return chunk

        # The first chunk is read and checked before the delivery row is written: bad input or a
        # missing setting there leaves nothing behind (not even an empty delivery that looks resumable).
        chunks = _Chunks(notifications, config.chunk_size)
        first_chunk = await chunks.next()
        first = [] if first_chunk is None else [_check(first_chunk)]

        # One runner per delivery: a second process on a live delivery stops here, before it reads
        # or marks anything. (Claims make a double send impossible even without it; the lease is
        # what lets a resume treat claimed rows without an outcome as a dead runner's.)
        lease = await pipe.db(lambda: leases.enter_context(named_lock(engine, delivery_lock_name(delivery_id), clock)))
        if lease is None:
            raise DeliveryBusy(delivery_id, await pipe.db(current_holder, engine, delivery_lock_name(delivery_id)))

        head = first[0] if first else []
        count = len(notifications) if isinstance(notifications, Sized) else None

        def _start() -> bool:
            with engine.begin() as conn:
                prepared = dq.delivery_row(conn, delivery_id)
                if prepared is not None and prepared.prepared_count is not None:
                    # Its rows may be claimed by live shard workers: a resume here would call them interrupted.
                    raise ValidationError("delivery", f"{delivery_id} was prepared for workers: its shards are "
                                          "sent by `push-feedback worker` (push.shards.send_shard), not send_batch")
                resumed = dq.ensure_delivery(conn, delivery_id, delivery, clock.now())
                delivery_input.check_input(conn, delivery_id, head, count, resumed=resumed, force=force)
                return resumed
        resumed = await pipe.db(_start)
        if resumed:
            log.info("resuming delivery %s", delivery_id)
        d = _Delivery(pipe, delivery_id, on_result)
        if resumed:
            await pipe.db(d.write_kept_answers)  # before analysis could take their rows for interrupted

        async def claim(refs: list[Any]) -> list[Any]:
            return await pipe.db(d.claim, refs)

        async def unclaim(refs: list[Any]) -> None:
            await pipe.db(d.unclaim, refs)

        async def analysed() -> AsyncIterator[Job]:
            # One chunk is analysed ahead, while the one before it is being sent: the sender never
            # waits for an analysis. Its rows are written 'pending' with attempts 0, so if the run
            # stops first they are simply sent on resume.
            waiting = list(first)

            async def ahead() -> asyncio.Future[list[Job]] | None:
                chunk = waiting.pop(0) if waiting else await chunks.next()
                if chunk is None:
                    return None
                _check(chunk)
                return asyncio.ensure_future(pipe.db_analysis(d.analyse, chunk))

            task = await ahead()
            try:
                while task is not None:
                    jobs = await task
                    d.emit_excluded()
                    task = await ahead()
                    for job in jobs:
                        yield job
            finally:
                if task is not None:  # stopping early: let the analysis finish, its rows stay resumable
                    await asyncio.gather(task, return_exceptions=True)

        stats = await pipe.send_many(analysed(), claim, d.record, unclaim, stop=AnyOf(stop, lease.lost))
        if lease.lost.is_set():
            raise StorageError(f"database error during delivery: {delivery_id}'s lease ended with its database "
                               f"session; stopped after writing the outcomes in flight (run it again to resume)")

        report = await pipe.db(read_report, engine, delivery_id)
        report.stopped = stats.stopped
        await pipe.db(write_summary, engine, report, None if stats.stopped else clock.now())
        report.resumed = resumed
        report.unsent_resends = stats.unsent_resends
        return report
    finally:
        await pipe.aclose_clients()
        await asyncio.get_running_loop().run_in_executor(None, leases.close)
        pipe.shutdown()
        if own_engine:
            engine.dispose()


class DrainOnSignals:
    """While in use (in the event loop's thread), the first SIGTERM or SIGINT asks for a drain: no new
    send starts, the ones in flight finish within the stream timeout and their outcomes are written,
    and the rest stay ``pending`` for a resume. A second signal stops hard (what is in flight is then
    recorded ``interrupted`` on resume)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._installed: list[int] = []

    def is_set(self) -> bool:
        return self.signal_name is not None

    def _on_signal(self, signum: int) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            log.warning("%s: finishing the sends in flight, then stopping (again to stop at once)", self.signal_name)
        elif self._task is not None:
            self._task.cancel()

    def __enter__(self) -> "DrainOnSignals":
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._on_signal, signum)
                self._installed.append(signum)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        for signum in self._installed:
            self._loop.remove_signal_handler(signum)
        if signal.SIGINT in self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def dead_tokens(engine: Engine, delivery_id: str) -> Iterator[tuple[str, str, str, str | None]]:
    """``(platform, app, token, profile_id)`` of every token the providers declared gone (unregistered,
    invalid: failed, hard, user unknown) in this delivery, read in pages: what to delete from the
    host's own user table."""
    after = -1
    while True:
        with engine.connect() as conn:
            rows = dq.dead_tokens_page(conn, delivery_id, after, 5000)
        if not rows:
            return
        for row in rows:
            yield row.platform, row.app, row.token, row.profile_id
        after = rows[-1].seq


def delivery_lock_name(delivery_id: str) -> str:
    """The lease of one delivery, in the same lock space as the jobs' (fits ``job_lock.job``)."""
    return "delivery:" + hashlib.blake2b(delivery_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class AnyOf:
    """Set as soon as any of the given flags is (the caller's stop, a lost lease, ...)."""

    def __init__(self, *flags: Any):
        self._flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self._flags)


def send_batch(notifications: Source, config: PushConfig | None = None, delivery: str | None = None, *,
               engine: Engine | None = None, clock: Clock | None = None, clients: Mapping[str, Sender] | None = None,
               table: OutcomeTable | None = None, progress: Callable[[int], None] | None = None,
               force: bool = False, stop: Any = None, drain_on_signals: bool = False,
               on_result: Callable[[NotificationResult], None] | None = None) -> DeliveryReport:
    """Send ``notifications`` (any iterable or async iterable of ``Notification`` or dicts, consumed in
    chunks) and return the delivery summary.

    ``engine``/``clock``/``clients``/``table`` replace what ``config`` would build (tests, hosts with
    their own); ``progress(n)`` is told how many outcomes each write recorded.

    Every notification ends in exactly one ``delivery_log`` row: ``sent``,
    ``failed``, ``excluded`` or ``retry_pending``. Giving the same ``delivery``
    id again resumes it: what already has an outcome is never sent again. A resume
    whose input differs from the delivery's first run (first chunk, or count when
    ``notifications`` has a length) raises ``ValidationError`` unless ``force=True``.

    ``on_result(NotificationResult)`` is called, on the event loop, for each notification once its
    fate is written (exclusions at analysis, outcomes after each write; ``result.dead`` and
    ``result.entered_quarantine`` say which tokens to delete from the host's user table); nothing is
    kept in memory for it, so it suits a million notifications. ``dead_tokens(engine, delivery)``
    reads the same afterwards.

    ``stop`` (anything with ``is_set()``) asks for a drain from outside; ``drain_on_signals=True``
    makes SIGTERM and SIGINT do the same (main thread only): the sends in flight finish and are
    recorded, nothing new starts, and the report comes back with ``stopped`` set and the rest
    ``pending``, sent when the same delivery id is given again.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asend_batch(notifications, config, delivery, engine=engine, clock=clock, clients=clients,
                                       table=table, progress=progress, force=force, stop=stop,
                                       drain_on_signals=drain_on_signals, on_result=on_result))
    raise RuntimeError("send_batch() was called inside a running event loop: use `await asend_batch(...)`")

