"""One request's deadlines and resends.

httpx's ``timeout`` gives two numbers. ``pool`` bounds each wait for a
connection or stream slot. ``read`` runs from the first time the request is
sent to its complete response, and stays fixed across transparent resends: a
resend never extends the caller's wait. A provably unprocessed request is
resent at most ``max_resends`` times; a resend whose read deadline already
passed is not attempted (it was not processed: the caller gets a pool timeout).
"""

from __future__ import annotations

__all__ = ["RequestCore"]


class RequestCore:
    """Deadline and resend bookkeeping for one request (times are the caller's monotonic clock)."""

    __slots__ = ("read_timeout", "pool_timeout", "max_resends", "resends", "read_deadline", "front")

    def __init__(self, read_timeout: float | None, pool_timeout: float | None, max_resends: int) -> None:
        self.read_timeout = read_timeout
        self.pool_timeout = pool_timeout
        self.max_resends = max_resends
        self.resends = 0
        self.read_deadline: float | None = None
        # Resends and re-waits queue ahead of new requests.
        self.front = False

    def too_late(self, now: float) -> bool:
        """The read deadline passed before the request could be (re)sent. Only possible before a resend."""
        return self.read_deadline is not None and self.read_deadline <= now

    def wait_deadline(self, now: float) -> float | None:
        """Until when to wait for a connection or slot: the pool timeout, never past the read deadline."""
        deadline = None if self.pool_timeout is None else now + self.pool_timeout
        read = self.read_deadline
        if read is not None and (deadline is None or read < deadline):
            return read
        return deadline

    def requeue(self) -> None:
        """The chosen connection could not take the stream after all: wait again, at the front."""
        self.front = True

    def sent(self, now: float) -> float | None:
        """The request's frames were queued: its read deadline (set on the first send only)."""
        if self.read_timeout is None:
            return None
        if self.read_deadline is None:
            self.read_deadline = now + self.read_timeout
        return self.read_deadline

    def unprocessed(self) -> bool:
        """The server provably did not process it: True to resend (at the front), False to give up."""
        self.resends += 1
        self.front = True
        return self.resends <= self.max_resends
