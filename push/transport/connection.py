"""One HTTP/2 connection: an h2 state machine, a TLS socket, a reader task and the timers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from typing import TYPE_CHECKING, Any, Callable

import httpx

from push.transport.core.connection import CLOSED, ConnectionCore, Verdict, reset_verdict
from push.transport.errors import ConnectFailed, ConnectionLost, StreamReset, Unprocessed
from push.transport.values import CANCEL, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, GoAway

if TYPE_CHECKING:
    from push.transport.pool import _Pool

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024

class _Stream:
    """Per-stream state, owned by its connection; the request coroutine awaits ``future``."""

    __slots__ = ("sid", "future", "gen", "status", "headers", "chunks", "done", "timer",
                 "body_offset", "window_waiter")

    def __init__(self, sid: int, future: asyncio.Future[_Stream], gen: int) -> None:
        self.sid = sid
        self.future = future
        # The connection's write generation when our frames were queued in h2
        # (ConnectionCore.written says whether they reached the socket).
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
    """One HTTP/2 connection: an h2 state machine, a socket, and a reader task.

    Feeds every event to its ``ConnectionCore`` (``self.core``) and performs what
    the core decides; it keeps only I/O state (socket, futures, timers, h2).
    """

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.id = next(_ids)
        self.core = ConnectionCore(self.loop.time())
        backend = pool.transport.backend
        self.b = backend
        # Reads the open-stream count from the core (push.h2backend).
        self.h2 = backend.connection_class(self.core)
        self.streams: dict[int, _Stream] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None  # the reader
        self.connect_task: asyncio.Task[None] | None = None  # strong ref: asyncio keeps weak ones
        self._flush_handle: asyncio.Handle | None = None
        self._blocked: set[_Stream] = set()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._settings_seen: asyncio.Future[None] = self.loop.create_future()
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
        return f"<conn #{self.id} {self.core!r}>"

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
                if self.core.state is CLOSED:  # the transport was closed meanwhile
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
            if not self.core.opened():  # GOAWAY or EOF right after SETTINGS
                raise ConnectFailed(f"{pool.origin}: connection closed during setup",
                                    goaway=self.core.goaway)
        except BaseException as exc:
            self._close("connect failed", abort=True)
            if isinstance(exc, ConnectFailed):
                raise
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(f"{pool.origin}: connect timed out after {timeout}s") from exc
            if isinstance(exc, (OSError, ssl.SSLError, EOFError)):
                raise ConnectFailed(f"{pool.origin}: {type(exc).__name__}: {exc}") from exc
            raise

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
        stream = _Stream(sid, self.loop.create_future(), self.core.stream_opened())
        self.streams[sid] = stream
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
            if stream.done or self.core.state is CLOSED:
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
        if self.core.request_timed_out():
            self.health_check()

    # ----------------------------------------------------------------- health

    def health_check(self) -> None:
        """Send a PING; new streams wait until it is answered, close if it isn't."""
        payload = next(_ids).to_bytes(8, "big")
        deadline = self.core.begin_ping(self.loop.time(), payload, self.pool.transport._ping_timeout)
        if deadline is None:
            return
        try:
            self.h2.ping(payload)
        except self.b.exceptions.ProtocolError:  # pragma: no cover - h2 already closed
            self._close("cannot send PING", abort=True)
            return
        self._flush()
        self._ping_timer = self.loop.call_at(deadline, self._ping_timer_fired)

    def _ping_timer_fired(self) -> None:
        self._ping_timer = None
        core = self.core
        if core.ping_overdue(self.loop.time()):
            self.pool.transport.stats.pings_failed += 1
            self._close(f"PING not answered within {self.pool.transport._ping_timeout}s", abort=True)
        elif core.ping_deadline is not None:  # the loop ran the timer a little early
            self._ping_timer = self.loop.call_at(core.ping_deadline, self._ping_timer_fired)

    def _on_ping_ack(self, ev: Any) -> None:
        wake = self.core.ping_acked(ev.ping_data)
        if wake is None:
            return
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if wake > 0:
            self.pool.wake(wake)

    # ----------------------------------------------------------------- I/O

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        data = self.h2.data_to_send()
        if data and self.core.state is not CLOSED and self._writer is not None:
            self._writer.write(data)
            self.core.flushed()

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        h2c = self.h2
        dispatch = self._dispatch
        loop = self.loop
        core = self.core
        why = "connection closed by server"
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                core.data_received(loop.time())
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
                if core.state is CLOSED:
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
                "the request may have been processed", goaway=self.core.goaway, stream_id=stream.sid))

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
        if self.core.response_complete():
            self.pool.connection_proven()
        self._finish(stream, None)

    def _on_stream_reset(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if ev.remote_reset:
            self.pool.transport.stats.resets += 1
        if stream is None:
            return
        code = int(ev.error_code)
        if reset_verdict(code) is Verdict.RESEND:
            self._finish(stream, Unprocessed(f"stream {stream.sid} refused (REFUSED_STREAM)",
                                             cause="refused_stream"))
        else:
            self._finish(stream, StreamReset(code, stream_id=stream.sid, goaway=self.core.goaway))

    def _on_window_updated(self, ev: Any) -> None:
        if self._blocked:
            self._wake_blocked()

    def _on_settings(self, ev: Any) -> None:
        changed = ev.changed_settings
        first = not self._settings_seen.done()
        if first or self.b.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            wake, budget_delta = self.core.settings(self.h2.remote_settings.max_concurrent_streams)
            if budget_delta:
                self.pool.transport.metrics.budget.inc(budget_delta)
            if wake > 0:
                self.pool.wake(wake)
        if self._blocked and (self.b.SettingCodes.INITIAL_WINDOW_SIZE in changed
                              or self.b.SettingCodes.MAX_FRAME_SIZE in changed):
            self._wake_blocked()
        if first:
            self._settings_seen.set_result(None)

    def _on_goaway(self, ev: Any) -> None:
        goaway = GoAway(int(ev.error_code) if ev.error_code is not None else 0,
                        ev.last_stream_id if ev.last_stream_id is not None else 0,
                        bytes(ev.additional_data or b""))
        self.pool.transport.stats.goaways += 1
        self.pool.transport.metrics.goaways.inc()
        core = self.core
        was_usable, turned_away = core.goaway_received(goaway)
        if not self._settings_seen.done():
            self._settings_seen.set_exception(ConnectFailed(
                f"{self.pool.origin}: server sent {goaway.describe()} during connection setup",
                goaway=goaway))
        for stream in [s for s in self.streams.values() if core.unprocessed_by_goaway(s.sid)]:
            self._finish(stream, Unprocessed(
                f"stream {stream.sid} not processed ({goaway.describe()})", goaway))
        if turned_away:
            self.pool._note_failure()
        if was_usable:
            self.pool.connection_unusable(self)
        if not self.streams:
            self._close("GOAWAY received and no streams left", abort=False)

    def _on_pushed(self, ev: Any) -> None:  # pragma: no cover
        if ev.pushed_stream_id is not None:  # we disabled push; refuse it if it comes anyway
            self._reset(ev.pushed_stream_id, REFUSED_STREAM)

    # ----------------------------------------------------------------- bookkeeping

    def _reset(self, sid: int, code: int) -> None:
        if self.core.state is CLOSED:
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
        drained = self.core.stream_closed()
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
        if self.core.slot_freed():
            if self.pool.waiters:
                self.pool.wake(1)
        elif drained:
            self._close("drained", abort=False)

    def _wake_blocked(self) -> None:
        for stream in self._blocked:
            waiter = stream.window_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._blocked.clear()

    def _drain_locally(self, why: str) -> None:
        log.debug("%r draining: %s", self, why)
        if self.core.drain():
            self.pool.connection_unusable(self)
        if not self.streams:
            self._close(why, abort=False)

    def _close(self, why: str, *, abort: bool) -> None:
        """Close the socket and fail what is left: unwritten streams are resent,
        written ones may have been processed."""
        core = self.core
        if core.state is CLOSED:
            return
        if not abort:
            self._flush()  # queued RST_STREAM / GOAWAY frames go out before the close
        closed = core.close()
        assert closed is not None
        was_live, budget = closed
        if budget is not None:
            m = self.pool.transport.metrics
            m.open.dec()
            m.budget.dec(budget)
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
        goaway = core.goaway
        if not self._settings_seen.done():
            self._settings_seen.set_exception(ConnectFailed(
                f"{self.pool.origin}: {why} during connection setup", goaway=goaway))
            self._settings_seen.exception()  # connect() may already have given up on it
        if goaway is not None:
            why = f"{why} after {goaway.describe()}"
        for stream in list(self.streams.values()):
            if core.closed_verdict(stream.gen) is Verdict.RESEND:
                exc: BaseException = Unprocessed(f"{why}; request was never written", goaway, "unwritten")
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
        if self.core.state is not CLOSED and self._writer is not None:
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
