"""HTTP/2 transport for APNs and FCM, built directly on ``jh2`` or ``h2`` and asyncio.

Use it as ``httpx.AsyncClient(transport=H2Transport(ssl_context=ctx), base_url=...)``.

The point of this module is exact delivery semantics: a request the server
provably did not process (stream id above a GOAWAY's ``last_stream_id``,
RST_STREAM REFUSED_STREAM, or bytes never written to the socket) is resent
transparently on another connection; a request that may have been processed is
reported as such and never resent here.

What each exception tells the caller::

    httpx.TransportError
    ├── httpx.ConnectError          never sent: TCP/TLS/ALPN failed, or the server
    │   └── ConnectFailed           refused the connection (GOAWAY during setup)
    ├── httpx.PoolTimeout           never sent: the deadline passed while waiting
    │                               for a connection or a free stream slot
    ├── httpx.ReadTimeout           sent, no complete response before the deadline;
    │                               stream reset with CANCEL: outcome UNKNOWN
    ├── ResendLimitExceeded         NOT processed (provably), but it was refused or
    │                               cut by GOAWAY more than ``max_resends`` times
    └── ConnectionLost              connection died while the request was in flight:
        │                           MAY HAVE BEEN PROCESSED (do not blindly resend)
        └── StreamReset             server reset the stream with a code other than
                                    REFUSED_STREAM: MAY HAVE BEEN PROCESSED

``ConnectionLost``, ``ResendLimitExceeded`` and ``ConnectFailed`` carry the GOAWAY
that caused them, if any (``goaway``, ``goaway_error_code``,
``goaway_debug_data``, and ``reason`` parsed from APNs' JSON debug data).
``ConnectionLost.may_have_been_processed`` is True and
``ResendLimitExceeded.may_have_been_processed`` is False.

Successful responses carry ``extensions["resends"]`` (how many times the
request was transparently resent) and ``extensions["stream_id"]``.

Deadlines come from httpx's ``request.extensions["timeout"]``: ``pool`` bounds the
wait for a connection / stream slot (-> PoolTimeout), ``read`` bounds the time from
sending the request to the complete response, one deadline across transparent
resends (-> ReadTimeout, or PoolTimeout if it passes while a provably unprocessed
request waits to be resent). ``None`` means no deadline. Connection setup is
bounded by ``connect_timeout``.

Connections: a small pool per origin, opened lazily, each carrying as many
streams as the server's live SETTINGS_MAX_CONCURRENT_STREAMS allows; a new one
is opened only when all are full. A connection is PINGed before reuse after a
request timed out on it or after ``ping_after_idle`` seconds without traffic,
and closed if the PING is not answered within ``ping_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import re
import ssl
from dataclasses import asdict, dataclass
from typing import Any, Callable

import httpx

from push import metrics
from push.errors import ConfigError
from push.h2backend import BackendUnavailable, H2Backend, load_backend

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "GoAway",
    "H2Transport",
    "ResendLimitExceeded",
    "StreamReset",
    "TransportStats",
]

log = logging.getLogger(__name__)

PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7
CANCEL = 0x8
NO_ERROR = 0x0

# Our assumed stream limit until the server's first SETTINGS frame arrives. A new
# connection takes no request before that frame (APNs token connections start at
# 1, and a burst of 100 would mostly be refused), so from the first request on the
# live value counts: the server's, or the protocol's "unlimited" if it omits it.
INITIAL_MAX_STREAMS = 100
_READ_SIZE = 256 * 1024

# Headers that are connection-specific in HTTP/1.1 and forbidden in HTTP/2
# (RFC 9113 §8.2.2); ``host`` becomes ``:authority``.
_SKIP_HEADERS = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Sent as never-indexed HPACK literals. Credentials, as h2 does by default (RFC 7541
# §7.1.3). Values that change on every request (``:path`` carries the APNs device
# token) because indexing them only churns the 4 KiB dynamic table and evicts the
# headers that do repeat (topic, push type, user agent...).
_NEVER_INDEXED = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"content-length", b"apns-id",
     b"apns-expiration"}
)
_BAD_VALUE = re.compile(rb"[\r\n\0]").search
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]").search  # RFC 9110 token, lower case


# --------------------------------------------------------------------------- public values


@dataclass(frozen=True, slots=True)
class GoAway:
    """A GOAWAY frame received from the server."""

    error_code: int
    last_stream_id: int
    debug_data: bytes

    @property
    def reason(self) -> str | None:
        """APNs puts ``{"reason": ...}`` in the debug data; None if absent or not JSON."""
        if not self.debug_data:
            return None
        try:
            data = json.loads(self.debug_data)
        except ValueError:
            return None
        reason = data.get("reason") if isinstance(data, dict) else None
        return reason if isinstance(reason, str) else None

    def describe(self) -> str:
        text = f"GOAWAY error_code={self.error_code} last_stream_id={self.last_stream_id}"
        if self.debug_data:
            text += f" debug_data={self.debug_data[:200]!r}"
        return text


@dataclass(slots=True)
class TransportStats:
    """Counters for tests and benchmarks (monotonic, per transport)."""

    connections_opened: int = 0  # connections that completed TLS + SETTINGS
    connect_failures: int = 0
    resends: int = 0  # transparent resends of provably unprocessed requests
    goaways: int = 0  # GOAWAY frames received
    resets: int = 0  # RST_STREAM frames received (any code, REFUSED_STREAM included)
    timeouts: int = 0  # requests that hit their deadline after being sent
    pings_failed: int = 0  # health-check PINGs not answered in time

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _GoAwayDetails:
    goaway: GoAway | None

    @property
    def goaway_error_code(self) -> int | None:
        return None if self.goaway is None else self.goaway.error_code

    @property
    def goaway_debug_data(self) -> bytes | None:
        return None if self.goaway is None else self.goaway.debug_data

    @property
    def reason(self) -> str | None:
        return None if self.goaway is None else self.goaway.reason


class ConnectionLost(_GoAwayDetails, httpx.TransportError):
    """The connection ended while the request was in flight. It may have been processed."""

    may_have_been_processed = True

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        goaway: GoAway | None = None,
        stream_id: int | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.goaway = goaway
        self.stream_id = stream_id


class StreamReset(ConnectionLost):
    """The server reset the stream (not REFUSED_STREAM). It may have been processed."""

    def __init__(
        self,
        error_code: int,
        *,
        request: httpx.Request | None = None,
        goaway: GoAway | None = None,
        stream_id: int | None = None,
    ) -> None:
        super().__init__(
            f"stream {stream_id} reset by server with error code {error_code}; "
            "the request may have been processed",
            request=request,
            goaway=goaway,
            stream_id=stream_id,
        )
        self.error_code = error_code


class ResendLimitExceeded(_GoAwayDetails, httpx.TransportError):
    """The server provably did not process the request, and resends are exhausted."""

    may_have_been_processed = False

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        goaway: GoAway | None = None,
        resends: int = 0,
    ) -> None:
        super().__init__(message, request=request)
        self.goaway = goaway
        self.resends = resends


class ConnectFailed(_GoAwayDetails, httpx.ConnectError):
    """Could not set up a connection (the request was never sent)."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        goaway: GoAway | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.goaway = goaway


class _Unprocessed(Exception):
    """Internal: the server provably did not process this stream; resend it."""

    def __init__(self, why: str, goaway: GoAway | None = None, cause: str = "goaway") -> None:
        super().__init__(why)
        self.why = why
        self.goaway = goaway
        self.cause = cause  # push_resends_total label: goaway | refused_stream | unwritten


# Connection states. Plain ints compared by identity are the cheapest check on the hot path.
_CONNECTING = 0  # TCP/TLS/ALPN in progress, or waiting for the server's first SETTINGS
_READY = 1  # takes new streams
_CHECKING = 2  # health-check PING in flight; no new streams until it is answered
_DRAINING = 3  # GOAWAY received (or ids exhausted): existing streams finish, no new ones
_CLOSED = 4
_STATE_NAMES = {0: "connecting", 1: "ready", 2: "checking", 3: "draining", 4: "closed"}


class _Stream:
    """Per-stream state, owned by its connection; the request coroutine awaits ``future``."""

    __slots__ = ("sid", "future", "gen", "status", "headers", "chunks", "done", "timer",
                 "body_offset", "window_waiter")

    def __init__(self, sid: int, future: asyncio.Future[_Stream], gen: int) -> None:
        self.sid = sid
        self.future = future
        # Value of the connection's flush counter when our frames were queued in h2;
        # the stream was written to the socket iff the counter has moved past it.
        self.gen = gen
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        # Offset of the first body byte not yet handed to h2; None once all of it is.
        self.body_offset: int | None = None
        self.window_waiter: asyncio.Future[None] | None = None


_ids = itertools.count(1)


class _Connection:
    """One HTTP/2 connection: an h2 state machine, a socket, and a reader task."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.id = next(_ids)
        self.state = _CONNECTING
        backend = pool.transport.backend
        self.b = backend
        self.h2 = backend.connection_class(self)
        self.streams: dict[int, _Stream] = {}
        self.active = 0
        self.answered = 0  # complete responses received
        self.max_streams = INITIAL_MAX_STREAMS
        self.goaway: GoAway | None = None
        self.last_recv = self.loop.time()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None  # the reader
        self.connect_task: asyncio.Task[None] | None = None  # strong ref: asyncio keeps weak ones
        self._flush_handle: asyncio.Handle | None = None
        self._flush_gen = 0
        self._blocked: set[_Stream] = set()
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._settings_seen: asyncio.Future[None] = self.loop.create_future()
        self.counted_budget: int | None = None  # what this connection adds to push_stream_budget, once open
        events = backend.events
        self._dispatch: dict[type, Callable[[Any], None]] = {
            events.ResponseReceived: self._on_response,
            events.DataReceived: self._on_data,
            events.StreamEnded: self._on_stream_ended,
            events.StreamReset: self._on_stream_reset,
            events.WindowUpdated: self._on_window_updated,
            events.RemoteSettingsChanged: self._on_settings,
            events.PingAckReceived: self._on_ping_ack,
            events.ConnectionTerminated: self._on_goaway,
            events.TrailersReceived: self._on_trailers,
            events.PushedStreamReceived: self._on_pushed,
        }

    def __repr__(self) -> str:
        return (f"<conn #{self.id} {_STATE_NAMES[self.state]} streams={self.active}"
                f"/{self.max_streams}>")

    # ----------------------------------------------------------------- setup

    async def connect(self) -> None:
        pool = self.pool
        timeout = pool.transport._connect_timeout
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    pool.host, pool.port, ssl=pool.transport._ssl_context,
                    server_hostname=pool.host, ssl_handshake_timeout=timeout,
                )
                self._reader, self._writer = reader, writer
                if self.state is _CLOSED:  # the transport was closed meanwhile
                    writer.transport.abort()
                    raise ConnectFailed(f"{pool.origin}: transport closed during connect")
                ssl_object = writer.get_extra_info("ssl_object")
                alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
                if alpn != "h2":
                    raise ConnectFailed(f"{pool.origin}: server did not negotiate HTTP/2 (ALPN {alpn!r})")
                self.h2.initiate_connection()
                # Servers must not push to us; a pushed stream would only cost memory.
                self.h2.update_settings({self.b.SettingCodes.ENABLE_PUSH: 0})
                writer.write(self.h2.data_to_send())
                self._task = self.loop.create_task(self._read_loop(), name=f"h2-reader-{self.id}")
                # Wait for the server's SETTINGS so the first burst respects its real
                # stream limit instead of being refused (APNs token connections allow 1).
                await self._settings_seen
            if self.state is not _CONNECTING:  # GOAWAY or EOF right after SETTINGS
                raise ConnectFailed(f"{pool.origin}: connection closed during setup",
                                    goaway=self.goaway)
        except BaseException as exc:
            self._close("connect failed", abort=True)
            if isinstance(exc, ConnectFailed):
                raise
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(f"{pool.origin}: connect timed out after {timeout}s") from exc
            if isinstance(exc, (OSError, ssl.SSLError, EOFError)):
                raise ConnectFailed(f"{pool.origin}: {type(exc).__name__}: {exc}") from exc
            raise
        self.state = _READY

    # ----------------------------------------------------------------- requests

    def start(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Stream | None:
        """Queue HEADERS (and the body if it fits) for a new stream; None if this
        connection can't take it after all (it then drains; the caller picks again)."""
        h2c = self.h2
        try:
            sid = h2c.get_next_available_stream_id()
            h2c.send_headers(sid, headers, end_stream=not body)
        except self.b.exceptions.NoAvailableStreamIDError:
            self._drain_locally("stream ids exhausted")
            return None
        except self.b.exceptions.TooManyStreamsError:
            # h2 counts more open streams than we do: don't trust this connection's accounting.
            log.warning("%r: h2 refused a new stream; draining the connection", self)
            self._drain_locally("stream accounting mismatch")
            return None
        except self.b.exceptions.ProtocolError as exc:
            raise httpx.LocalProtocolError(f"h2 rejected the request headers: {exc}") from exc
        stream = _Stream(sid, self.loop.create_future(), self._flush_gen)
        self.streams[sid] = stream
        self.active += 1
        if body:
            size = len(body)
            if size <= h2c.max_outbound_frame_size and size <= h2c.local_flow_control_window(sid):
                h2c.send_data(sid, body, end_stream=True)
            else:
                stream.body_offset = 0
        if self._flush_handle is None:
            # One socket write for everything queued during this loop iteration.
            self._flush_handle = self.loop.call_soon(self._flush)
        return stream

    async def send_body(self, stream: _Stream, body: bytes) -> None:
        """Send the rest of a body that did not fit in one frame, following flow control."""
        h2c = self.h2
        view = memoryview(body)
        total = len(body)
        offset = stream.body_offset or 0
        while offset < total:
            if stream.done or self.state is _CLOSED:
                return
            window = h2c.local_flow_control_window(stream.sid)
            if window <= 0:
                waiter: asyncio.Future[None] = self.loop.create_future()
                stream.window_waiter = waiter
                self._blocked.add(stream)
                try:
                    await waiter
                finally:
                    stream.window_waiter = None
                    self._blocked.discard(stream)
                continue
            frame_size = h2c.max_outbound_frame_size
            while window > 0 and offset < total:
                n = min(window, frame_size, total - offset)
                h2c.send_data(stream.sid, view[offset:offset + n], end_stream=offset + n == total)
                offset += n
                window -= n
            stream.body_offset = offset if offset < total else None
            # No writer.drain(): the server's flow-control window already bounds what
            # we queue, and drain() could block past the deadline on a dead socket.
            self._flush()

    def abandon(self, stream: _Stream) -> None:
        """The caller gave up (cancelled): reset the stream and free its slot."""
        if stream.done:
            fut = stream.future
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved: nobody will await it any more
            return
        self._reset(stream.sid, CANCEL)
        self._finish(stream, None)

    def deadline_passed(self, stream: _Stream) -> None:
        """Timer callback: the request's deadline passed before the response completed."""
        stream.timer = None
        if stream.done:
            return
        self.pool.transport.stats.timeouts += 1
        self._reset(stream.sid, CANCEL)
        self._finish(stream, httpx.ReadTimeout(
            f"no complete response on stream {stream.sid} before the deadline; "
            "stream reset, outcome unknown"))
        # A silent server may mean a dead connection: verify it before reusing it.
        if self.state is _READY:
            self.health_check()

    # ----------------------------------------------------------------- health

    def health_check(self) -> None:
        """Send a PING; new streams wait until it is answered, close if it isn't."""
        if self.state is not _READY:
            return
        self.state = _CHECKING
        payload = next(_ids).to_bytes(8, "big")
        self._ping_payload = payload
        try:
            self.h2.ping(payload)
        except self.b.exceptions.ProtocolError:  # pragma: no cover - h2 already closed
            self._close("cannot send PING", abort=True)
            return
        self._flush()
        self._ping_timer = self.loop.call_later(
            self.pool.transport._ping_timeout, self._ping_expired)

    def _ping_expired(self) -> None:
        self._ping_timer = None
        self.pool.transport.stats.pings_failed += 1
        self._close(f"PING not answered within {self.pool.transport._ping_timeout}s", abort=True)

    def _on_ping_ack(self, ev: Any) -> None:
        if self._ping_payload is None or ev.ping_data != self._ping_payload:
            return
        self._ping_payload = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self.state is _CHECKING:
            self.state = _READY
            self.pool.wake(self.max_streams - self.active)

    # ----------------------------------------------------------------- I/O

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        data = self.h2.data_to_send()
        if data and self.state is not _CLOSED and self._writer is not None:
            self._writer.write(data)
            self._flush_gen += 1

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        h2c = self.h2
        dispatch = self._dispatch
        loop = self.loop
        why = "connection closed by server"
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                self.last_recv = loop.time()
                # Empty h2's outbound buffer first: a GOAWAY in ``data`` makes h2
                # discard whatever is still queued, and those bytes may be the rest
                # of a request body the server is still willing to accept.
                self._flush()
                try:
                    events = h2c.receive_data(data)
                except self.b.exceptions.ProtocolError as exc:
                    self._flush()  # h2 queued a GOAWAY for the peer
                    why = f"HTTP/2 protocol error from server: {exc}"
                    break
                for ev in events:
                    handler = dispatch.get(type(ev))
                    if handler is not None:
                        handler(ev)
                if self.state is _CLOSED:
                    return
                self._flush()
        except asyncio.CancelledError:
            why = "connection closed"
            raise
        except Exception as exc:  # TLS errors, resets: all mean the connection is gone
            why = f"connection lost: {type(exc).__name__}: {exc}"
        finally:
            self._close(why, abort=True)

    # ----------------------------------------------------------------- h2 events

    def _on_response(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        headers = stream.headers
        for name, value in ev.headers:
            if name[:1] == b":":
                if name == b":status":
                    stream.status = int(value) if len(value) == 3 and value.isdigit() else -1
            else:
                headers.append((name, value))
        if not 200 <= stream.status <= 999:
            # The library's inbound header checks are off (they were a tenth of a send's CPU): the
            # one field we depend on is checked here. A garbled answer may still mean "processed".
            self._reset(stream.sid, PROTOCOL_ERROR)
            self._finish(stream, ConnectionLost(
                f"malformed response on stream {stream.sid} (no valid :status); "
                "the request may have been processed", goaway=self.goaway, stream_id=stream.sid))

    def _on_trailers(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is not None:
            stream.headers.extend((n, v) for n, v in ev.headers if n[:1] != b":")

    def _on_data(self, ev: Any) -> None:
        # Give the window back immediately: we buffer whole (small) responses anyway,
        # and a big response must never stall on an unacknowledged window.
        if ev.flow_controlled_length:
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        stream = self.streams.get(ev.stream_id)
        if stream is not None and ev.data:
            stream.chunks.append(ev.data)

    def _on_stream_ended(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        if stream.body_offset is not None:
            # Complete response before our body was done (e.g. 413): stop sending
            # and close our side (RFC 9113 §8.1).
            self._reset(stream.sid, NO_ERROR)
        if not self.answered:
            self.pool.connection_proven()
        self.answered += 1
        self._finish(stream, None)

    def _on_stream_reset(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if ev.remote_reset:
            self.pool.transport.stats.resets += 1
        if stream is None:
            return
        if ev.error_code == REFUSED_STREAM:
            self._finish(stream, _Unprocessed(f"stream {stream.sid} refused (REFUSED_STREAM)",
                                              cause="refused_stream"))
        else:
            self._finish(stream, StreamReset(int(ev.error_code), stream_id=stream.sid,
                                             goaway=self.goaway))

    def _on_window_updated(self, ev: Any) -> None:
        if self._blocked:
            self._wake_blocked()

    def _on_settings(self, ev: Any) -> None:
        changed = ev.changed_settings
        first = not self._settings_seen.done()
        if first or self.b.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            old = self.max_streams
            # The live value; may go below the number of open streams (APNs drops to 1):
            # then no new stream is opened until enough have finished.
            self.max_streams = self.h2.remote_settings.max_concurrent_streams
            if self.counted_budget is not None and self.max_streams != self.counted_budget:
                self.pool.transport.metrics.budget.inc(self.max_streams - self.counted_budget)
                self.counted_budget = self.max_streams
            if self.state is _READY and self.max_streams > old:
                self.pool.wake(self.max_streams - max(old, self.active))
        if self._blocked and (self.b.SettingCodes.INITIAL_WINDOW_SIZE in changed
                              or self.b.SettingCodes.MAX_FRAME_SIZE in changed):
            self._wake_blocked()
        if first:
            self._settings_seen.set_result(None)

    def _on_goaway(self, ev: Any) -> None:
        goaway = GoAway(int(ev.error_code) if ev.error_code is not None else 0,
                        ev.last_stream_id if ev.last_stream_id is not None else 0,
                        bytes(ev.additional_data or b""))
        self.goaway = goaway
        self.pool.transport.stats.goaways += 1
        self.pool.transport.metrics.goaways.inc()
        # A connection still being set up is not counted here: connect() fails and
        # _Pool._open decides what its waiters get.
        was_usable = self.state in (_READY, _CHECKING)
        if self.state is not _CLOSED:
            self.state = _DRAINING
        if not self._settings_seen.done():
            self._settings_seen.set_exception(ConnectFailed(
                f"{self.pool.origin}: server sent {goaway.describe()} during connection setup",
                goaway=goaway))
        # Streams above last_stream_id were never processed: hand them back for resending.
        for stream in [s for s in self.streams.values() if s.sid > goaway.last_stream_id]:
            self._finish(stream, _Unprocessed(
                f"stream {stream.sid} not processed ({goaway.describe()})", goaway))
        if was_usable:
            if not self.answered:
                self.pool._note_failure()  # turned away before answering anything
            self.pool.connection_unusable(self)
        if not self.streams:
            self._close("GOAWAY received and no streams left", abort=False)

    def _on_pushed(self, ev: Any) -> None:  # pragma: no cover
        if ev.pushed_stream_id is not None:  # we disabled push; refuse it if it comes anyway
            self._reset(ev.pushed_stream_id, REFUSED_STREAM)

    # ----------------------------------------------------------------- bookkeeping

    def _reset(self, sid: int, code: int) -> None:
        if self.state is _CLOSED:
            return
        try:
            self.h2.reset_stream(sid, code)
        except self.b.exceptions.H2Error:
            return  # already closed on the h2 side
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _finish(self, stream: _Stream, exc: BaseException | None) -> None:
        if stream.done:
            return
        stream.done = True
        del self.streams[stream.sid]
        self.active -= 1
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        waiter = stream.window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        fut = stream.future
        if not fut.done():
            if exc is None:
                fut.set_result(stream)
            else:
                fut.set_exception(exc)
        state = self.state
        if state is _READY:
            if self.active < self.max_streams and self.pool.waiters:
                self.pool.wake(1)
        elif state is _DRAINING and not self.streams:
            self._close("drained", abort=False)

    def _wake_blocked(self) -> None:
        for stream in self._blocked:
            waiter = stream.window_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._blocked.clear()

    def _drain_locally(self, why: str) -> None:
        log.debug("%r draining: %s", self, why)
        was_usable = self.state in (_READY, _CHECKING)
        self.state = _DRAINING
        if was_usable:
            self.pool.connection_unusable(self)
        if not self.streams:
            self._close(why, abort=False)

    def _close(self, why: str, *, abort: bool) -> None:
        """Close the socket and fail what is left: unwritten streams are resent,
        written ones may have been processed."""
        if self.state is _CLOSED:
            return
        # Only a connection that was taking streams frees a place worth waking a
        # waiter for; a failed setup is reported by _Pool._open (no reconnect storm).
        was_live = self.state in (_READY, _CHECKING)
        if not abort:
            self._flush()  # queued RST_STREAM / GOAWAY frames go out before the close
        self.state = _CLOSED
        if self.counted_budget is not None:
            m = self.pool.transport.metrics
            m.open.dec()
            m.budget.dec(self.counted_budget)
            self.counted_budget = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        writer = self._writer
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
        goaway = self.goaway
        if not self._settings_seen.done():
            self._settings_seen.set_exception(ConnectFailed(
                f"{self.pool.origin}: {why} during connection setup", goaway=goaway))
            self._settings_seen.exception()  # connect() may already have given up on it
        if goaway is not None:
            why = f"{why} after {goaway.describe()}"
        for stream in list(self.streams.values()):
            if stream.gen >= self._flush_gen:
                exc: BaseException = _Unprocessed(f"{why}; request was never written", goaway, "unwritten")
            else:
                exc = ConnectionLost(
                    f"{why}: no response on stream {stream.sid}; the request may have been processed",
                    goaway=goaway, stream_id=stream.sid)
            self._finish(stream, exc)
        self._wake_blocked()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.pool.remove(self, was_live)

    async def aclose(self) -> None:
        """Graceful close from our side: GOAWAY, then close the socket."""
        connecting = self.connect_task
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        if self.state is not _CLOSED and self._writer is not None:
            try:
                self.h2.close_connection()
                self._flush()
            except self.b.exceptions.H2Error:
                pass
        writer = self._writer
        self._close("transport closed", abort=False)
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if writer is not None:
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()


class _Pool:
    """Connections to one origin, plus the FIFO of requests waiting for a stream slot."""

    def __init__(self, transport: H2Transport, scheme: str, host: str, port: int) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.origin = f"{scheme}://{host}:{port}"
        self.conns: list[_Connection] = []
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.closed = False
        # After a failed connect, while other connections still work, wait before
        # trying again: APNs treats rapid reconnects as abuse.
        self._connect_backoff = 0.0
        self._open_not_before = 0.0
        self._retry_handle: asyncio.TimerHandle | None = None

    def pick(self) -> _Connection | None:
        """The least loaded ready connection with a free slot, PINGing stale ones first."""
        best: _Connection | None = None
        best_free = 0
        now = 0.0
        for conn in self.conns:
            if conn.state is not _READY:
                continue
            free = conn.max_streams - conn.active
            if free <= best_free:
                continue
            if not now:
                now = self.loop.time()
            if now - conn.last_recv > self.transport._ping_after_idle:
                conn.health_check()  # a stale connection is verified before reuse
                continue
            best, best_free = conn, free
        return best

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
        live = 0
        for conn in self.conns:
            state = conn.state
            if state is _CONNECTING or state is _CHECKING:
                return  # its outcome will wake waiters; don't open in parallel
            if state is _READY:
                live += 1
        if live < self.transport._max_connections and not self.closed:
            if live and self.loop.time() < self._open_not_before:
                if self._retry_handle is None:
                    self._retry_handle = self.loop.call_at(self._open_not_before, self._retry_open)
                return
            conn = _Connection(self)
            self.conns.append(conn)
            conn.connect_task = self.loop.create_task(self._open(conn), name=f"h2-connect-{conn.id}")

    def _note_failure(self) -> None:
        self._connect_backoff = min(max(0.5, 2 * self._connect_backoff), 10.0)
        self._open_not_before = self.loop.time() + self._connect_backoff

    def connection_proven(self) -> None:
        # Only a connection that delivered a response resets the back-off: one that
        # passes the handshake and then dies at once counts as a failed attempt.
        self._connect_backoff = 0.0
        self._open_not_before = 0.0

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
        m.budget.inc(conn.max_streams)
        conn.counted_budget = conn.max_streams
        # Wake one more than there are slots: that waiter may open another connection.
        self.wake(conn.max_streams - conn.active + 1)

    def _connect_failed(self, exc: BaseException) -> None:
        if any(c.state in (_READY, _CHECKING, _CONNECTING) for c in self.conns):
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
        if was_live and not conn.answered:
            self._note_failure()
        if was_live:
            self.wake(1)

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


# --------------------------------------------------------------------------- transport


class H2Transport(httpx.AsyncBaseTransport):
    """An httpx async transport speaking HTTP/2 over TLS with exact resend semantics.

    ``ssl_context`` is used as given (client certificate, private CA...); its ALPN
    protocols are set to ``["h2"]``. Verification must be on.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int = 2,
        connect_timeout: float = 10.0,
        max_resends: int = 3,
        ping_after_idle: float = 60.0,
        ping_timeout: float = 5.0,
        backend: str | H2Backend = "auto",
        provider: str | None = None,
    ) -> None:
        if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
            raise ValueError("H2Transport requires an ssl_context that verifies the server "
                             "certificate and host name")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_resends < 0:
            raise ValueError("max_resends must be >= 0")
        ssl_context.set_alpn_protocols(["h2"])
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._max_resends = max_resends
        self._ping_after_idle = ping_after_idle
        self._ping_timeout = ping_timeout
        # The HTTP/2 library (``jh2`` or ``h2``, see push.h2backend); one per transport.
        self.backend = backend if isinstance(backend, H2Backend) else load_backend(backend)
        self._never = self.backend.never_indexed
        self._pools: dict[tuple[bytes, bytes, int | None], _Pool] = {}
        self._closed = False
        self.stats = TransportStats()
        # Prometheus children labelled with the provider this transport talks to (push.metrics).
        self.metrics = metrics.for_provider(provider)
        self.last_connect_error: str | None = None

    def never_connected(self) -> bool:
        """Every connection attempt so far failed (and there was at least one)."""
        return self.stats.connect_failures > 0 and self.stats.connections_opened == 0

    def __repr__(self) -> str:
        conns = [c for p in self._pools.values() for c in p.conns]
        streams = sum(c.active for c in conns)
        waiting = sum(len(p.waiters) for p in self._pools.values())
        state = "closed" if self._closed else "open"
        return (f"<H2Transport {state} connections={len(conns)} streams={streams} "
                f"waiting={waiting} {conns!r}>")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("H2Transport is closed")
        url = request.url
        pool = self._pools.get((url.raw_scheme, url.raw_host, url.port))
        if pool is None:
            pool = self._new_pool(url)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()  # streaming body: buffered so it can be resent
        headers = self._headers(request)
        read_timeout = pool_timeout = None
        timeouts = request.extensions.get("timeout")
        if timeouts:
            read_timeout = timeouts.get("read")
            pool_timeout = timeouts.get("pool")
        try:
            stream, resends = await self._exchange(pool, headers, body, read_timeout, pool_timeout, request)
            chunks = stream.chunks
            content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return httpx.Response(
                stream.status,
                headers=stream.headers,
                content=content,
                request=request,
                extensions={"http_version": b"HTTP/2", "stream_id": stream.sid,
                            "resends": resends},
            )
        except httpx.RequestError as exc:
            try:
                exc.request
            except RuntimeError:
                exc.request = request
            raise

    async def _exchange(self, pool: _Pool, headers: list[tuple[bytes, bytes]], body: bytes,
                        read_timeout: float | None, pool_timeout: float | None,
                        request: httpx.Request | None) -> tuple[_Stream, int]:
        """Send one request (resending it while provably unprocessed): its finished stream and resends."""
        loop = pool.loop
        resends = 0
        front = False
        read_deadline: float | None = None
        while True:
            now = loop.time()
            deadline = None if pool_timeout is None else now + pool_timeout
            if read_deadline is not None:
                if read_deadline <= now:  # only possible before a resend
                    raise httpx.PoolTimeout(
                        "deadline passed before the request could be resent; "
                        "it was not processed")
                if deadline is None or read_deadline < deadline:
                    deadline = read_deadline
            conn = await pool.acquire(deadline, front)
            stream = conn.start(headers, body)
            if stream is None:
                front = True
                continue
            if read_timeout is not None:
                if read_deadline is None:
                    # One deadline across resends: a resend must not extend the wait.
                    read_deadline = loop.time() + read_timeout
                stream.timer = loop.call_at(read_deadline, conn.deadline_passed, stream)
            try:
                if stream.body_offset is not None:
                    await conn.send_body(stream, body)
                await stream.future
            except _Unprocessed as exc:
                resends += 1
                if resends > self._max_resends:
                    raise ResendLimitExceeded(
                        f"request not processed by the server ({exc.why}); gave up after "
                        f"{self._max_resends} resends", request=request,
                        goaway=exc.goaway, resends=resends - 1) from exc
                self.stats.resends += 1
                self.metrics.resends[exc.cause].inc()
                front = True
                continue
            except BaseException:
                conn.abandon(stream)
                raise
            return stream, resends

    def _pool_for(self, url: httpx.URL | str) -> _Pool:
        url = httpx.URL(url)
        pool = self._pools.get((url.raw_scheme, url.raw_host, url.port))
        return pool if pool is not None else self._new_pool(url)

    def free_streams(self, url: httpx.URL | str) -> int:
        """Requests to ``url``'s origin that could be written right now: free stream slots on ready
        connections, less the requests already waiting for one."""
        if self._closed:
            return 0
        pool = self._pool_for(url)
        free = sum(max(0, c.max_streams - c.active) for c in pool.conns if c.state is _READY)
        return max(0, free - len(pool.waiters))

    async def wait_free_stream(self, url: httpx.URL | str, timeout: float | None) -> bool:
        """Wait until ``url``'s origin has a ready connection with a free stream slot (opening a
        connection if needed); False when none could be had in time.

        Callers that record "about to send" before sending (the delivery ledger) wait here and
        then record only ``free_streams()`` requests, so a stop during connection set-up, or while
        requests queue for a stream, never leaves recorded sends that could not have left.
        """
        if self._closed:
            return False
        if self.free_streams(url):
            return True
        pool = self._pool_for(url)
        deadline = None if timeout is None else pool.loop.time() + timeout
        try:
            await pool.acquire(deadline, False)
        except (httpx.ConnectError, httpx.PoolTimeout):
            return False
        pool.wake(1)  # the slot we were handed is not used here: pass it on
        return True

    def _new_pool(self, url: httpx.URL) -> _Pool:
        if url.scheme != "https":
            raise httpx.UnsupportedProtocol(f"H2Transport only speaks https, not {url.scheme!r}")
        port = url.port or 443
        pool = _Pool(self, url.scheme, url.host, port)
        self._pools[(url.raw_scheme, url.raw_host, url.port)] = pool
        return pool

    def _headers(self, request: httpx.Request) -> list[tuple[bytes, bytes]]:
        """HTTP/2 request headers, validated and normalised here once (h2's own pass is off)."""
        url = request.url
        authority = request.headers.get("host")
        if authority is None:
            authority = url.netloc.decode("ascii")
        never = self._never
        headers: list[tuple[bytes, bytes]] = [
            (b":method", request.method.encode("ascii")),
            (b":scheme", b"https"),
            (b":authority", authority.encode("ascii")),
            never(b":path", url.raw_path),
        ]
        for name, value in request.headers.raw:
            name = name.lower()
            if name in _SKIP_HEADERS or (name == b"te" and value.lower() != b"trailers"):
                continue
            value = value.strip()
            if not name or _BAD_NAME(name) is not None or _BAD_VALUE(value) is not None:
                raise httpx.LocalProtocolError(f"invalid header for HTTP/2: {name!r}")
            if name in _NEVER_INDEXED:
                headers.append(never(name, value))
            else:
                headers.append((name, value))
        return headers

    async def aclose(self) -> None:
        """Send GOAWAY on every connection, close the sockets, fail anything pending."""
        if self._closed:
            return
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)


def transport_from_config(config: Any, ssl_context: ssl.SSLContext, provider: str | None = None) -> H2Transport:
    """The transport a provider client builds from a ``PushConfig`` when none is injected."""
    try:
        backend = load_backend(config.h2_backend)
    except BackendUnavailable as exc:
        raise ConfigError("PUSH_H2_BACKEND", str(exc)) from None
    # While a health-check PING is pending no new stream starts on that connection, so the
    # PING must not outlast the send deadline: a silently dead connection would otherwise
    # fail every send (PoolTimeout) until it is given up.
    return H2Transport(ssl_context=ssl_context, max_connections=config.max_connections,
                       ping_timeout=min(5.0, config.stream_timeout / 2), backend=backend, provider=provider)


def warn_if_never_connected(transport: Any, provider: str, base_url: str) -> None:
    """The one warning line when no connection to a provider ever worked (every notification sent
    through it was then parked for retry, never delivered)."""
    if isinstance(transport, H2Transport) and transport.never_connected():
        log.warning("%s: every connection to %s failed (%d attempts; last: %s); nothing was delivered through it",
                    provider, base_url, transport.stats.connect_failures, transport.last_connect_error,
                    extra={"provider": provider})


# --------------------------------------------------------------------------- direct posts

_HTTPX_LOG = logging.getLogger("httpx")
# Request paths httpx's URL merge leaves byte-for-byte unchanged (no escaping, no dot segments).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_~:/-]*").fullmatch


class DirectResponse:
    """What the APNs/FCM clients read from a response: ``status_code``, ``headers``, ``content``."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


class _Template:
    __slots__ = ("headers", "path_at", "length_at", "values")

    def __init__(self, headers: list[tuple[bytes, bytes]], path_at: int, length_at: int,
                 values: list[tuple[str, int, bytes, bool]]) -> None:
        self.headers = headers
        self.path_at = path_at
        self.length_at = length_at
        self.values = values  # (request header key, index, wire name, never indexed)


class DirectPost:
    """``client.post(path, content=body, headers=headers)`` straight into the client's H2Transport.

    For the APNs/FCM clients' own ``httpx.AsyncClient``: the same header block
    on the wire (taken from a request httpx builds once per header shape), the
    same deadlines and the same exceptions, minus httpx's per-request URL
    parsing, header merging, cookie extraction and response wrapping, which were
    about half of a send's CPU. ``usable()`` is False (use ``client.post``)
    whenever httpx would do something more: a closed client, cookies in its jar,
    INFO logging on the ``httpx`` logger, a path httpx would rewrite, an empty
    body, auth or event hooks, or a mount (e.g. an environment proxy) in front of
    the transport. Responses carrying Set-Cookie or Content-Encoding are handed
    back as the ``httpx.Response`` httpx would build (cookies stored, body decoded).
    """

    def __init__(self, client: httpx.AsyncClient, transport: H2Transport) -> None:
        self._client = client
        self._transport = transport
        base = client.base_url
        self._base = base
        self._prefix = base.raw_path  # httpx keeps base_url ending in "/"
        timeout = client.timeout
        self._read_timeout, self._pool_timeout = timeout.read, timeout.pool
        self._templates: dict[tuple[str, ...], _Template | None] = {}
        try:
            mounted = client._transport_for_url(base)  # an environment proxy would take over here
        except Exception:  # noqa: BLE001 - unknown httpx internals: keep to the regular path
            mounted = None
        self._enabled = (
            mounted is transport and base.scheme == "https" and not base.query
            and client.auth is None and not any(client.event_hooks.values())
            and self._prefix.endswith(b"/"))

    @property
    def transport(self) -> H2Transport:
        return self._transport

    def usable(self, path: str, body: bytes) -> bool:
        return (self._enabled and bool(body) and _PLAIN_PATH(path) is not None and not self._client.is_closed
                and not self._client.cookies and not _HTTPX_LOG.isEnabledFor(logging.INFO))

    def _template(self, names: tuple[str, ...]) -> _Template | None:
        """The header block httpx + ``H2Transport._headers`` produce for this shape, and where values go."""
        try:
            sample = self._client.build_request("POST", "/x", content=b"x", headers=dict.fromkeys(names, "x"))
            headers = self._transport._headers(sample)
        except Exception:  # noqa: BLE001 - the regular path raises the same error in the caller's flow
            return None
        path_at = length_at = -1
        values: list[tuple[str, int, bytes, bool]] = []
        wanted = {name.lower().encode("ascii"): name for name in names}
        for i, header in enumerate(headers):
            name = header[0]
            if name == b":path":
                path_at = i
            elif name == b"content-length":
                length_at = i
            elif name in wanted:
                values.append((wanted.pop(name), i, name, self._transport.backend.is_never_indexed(header)))
        if path_at < 0 or length_at < 0 or wanted:
            return None
        return _Template(headers, path_at, length_at, values)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> DirectResponse | httpx.Response:
        """Call only when ``usable(path, body)``; falls back to ``client.post`` for an unusual header shape."""
        names = tuple(headers)
        if names in self._templates:
            template = self._templates[names]
        else:
            template = self._templates[names] = self._template(names)
        if template is None:
            return await self._client.post(path, content=body, headers=headers)
        transport = self._transport
        if transport._closed:
            raise RuntimeError("H2Transport is closed")
        never = transport._never
        block = template.headers.copy()
        block[template.path_at] = never(b":path", self._prefix + path[1:].encode("ascii"))
        block[template.length_at] = never(b"content-length", b"%d" % len(body))
        for key, at, name, is_never in template.values:
            value = headers[key].encode("ascii").strip()
            if _BAD_VALUE(value) is not None:
                raise httpx.LocalProtocolError(f"invalid header for HTTP/2: {name!r}")
            block[at] = never(name, value) if is_never else (name, value)
        base = self._base
        pool = transport._pools.get((base.raw_scheme, base.raw_host, base.port))
        if pool is None:
            pool = transport._new_pool(base)
        stream, _ = await transport._exchange(pool, block, body, self._read_timeout, self._pool_timeout, None)
        chunks = stream.chunks
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        raw = stream.headers
        plain: dict[str, str] = {}
        try:
            for name, value in raw:
                if name == b"set-cookie" or name == b"content-encoding":
                    return self._as_httpx(path, body, headers, stream.status, raw, content)
                key, text = name.decode("ascii"), value.decode("ascii")
                plain[key] = plain[key] + ", " + text if key in plain else text
        except UnicodeDecodeError:
            return self._as_httpx(path, body, headers, stream.status, raw, content)
        return DirectResponse(stream.status, plain, content)

    def _as_httpx(self, path: str, body: bytes, headers: dict[str, str], status: int,
                  raw: list[tuple[bytes, bytes]], content: bytes) -> httpx.Response:
        """The response as httpx would hand it over: decoded body, cookies stored in the client's jar."""
        request = self._client.build_request("POST", path, content=body, headers=headers)
        response = httpx.Response(status, headers=raw, content=content, request=request)
        self._client.cookies.extract_cookies(response)
        return response
