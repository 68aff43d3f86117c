"""Connections to one origin and the FIFO of requests waiting for a stream slot."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httpx

from push.transport.connection import _Connection
from push.transport.core.pool import Open, PoolCore
from push.transport.errors import ConnectFailed

if TYPE_CHECKING:
    from push.transport.adapter import H2Transport


class _Pool:
    """Connections to one origin, plus the FIFO of requests waiting for a stream slot.

    Which connection, when to open one and the back-off are ``PoolCore``'s decisions
    (``self.core``); this class keeps the waiters' futures, the connect tasks and the timers.
    """

    def __init__(self, transport: H2Transport, scheme: str, host: str, port: int) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.origin = f"{scheme}://{host}:{port}"
        self.conns: list[_Connection] = []
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.closed = False
        self.core = PoolCore(transport._max_connections, transport._ping_after_idle)
        self._retry_handle: asyncio.TimerHandle | None = None

    def pick(self) -> _Connection | None:
        """The least loaded ready connection with a free slot, PINGing stale ones first."""
        conn, stale = self.core.pick(self.conns, self.loop.time())
        for idle in stale:
            idle.health_check()  # a stale connection is verified before reuse
        return conn

    async def acquire(self, deadline: float | None, front: bool) -> _Connection:
        """Wait for a ready connection with a free stream slot.

        The caller must open its stream before its next ``await`` (the slot is not
        reserved). ``front`` queues ahead of the others (resends, re-waits).
        """
        if front or not self.waiters:
            conn = self.pick()
            if conn is not None:
                return conn
        loop = self.loop
        while True:
            if self.closed:
                raise ConnectFailed(f"{self.origin}: transport closed")
            self._maybe_open()
            fut: asyncio.Future[None] = loop.create_future()
            if front:
                self.waiters.appendleft(fut)
            else:
                self.waiters.append(fut)
            timer = loop.call_at(deadline, _expire_waiter, fut) if deadline is not None else None
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self.wake(1)  # we were woken but won't use the slot: pass it on
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            conn = self.pick()
            if conn is not None:
                return conn
            front = True

    def wake(self, n: int) -> None:
        waiters = self.waiters
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def _maybe_open(self) -> None:
        if self.closed:
            return
        decision = self.core.open_decision(self.conns, self.loop.time())
        if decision is Open.LATER:
            if self._retry_handle is None:
                self._retry_handle = self.loop.call_at(self.core.open_not_before, self._retry_open)
        elif decision is Open.NOW:
            conn = _Connection(self)
            self.conns.append(conn)
            conn.connect_task = self.loop.create_task(self._open(conn), name=f"h2-connect-{conn.id}")

    def _note_failure(self) -> None:
        self.core.failed(self.loop.time())

    def connection_proven(self) -> None:
        # Only a connection that delivered a response resets the back-off: one that
        # passes the handshake and then dies at once counts as a failed attempt.
        self.core.proven()

    def _retry_open(self) -> None:
        self._retry_handle = None
        self.wake(1)  # that waiter re-evaluates and may open the connection now

    async def _open(self, conn: _Connection) -> None:
        stats = self.transport.stats
        try:
            await conn.connect()
        except BaseException as exc:
            stats.connect_failures += 1
            self.transport.metrics.failures.inc()
            self.transport.last_connect_error = str(exc) or type(exc).__name__
            self._note_failure()
            self._connect_failed(exc)
            if not isinstance(exc, Exception):
                raise
            return
        stats.connections_opened += 1
        m = self.transport.metrics
        m.opened.inc()
        m.open.inc()
        m.budget.inc(conn.core.budget or 0)
        self.wake(PoolCore.opened_wake(conn.core))

    def _connect_failed(self, exc: BaseException) -> None:
        if not PoolCore.fail_waiters(self.conns):
            self.wake(1)
            return
        # No connection at all: everyone waiting would fail the same way right now.
        message = str(exc) if isinstance(exc, httpx.ConnectError) else f"{self.origin}: {exc!r}"
        goaway = exc.goaway if isinstance(exc, ConnectFailed) else None
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectFailed(message, goaway=goaway))

    def connection_unusable(self, conn: _Connection) -> None:
        # Its place in max_connections is free: let a waiter open a replacement.
        self.wake(1)

    def remove(self, conn: _Connection, was_live: bool) -> None:
        try:
            self.conns.remove(conn)
        except ValueError:
            pass
        wake = self.core.removed(conn.core, was_live, self.loop.time())
        if wake:
            self.wake(wake)

    async def aclose(self) -> None:
        self.closed = True
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectFailed(f"{self.origin}: transport closed"))
        await asyncio.gather(*(c.aclose() for c in list(self.conns)), return_exceptions=True)


def _expire_waiter(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(httpx.PoolTimeout(
            "no connection or stream slot before the deadline; the request was not sent"))
