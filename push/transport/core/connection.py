"""One HTTP/2 connection's decisions: lifecycle, stream budget, GOAWAY, "was it processed", PING.

States (plain ints, compared by identity on the hot path)::

    CONNECTING --opened()--> READY <--ping_acked()-- CHECKING
        |                      |  --begin_ping()-->     |
        |                      v                        v
        +----------------> DRAINING (GOAWAY, ids exhausted) ----> CLOSED
                           (no new streams; open ones finish)

A stream's end is one of four verdicts (``Verdict``): a complete response; or
provably NOT processed, so the request is resent on another connection (its id
is above a GOAWAY's ``last_stream_id``, it was refused with REFUSED_STREAM, or
the connection died before its frames were written to the socket); or it MAY
have been processed (the connection died after the write, or the server reset
it with another code), which is reported and never resent.
"""

from __future__ import annotations

import enum

from push.transport.values import INITIAL_MAX_STREAMS, REFUSED_STREAM, GoAway

__all__ = ["CHECKING", "CLOSED", "CONNECTING", "DRAINING", "READY", "STATE_NAMES", "ConnectionCore", "Verdict",
           "reset_verdict"]

CONNECTING = 0  # TCP/TLS/ALPN in progress, or waiting for the server's first SETTINGS
READY = 1  # takes new streams
CHECKING = 2  # health-check PING in flight; no new streams until it is answered
DRAINING = 3  # GOAWAY received (or ids exhausted): existing streams finish, no new ones
CLOSED = 4
STATE_NAMES = {CONNECTING: "connecting", READY: "ready", CHECKING: "checking", DRAINING: "draining",
               CLOSED: "closed"}
_USABLE = (READY, CHECKING)


class Verdict(enum.Enum):
    """How a stream ended, as far as delivery is concerned."""

    RESEND = "not processed"  # provably not processed: send it again elsewhere
    LOST = "may have been processed"  # connection gone after the request was written
    RESET = "reset"  # the server reset it (not REFUSED_STREAM): may have been processed


def reset_verdict(error_code: int) -> Verdict:
    """RST_STREAM REFUSED_STREAM promises the stream was not processed (RFC 9113 §8.7); any other code does not."""
    return Verdict.RESEND if error_code == REFUSED_STREAM else Verdict.RESET


class ConnectionCore:
    """The state of one connection that its decisions depend on; the asyncio connection feeds it events."""

    __slots__ = ("state", "active", "answered", "max_streams", "goaway", "last_recv", "flush_gen",
                 "ping_payload", "ping_deadline", "budget")

    def __init__(self, now: float) -> None:
        self.state = CONNECTING
        self.active = 0  # open streams
        self.answered = 0  # complete responses received
        # Until the server's first SETTINGS (no stream starts before it), then its live value.
        self.max_streams = INITIAL_MAX_STREAMS
        self.goaway: GoAway | None = None
        self.last_recv = now
        # Socket writes so far; a stream was written iff this moved past its value when it was queued.
        self.flush_gen = 0
        self.ping_payload: bytes | None = None
        self.ping_deadline: float | None = None
        # What this connection adds to the stream budget gauge, once it opened (None before and after).
        self.budget: int | None = None

    def __repr__(self) -> str:
        return f"{STATE_NAMES[self.state]} streams={self.active}/{self.max_streams}"

    # ----------------------------------------------------------------- lifecycle

    def opened(self) -> bool:
        """Set-up finished (TLS, ALPN, the server's SETTINGS). False if a GOAWAY or EOF came first."""
        if self.state is not CONNECTING:
            return False
        self.state = READY
        self.budget = self.max_streams
        return True

    def drain(self) -> bool:
        """No new streams from now on (ids exhausted, accounting mismatch); True if it was usable."""
        was_usable = self.state in _USABLE
        if self.state is not CLOSED:
            self.state = DRAINING
        return was_usable

    def close(self) -> tuple[bool, int | None] | None:
        """Closed: (was it taking streams, the budget it no longer adds); None if already closed."""
        if self.state is CLOSED:
            return None
        was_live = self.state in _USABLE
        self.state = CLOSED
        self.ping_payload = self.ping_deadline = None
        budget, self.budget = self.budget, None
        return was_live, budget

    # ----------------------------------------------------------------- stream budget

    def free(self) -> int:
        """New streams this connection takes right now."""
        return self.max_streams - self.active if self.state is READY else 0

    def stream_opened(self) -> int:
        """A stream was queued; returns its write generation (see ``written``)."""
        self.active += 1
        return self.flush_gen

    def flushed(self) -> None:
        """Queued frames were handed to the socket."""
        self.flush_gen += 1

    def written(self, gen: int) -> bool:
        """Whether a stream queued at generation ``gen`` reached the socket."""
        return gen < self.flush_gen

    def stream_closed(self) -> bool:
        """A stream ended; True when the connection is now drained and should close."""
        self.active -= 1
        return self.state is DRAINING and not self.active

    def slot_freed(self) -> bool:
        """Whether the stream that just ended frees a slot a waiter can use."""
        return self.state is READY and self.active < self.max_streams

    def settings(self, max_streams: int) -> tuple[int, int]:
        """The server's SETTINGS_MAX_CONCURRENT_STREAMS: (waiters to wake, change of the budget gauge).

        The live value counts even below the open streams (APNs drops to 1): then no new stream
        starts until enough have finished.
        """
        old = self.max_streams
        self.max_streams = max_streams
        delta = 0
        if self.budget is not None and max_streams != self.budget:
            delta = max_streams - self.budget
            self.budget = max_streams
        wake = max_streams - max(old, self.active) if self.state is READY and max_streams > old else 0
        return wake, delta

    def response_complete(self) -> bool:
        """A response completed; True for the first one (it proves the connection works)."""
        self.answered += 1
        return self.answered == 1

    # ----------------------------------------------------------------- GOAWAY and verdicts

    def goaway_received(self, goaway: GoAway) -> tuple[bool, bool]:
        """(was it usable, was it turned away before answering anything) after a GOAWAY.

        A connection still being set up reports neither: its connect fails and the pool
        decides what its waiters get.
        """
        self.goaway = goaway
        was_usable = self.state in _USABLE
        if self.state is not CLOSED:
            self.state = DRAINING
        return was_usable, was_usable and not self.answered

    def unprocessed_by_goaway(self, stream_id: int) -> bool:
        """Streams above the GOAWAY's last_stream_id were never processed (RFC 9113 §6.8)."""
        return self.goaway is not None and stream_id > self.goaway.last_stream_id

    def closed_verdict(self, gen: int) -> Verdict:
        """A stream still open when the connection closed: resend only if it was never written."""
        return Verdict.LOST if self.written(gen) else Verdict.RESEND

    # ----------------------------------------------------------------- PING / idle policy

    def data_received(self, now: float) -> None:
        self.last_recv = now

    def idle(self, now: float, ping_after_idle: float) -> bool:
        """Nothing heard for longer than ``ping_after_idle``: verify with a PING before reuse."""
        return now - self.last_recv > ping_after_idle

    def begin_ping(self, now: float, payload: bytes, ping_timeout: float) -> float | None:
        """Start a health check (only from READY): new streams wait; returns the answer's deadline."""
        if self.state is not READY:
            return None
        self.state = CHECKING
        self.ping_payload = payload
        self.ping_deadline = now + ping_timeout
        return self.ping_deadline

    def ping_acked(self, payload: bytes) -> int | None:
        """A PING ack: None if it is not ours, else how many waiters the reopened slots serve."""
        if self.ping_payload is None or payload != self.ping_payload:
            return None
        self.ping_payload = self.ping_deadline = None
        if self.state is CHECKING:
            self.state = READY
            return self.max_streams - self.active
        return 0

    def ping_overdue(self, now: float) -> bool:
        """Our PING is still unanswered at its deadline: the connection is dead, close it."""
        return self.ping_deadline is not None and now >= self.ping_deadline

    def request_timed_out(self) -> bool:
        """A request's deadline passed on this connection: True if it should be PINGed (a silent
        server may mean a dead connection) before it takes more streams."""
        return self.state is READY
