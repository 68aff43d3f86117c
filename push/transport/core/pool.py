"""The decisions of a pool of connections to one origin: where a stream goes, when to connect.

The pool holds at most ``max_connections`` usable connections and opens a new
one only when every usable one is full, and never two at once (the outcome of
one set-up tells the waiters what to do next). After a failed attempt, or a
connection that died before answering anything, it waits before the next one
while others still work (0.5 s, doubling up to 10 s): APNs treats rapid
reconnects as abuse. Only a connection that delivered a response resets that.
"""

from __future__ import annotations

import enum
from typing import Protocol, Sequence, TypeVar

from push.transport.core.connection import CHECKING, CONNECTING, READY, ConnectionCore

__all__ = ["Open", "PoolCore"]

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


class _HasCore(Protocol):
    @property
    def core(self) -> ConnectionCore: ...


C = TypeVar("C", bound=_HasCore)


class Open(enum.Enum):
    """What to do about connections when a request has to wait."""

    NOW = "open a connection"
    LATER = "retry at open_not_before"  # in back-off: arm a timer for it
    NO = "wait"  # one is being set up or checked, or max_connections are usable


class PoolCore:
    """Back-off state and the pool's choices; the connections are the caller's (anything with ``.core``)."""

    __slots__ = ("max_connections", "ping_after_idle", "backoff", "open_not_before")

    def __init__(self, max_connections: int, ping_after_idle: float) -> None:
        self.max_connections = max_connections
        self.ping_after_idle = ping_after_idle
        self.backoff = 0.0
        self.open_not_before = 0.0

    def pick(self, conns: Sequence[C], now: float) -> tuple[C | None, list[C]]:
        """(the least loaded ready connection with a free slot, the idle ones to PING first).

        An idle connection is not used until a PING proved it alive.
        """
        best: C | None = None
        best_free = 0
        stale: list[C] = []
        for conn in conns:
            core = conn.core
            if core.state is not READY:
                continue
            free = core.max_streams - core.active
            if free <= best_free:
                continue
            if core.idle(now, self.ping_after_idle):
                stale.append(conn)
                continue
            best, best_free = conn, free
        return best, stale

    @staticmethod
    def free_streams(conns: Sequence[_HasCore], waiting: int) -> int:
        """Requests that could be written right now: free slots on ready connections less the waiters."""
        free = sum(max(0, c.core.free()) for c in conns)
        return max(0, free - waiting)

    def open_decision(self, conns: Sequence[_HasCore], now: float) -> Open:
        """Whether a waiting request should make the pool open a connection."""
        live = 0
        for conn in conns:
            state = conn.core.state
            if state is CONNECTING or state is CHECKING:
                return Open.NO  # its outcome will wake waiters; don't open in parallel
            if state is READY:
                live += 1
        if live >= self.max_connections:
            return Open.NO
        if live and now < self.open_not_before:
            return Open.LATER
        return Open.NOW

    def failed(self, now: float) -> None:
        """A connection attempt failed, or a connection was turned away before answering."""
        self.backoff = min(max(BACKOFF_FIRST, 2 * self.backoff), BACKOFF_MAX)
        self.open_not_before = now + self.backoff

    def proven(self) -> None:
        """A connection delivered its first response: connecting works again."""
        self.backoff = 0.0
        self.open_not_before = 0.0

    @staticmethod
    def opened_wake(core: ConnectionCore) -> int:
        """Waiters to wake when a connection opens: one more than its slots, which may open another."""
        return core.max_streams - core.active + 1

    @staticmethod
    def fail_waiters(conns: Sequence[_HasCore]) -> bool:
        """After a failed connect: True if no connection is left (or coming), so every waiter fails now."""
        return not any(c.core.state in (READY, CHECKING, CONNECTING) for c in conns)

    def removed(self, core: ConnectionCore, was_live: bool, now: float) -> int:
        """A connection closed: waiters to wake (its place may be refilled), noting a failure if it
        was taking streams but never answered."""
        if not was_live:
            return 0  # a failed set-up is reported by the connect path (no reconnect storm)
        if not core.answered:
            self.failed(now)
        return 1
