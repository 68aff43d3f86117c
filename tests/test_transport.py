"""H2Transport against a real HTTP/2 server over TLS on 127.0.0.1 (throwaway trustme CA).

The server here is a small scripted h2 server running in the test's own event
loop. It is kept in this file on purpose: these tests need exact frame
sequences (GOAWAY with a chosen last_stream_id *followed* by responses, SETTINGS
lowering the stream limit while streams are open, a connection that silently
stops answering PINGs), which a scenario-driven fake push server does not
expose. Frames h2 would refuse to send in a given state (GOAWAY that must not
stop later responses, SETTINGS the server h2 should not enforce) are written as
raw hyperframe frames so the server's own h2 state stays usable.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest
import trustme
from hyperframe.frame import GoAwayFrame, SettingsFrame

from fixtures.keys import ApnsKey, apns_jwt
from fixtures.scenarios import apns_token, ok_apns_token
from fixtures.server import FakePushServer
from fixtures.tls import TestPKI
from push.config import PushConfig
from push.errors import ConfigError
from push.h2backend import available_backends, load_backend
from push.transport import (
    ConnectFailed,
    ConnectionLost,
    H2Transport,
    ResendLimitExceeded,
    StreamReset,
    transport_from_config,
)

pytestmark = pytest.mark.timeout(10)

MCS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


# --------------------------------------------------------------------------- scripted server


@dataclass
class Req:
    conn: ServerConn
    stream_id: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def id(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class Behaviour:
    """What the server does. Subclass per test; the default answers 200 at once."""

    max_streams = 1000  # advertised in the server's first SETTINGS
    enforce_limit = True  # RST_STREAM REFUSED_STREAM for streams above the advertised limit

    def on_connect(self, conn: ServerConn) -> None:
        pass

    def on_headers(self, conn: ServerConn, req: Req) -> bool:
        """Called when a request's HEADERS arrive; True = handled, skip on_request."""
        return False

    def on_request(self, conn: ServerConn, req: Req) -> None:
        conn.respond(req)


class ServerConn(asyncio.Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.behaviour = server.behaviour
        self.index = -1
        self.transport: asyncio.Transport | None = None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        # The server's h2 never enforces a stream limit itself (it would kill the whole
        # connection); we advertise limits with raw SETTINGS and refuse streams ourselves.
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={MCS: 2**31 - 1})
        self.advertised = self.behaviour.max_streams
        self.open: set[int] = set()
        self.peak_open = 0
        self.partial: dict[int, Req] = {}
        self.pending_out: dict[int, memoryview] = {}
        self.frozen = False  # drop everything we would write (blackholed connection)
        self.ack_data = True  # False: hold back WINDOW_UPDATEs (stalls client uploads)
        self.unacked: list[tuple[int, int]] = []
        self.closed = False
        self.pings = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.index = len(self.server.conns)
        self.server.conns.append(self)
        self.h2.initiate_connection()
        self.h2.data_to_send()  # replaced by our own SETTINGS frame below
        self.write_raw(_settings_frame({MCS: self.advertised}))
        self.behaviour.on_connect(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.server.protocol_errors.append(repr(exc))
            self.flush()
            self.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._on_request_headers(ev)
            elif isinstance(ev, h2.events.DataReceived):
                if self.ack_data:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    self.unacked.append((ev.stream_id, ev.flow_controlled_length))
                if ev.stream_id in self.partial:
                    self.partial[ev.stream_id].body += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                req = self.partial.pop(ev.stream_id, None)
                if req is not None:
                    self.server.requests.append(req)
                    self.behaviour.on_request(self, req)
            elif isinstance(ev, h2.events.StreamReset):
                self.server.client_resets.append((self.index, ev.stream_id, ev.error_code))
                self.open.discard(ev.stream_id)
                self.partial.pop(ev.stream_id, None)
                self.pending_out.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.pending_out):
                    self._pump(sid)
            elif isinstance(ev, h2.events.PingReceived):
                self.pings += 1
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.server.client_goaways.append(self.index)
        self.flush()

    def _on_request_headers(self, ev: h2.events.RequestReceived) -> None:
        hdrs = {k.decode(): v.decode() for k, v in ev.headers}
        req = Req(self, ev.stream_id, hdrs[":method"], hdrs[":path"], hdrs)
        if self.behaviour.enforce_limit and len(self.open) >= self.advertised:
            self.server.refused.append(req.id)
            self.reset(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.open.add(ev.stream_id)
        self.peak_open = max(self.peak_open, len(self.open))
        if self.behaviour.on_headers(self, req):
            return
        if ev.stream_ended:
            self.server.requests.append(req)
            self.behaviour.on_request(self, req)
        else:
            self.partial[ev.stream_id] = req

    # actions used by behaviours
    def respond(self, req: Req, status: int = 200, body: bytes | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.closed:
            return
        if body is None:
            body = json.dumps({"id": req.id, "conn": self.index, "stream": req.stream_id,
                               "len": len(req.body),
                               "sha": hashlib.sha256(req.body).hexdigest()}).encode()
        hdrs = [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.encode(), v.encode()) for k, v in headers]
        self.h2.send_headers(req.stream_id, hdrs, end_stream=not body)
        if body:
            self.pending_out[req.stream_id] = memoryview(body)
            self._pump(req.stream_id)
        self.open.discard(req.stream_id)
        self.server.processed.append(req.id)
        self.flush()

    def _pump(self, sid: int) -> None:
        data = self.pending_out[sid]
        while data:
            n = min(len(data), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n <= 0:
                break
            self.h2.send_data(sid, data[:n].tobytes(), end_stream=n == len(data))
            data = data[n:]
        if data:
            self.pending_out[sid] = data
        else:
            del self.pending_out[sid]

    def ack_all(self) -> None:
        """Resume acknowledging DATA, giving back everything held so far."""
        self.ack_data = True
        for sid, n in self.unacked:
            self.h2.acknowledge_received_data(n, sid)
        self.unacked.clear()
        self.flush()

    def reset(self, sid: int, code: int) -> None:
        self.h2.reset_stream(sid, code)
        self.open.discard(sid)
        self.flush()

    def goaway(self, last_stream_id: int, error_code: int = 0, debug: bytes = b"") -> None:
        # Raw frame: the server's h2 would otherwise refuse to send the responses that
        # RFC 9113 still allows for streams <= last_stream_id.
        self.write_raw(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code,
                                   additional_data=debug).serialize())

    def set_max_streams(self, n: int) -> None:
        self.advertised = n
        self.write_raw(_settings_frame({MCS: n}))

    def drop(self) -> None:
        """TCP abort, no GOAWAY, no TLS close_notify."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def write_raw(self, data: bytes) -> None:
        self.flush()  # keep frame order
        if not self.frozen and not self.closed and self.transport is not None:
            self.transport.write(data)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.frozen and not self.closed and self.transport is not None:
            self.transport.write(data)


def _settings_frame(values: dict[int, int]) -> bytes:
    frame = SettingsFrame(0)
    frame.settings = dict(values)
    return frame.serialize()


class ScriptedServer:
    def __init__(self, ca: trustme.CA, behaviour: Behaviour | None = None) -> None:
        self.ca = ca
        self.behaviour = behaviour or Behaviour()
        self.conns: list[ServerConn] = []
        self.requests: list[Req] = []  # every complete request received
        self.processed: list[str] = []  # request ids answered
        self.refused: list[str] = []
        self.client_resets: list[tuple[int, int, int]] = []
        self.client_goaways: list[int] = []
        self.protocol_errors: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        ctx.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ServerConn(self), "127.0.0.1", 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.abort()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def run(coro_fn: Callable[[], Awaitable[Any]], limit: float = 9.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro_fn(), limit)
    return asyncio.run(main())


def client_for(server: ScriptedServer, **kw: Any) -> tuple[httpx.AsyncClient, H2Transport]:
    transport = H2Transport(ssl_context=server.client_context(), **kw)
    client = httpx.AsyncClient(transport=transport, base_url=server.url, trust_env=False,
                               timeout=httpx.Timeout(5.0))
    return client, transport


async def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def post(client: httpx.AsyncClient, rid: str, **kw: Any) -> Awaitable[httpx.Response]:
    return client.post(f"/3/device/{rid}", content=kw.pop("content", b'{"aps":{}}'), **kw)


class Hold(Behaviour):
    """Hold requests until ``count`` are open on one connection, then call ``release``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.held: dict[int, list[Req]] = collections.defaultdict(list)

    def on_request(self, conn: ServerConn, req: Req) -> None:
        held = self.held[conn.index]
        held.append(req)
        if len(held) == self.count:
            self.release(conn, held)

    def release(self, conn: ServerConn, held: list[Req]) -> None:
        for req in held:
            conn.respond(req)


# --------------------------------------------------------------------------- tests


def test_basic_request_response(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, transport = client_for(server)
            async with client:
                r = await post(client, "a1", headers={"apns-topic": "com.example"})
                assert r.status_code == 200
                assert r.json()["id"] == "a1"
                assert r.extensions["http_version"] == b"HTTP/2"
                assert r.extensions["stream_id"] == 1
                assert r.extensions["resends"] == 0
                assert r.http_version == "HTTP/2"
                req = server.requests[0]
                assert req.headers[":authority"] == f"127.0.0.1:{server.port}"
                assert req.headers["apns-topic"] == "com.example"
                assert "connection" not in req.headers and "host" not in req.headers
                assert "connections=1" in repr(transport)
            assert transport.stats.connections_opened == 1
            assert "closed" in repr(transport)
    run(main)


def test_many_concurrent_streams_beyond_100_on_one_connection(ca: trustme.CA) -> None:
    n = 300
    behaviour = Hold(n)  # nothing is answered until all 300 are open at once

    async def main() -> None:
        async with ScriptedServer(ca, behaviour) as server:
            client, transport = client_for(server, max_connections=1)
            async with client:
                rs = await asyncio.gather(*(post(client, f"m{i}") for i in range(n)))
            assert all(r.status_code == 200 for r in rs)
            assert len(server.conns) == 1
            assert server.conns[0].peak_open == n
            assert sorted(server.processed) == sorted(f"m{i}" for i in range(n))
            assert transport.stats.resends == 0
    run(main)


class GoawayBelowOpen(Hold):
    """First connection: once 10 requests are open, GOAWAY(last_stream_id=9), *then*
    answer streams 1..9 (allowed after GOAWAY), then close. Others answer normally."""

    def release(self, conn: ServerConn, held: list[Req]) -> None:
        if conn.index != 0:
            return super().release(conn, held)
        conn.goaway(9, 0, b'{"reason":"Shutdown"}')
        for req in held:
            if req.stream_id <= 9:
                conn.respond(req)
        conn.close()

    def on_request(self, conn: ServerConn, req: Req) -> None:
        if conn.index == 0:
            super().on_request(conn, req)
        else:
            conn.respond(req)


def test_goaway_resends_only_unprocessed_streams(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, GoawayBelowOpen(10)) as server:
            client, transport = client_for(server)
            async with client:
                rs = await asyncio.gather(*(post(client, f"g{i}") for i in range(10)))
            assert [r.status_code for r in rs] == [200] * 10
            by_conn = collections.Counter(r.json()["conn"] for r in rs)
            assert by_conn == {0: 5, 1: 5}
            for r in rs:
                # streams 1..9 answered on the first connection; the rest resent once
                assert r.extensions["resends"] == (0 if r.json()["conn"] == 0 else 1)
            # every notification processed exactly once, including the resent ones
            assert collections.Counter(server.processed) == {f"g{i}": 1 for i in range(10)}
            assert transport.stats.goaways == 1
            assert transport.stats.resends == 5
            assert not server.protocol_errors
    run(main)


class GoawayThenDie(Hold):
    """GOAWAY(last_stream_id=3, INTERNAL_ERROR), answer stream 1, drop stream 3 by closing."""

    def release(self, conn: ServerConn, held: list[Req]) -> None:
        if conn.index != 0:
            return super().release(conn, held)
        conn.goaway(3, 2, b'{"reason":"Shutdown"}')
        conn.respond(next(r for r in held if r.stream_id == 1))
        conn.drop()

    def on_request(self, conn: ServerConn, req: Req) -> None:
        if conn.index == 0:
            super().on_request(conn, req)
        else:
            conn.respond(req)


def test_goaway_then_close_reports_maybe_processed_streams(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, GoawayThenDie(4)) as server:
            client, transport = client_for(server)
            async with client:
                results = await asyncio.gather(*(post(client, f"d{i}") for i in range(4)),
                                               return_exceptions=True)
            ok = [r for r in results if isinstance(r, httpx.Response)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(ok) == 3 and len(lost) == 1
            exc = lost[0]
            assert isinstance(exc, ConnectionLost) and not isinstance(exc, StreamReset)
            assert exc.may_have_been_processed is True
            assert exc.stream_id == 3
            assert exc.goaway_error_code == 2
            assert exc.goaway_debug_data == b'{"reason":"Shutdown"}'
            assert exc.reason == "Shutdown"
            assert exc.request.url.path.startswith("/3/device/")
            # never resent: the server saw it exactly once
            lost_id = next(r.id for r in server.requests if r.stream_id == 3 and r.conn.index == 0)
            assert [r.id for r in server.requests].count(lost_id) == 1
            assert sorted(r.extensions["resends"] for r in ok) == [0, 1, 1]
    run(main)


class RefuseFirst(Behaviour):
    """REFUSED_STREAM for the first attempt of each id (``always*``: every attempt)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def on_request(self, conn: ServerConn, req: Req) -> None:
        if req.id.startswith("always") or req.id not in self.seen:
            self.seen.add(req.id)
            conn.reset(req.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            conn.respond(req)


def test_refused_stream_is_resent(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, RefuseFirst()) as server:
            client, transport = client_for(server, max_resends=2)
            async with client:
                r = await post(client, "r1")
                assert r.status_code == 200
                assert r.extensions["resends"] == 1
                assert server.processed == ["r1"]

                with pytest.raises(ResendLimitExceeded) as info:
                    await post(client, "always1")
                assert info.value.may_have_been_processed is False
                assert info.value.resends == 2
                assert [q.id for q in server.requests].count("always1") == 3  # 1 + 2 resends
                assert "always1" not in server.processed
            assert transport.stats.resets == 4
            assert transport.stats.connections_opened == 1  # a refusal keeps the connection
    run(main)


class ResetWith(Behaviour):
    def on_request(self, conn: ServerConn, req: Req) -> None:
        code = {"internal": 2, "cancel": 8, "noerr": 0}.get(req.id)
        if code is None:
            conn.respond(req)
        else:
            conn.reset(req.stream_id, code)


@pytest.mark.parametrize("rid,code", [("internal", 2), ("cancel", 8), ("noerr", 0)])
def test_other_rst_stream_raises_stream_reset(ca: trustme.CA, rid: str, code: int) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, ResetWith()) as server:
            client, transport = client_for(server)
            async with client:
                with pytest.raises(StreamReset) as info:
                    await post(client, rid)
                assert info.value.error_code == code
                assert info.value.may_have_been_processed is True
                assert isinstance(info.value, ConnectionLost)
                assert [q.id for q in server.requests] == [rid]  # not resent
                r = await post(client, "after")  # the connection is still fine
                assert r.status_code == 200
            assert transport.stats.connections_opened == 1
    run(main)


class NoResponse(Behaviour):
    """``silent*``: never answered. ``freeze*``: never answered and the connection goes
    dark (nothing written any more, PINGs included)."""

    def on_request(self, conn: ServerConn, req: Req) -> None:
        if req.id.startswith("freeze"):
            conn.frozen = True
        elif not req.id.startswith("silent"):
            conn.respond(req)


def test_no_response_times_out_and_connection_is_health_checked(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, NoResponse()) as server:
            client, transport = client_for(server, ping_timeout=1.0)
            async with client:
                t0 = time.monotonic()
                with pytest.raises(httpx.ReadTimeout):
                    await post(client, "silent1", timeout=httpx.Timeout(5.0, read=0.4))
                elapsed = time.monotonic() - t0
                assert 0.35 < elapsed < 2.0  # the deadline, not the 5 s default
                await wait_until(lambda: bool(server.client_resets))
                assert server.client_resets == [(0, 1, 8)]  # RST_STREAM CANCEL
                r = await post(client, "after")
                assert r.status_code == 200
                assert server.conns[0].pings == 1  # PINGed before reuse, answered, reused
                assert r.json()["conn"] == 0
            assert transport.stats.timeouts == 1
            assert transport.stats.connections_opened == 1
    run(main)


def test_no_response_on_dead_connection_replaces_it(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, NoResponse()) as server:
            client, transport = client_for(server, ping_timeout=0.3)
            async with client:
                with pytest.raises(httpx.ReadTimeout):
                    await post(client, "freeze1", timeout=httpx.Timeout(5.0, read=0.3))
                t0 = time.monotonic()
                r = await post(client, "after")  # waits for the PING verdict, then reconnects
                assert time.monotonic() - t0 < 2.0
                assert r.status_code == 200
                assert r.json()["conn"] == 1
            assert transport.stats.pings_failed == 1
            assert transport.stats.connections_opened == 2
    run(main)


class DropOn(Behaviour):
    def on_request(self, conn: ServerConn, req: Req) -> None:
        if req.id.startswith("drop") and conn.index == 0:
            conn.drop()
        elif not req.id.startswith("hang"):
            conn.respond(req)


def test_tcp_drop_raises_connection_lost_then_next_request_works(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, DropOn()) as server:
            client, transport = client_for(server)
            async with client:
                hanging = asyncio.ensure_future(post(client, "hang1"))
                await wait_until(lambda: len(server.requests) == 1)
                with pytest.raises(ConnectionLost) as info:
                    await post(client, "drop1")
                assert info.value.may_have_been_processed is True
                assert info.value.goaway is None
                with pytest.raises(ConnectionLost):
                    await hanging  # in flight on the same connection: also may-have-been
                r = await post(client, "next")
                assert r.status_code == 200 and r.json()["conn"] == 1
                assert [q.id for q in server.requests].count("drop1") == 1  # not resent
            assert transport.stats.connections_opened == 2
    run(main)


class LowerLimit(Behaviour):
    """Advertise 100; on the first request drop to 1 (APNs after a rejection), answer
    slowly; after 15 answers restore 100."""

    max_streams = 100

    def __init__(self) -> None:
        self.answered = 0
        self.peak_while_one = 0
        self.peak_after_raise = 0
        self.queue: collections.deque[Req] = collections.deque()
        self.busy = False

    def on_request(self, conn: ServerConn, req: Req) -> None:
        if conn.advertised == 100 and self.answered == 0 and not self.queue:
            conn.set_max_streams(1)
        if conn.advertised == 1:
            self.peak_while_one = max(self.peak_while_one, len(conn.open))
        elif self.answered >= 15:
            self.peak_after_raise = max(self.peak_after_raise, len(conn.open))
        self.queue.append(req)
        if not self.busy:
            self._next(conn)

    def _next(self, conn: ServerConn) -> None:
        if not self.queue:
            self.busy = False
            return
        self.busy = True
        req = self.queue.popleft()

        def answer() -> None:
            conn.respond(req)
            self.answered += 1
            if self.answered == 15:
                conn.set_max_streams(100)
            self._next(conn)
        asyncio.get_running_loop().call_later(0.002, answer)


def test_max_concurrent_streams_lowered_to_one_and_raised_again(ca: trustme.CA) -> None:
    n = 60
    behaviour = LowerLimit()

    async def main() -> None:
        async with ScriptedServer(ca, behaviour) as server:
            client, transport = client_for(server, max_connections=1)
            async with client:
                rs = await asyncio.gather(*(post(client, f"s{i}") for i in range(n)))
            assert all(r.status_code == 200 for r in rs)
            assert collections.Counter(server.processed) == {f"s{i}": 1 for i in range(n)}
            # streams opened before the client saw SETTINGS were refused, then resent
            assert transport.stats.resends == len(server.refused)
            assert all(r.extensions["resends"] <= 1 for r in rs)
            # while the limit was 1 the client never had more than 1 new stream open
            assert behaviour.peak_while_one <= 1
            assert behaviour.peak_after_raise > 1  # and followed the raise back up
            assert len(server.conns) == 1
    run(main)


def test_stream_limit_of_one_from_the_start(ca: trustme.CA) -> None:
    """APNs token connections start with MAX_CONCURRENT_STREAMS=1."""

    class One(Behaviour):
        max_streams = 1

    async def main() -> None:
        async with ScriptedServer(ca, One()) as server:
            client, transport = client_for(server, max_connections=1)
            async with client:
                rs = await asyncio.gather(*(post(client, f"o{i}") for i in range(20)))
            assert all(r.status_code == 200 for r in rs)
            assert server.refused == []  # the client waited for the server's SETTINGS
            assert server.conns[0].peak_open == 1
            assert transport.stats.resends == 0
    run(main)


class CloseAfter(Behaviour):
    """Answer, then close the connection shortly after (idle close by the server)."""

    def __init__(self, goaway: bool) -> None:
        self.goaway = goaway

    def on_request(self, conn: ServerConn, req: Req) -> None:
        conn.respond(req)
        if req.id.startswith("bye"):
            def close() -> None:
                if self.goaway:
                    conn.goaway(req.stream_id, 0, b'{"reason":"IdleTimeout"}')
                conn.close()
            asyncio.get_running_loop().call_later(0.05, close)


@pytest.mark.parametrize("goaway", [True, False], ids=["goaway", "plain-close"])
def test_idle_connection_closed_by_server_reconnects(ca: trustme.CA, goaway: bool) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, CloseAfter(goaway)) as server:
            client, transport = client_for(server)
            async with client:
                r = await post(client, "bye1")
                assert r.status_code == 200
                await wait_until(lambda: "connections=0" in repr(transport))
                r = await post(client, "hello")
                assert r.status_code == 200 and r.json()["conn"] == 1
                assert r.extensions["resends"] == 0
            assert transport.stats.connections_opened == 2
            assert transport.stats.goaways == (1 if goaway else 0)
    run(main)


def test_idle_connection_is_pinged_before_reuse(ca: trustme.CA) -> None:
    """A connection that went dark while idle is found out by the idle PING."""

    class FreezeAfterFirst(Behaviour):
        def on_request(self, conn: ServerConn, req: Req) -> None:
            conn.respond(req)
            if conn.index == 0:
                conn.frozen = True

    async def main() -> None:
        async with ScriptedServer(ca, FreezeAfterFirst()) as server:
            client, transport = client_for(server, ping_after_idle=0.2, ping_timeout=0.3)
            async with client:
                assert (await post(client, "first")).status_code == 200
                await asyncio.sleep(0.3)
                r = await post(client, "second")
                assert r.status_code == 200 and r.json()["conn"] == 1
                assert server.conns[0].pings == 1
                assert [q.id for q in server.requests] == ["first", "second"]  # nothing lost
            assert transport.stats.pings_failed == 1
    run(main)


def test_flow_control_large_request_and_response_bodies(ca: trustme.CA) -> None:
    big_response = bytes(range(256)) * 1200  # 300 KiB > 64 KiB default window

    class Big(Behaviour):
        def on_request(self, conn: ServerConn, req: Req) -> None:
            if req.id == "download":
                conn.respond(req, body=big_response)
            else:
                conn.respond(req)

    async def main() -> None:
        async with ScriptedServer(ca, Big()) as server:
            client, transport = client_for(server)
            async with client:
                payload = hashlib.sha512(b"x").digest() * 3000  # 192000 bytes
                r1, r2, r3 = await asyncio.gather(
                    post(client, "upload", content=payload),
                    post(client, "upload2", content=payload[:70000]),
                    post(client, "download"),
                )
                assert r1.json()["len"] == len(payload)
                assert r1.json()["sha"] == hashlib.sha256(payload).hexdigest()
                assert r2.json()["len"] == 70000
                assert r3.content == big_response
            assert not server.protocol_errors
    run(main)


# --------------------------------------------------------------------------- HTTP/2 backends


def ca_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_every_transport_in_this_module_runs_on_the_selected_backend(ca: trustme.CA, h2_backend: str) -> None:
    assert h2_backend in ("h2", "jh2")  # the conftest parametrizes this module over both

    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, transport = client_for(server)
            async with client:
                assert transport.backend.name == h2_backend
                assert (await post(client, "b")).status_code == 200
                conn = next(c for p in transport._pools.values() for c in p.conns)
                assert type(conn.h2).__mro__[1].__module__ == f"{h2_backend}.connection"
    run(main)


def test_both_backends_are_installed() -> None:
    # jh2 is a declared dependency: if it stopped importing, "auto" would quietly fall back to h2.
    assert available_backends() == ["h2", "jh2"]
    assert load_backend("auto").name == "jh2"


def test_malformed_status_fails_only_that_stream(ca: trustme.CA) -> None:
    # Inbound header validation is off for speed; the transport checks :status itself.
    class Garbled(Behaviour):
        def on_request(self, conn: ServerConn, req: Req) -> None:
            conn.respond(req, status="2x0" if req.id.startswith("bad") else 200)  # type: ignore[arg-type]

    async def main() -> None:
        async with ScriptedServer(ca, Garbled()) as server:
            client, transport = client_for(server)
            async with client:
                results = await asyncio.gather(post(client, "ok1"), post(client, "bad1"), post(client, "ok2"),
                                               return_exceptions=True)
                assert [r.status_code for r in results if isinstance(r, httpx.Response)] == [200, 200]
                err = results[1]
                assert isinstance(err, ConnectionLost) and not isinstance(err, StreamReset)
                assert "malformed response" in str(err) and err.may_have_been_processed
                assert (await post(client, "ok3")).status_code == 200
                assert transport.stats.connections_opened == 1  # the connection survived
    run(main)


@pytest.mark.parametrize("name", ["h2", "jh2"])
def test_unannounced_peer_settings_take_rfc_defaults(name: str) -> None:
    # Until (and unless) the server announces them, RFC 9113 §6.5.2's values apply. jh2's own
    # defaults (6 MiB windows) made a >64 KiB body overrun a server that never announced its window.
    backend = load_backend(name)
    conn = backend.connection_class(type("Owner", (), {"active": 0})())
    assert conn.remote_settings.initial_window_size == 65535
    assert conn.remote_settings.header_table_size == 4096


def test_unknown_backend_is_a_clear_error(ca: trustme.CA) -> None:
    with pytest.raises(ValueError, match="unknown HTTP/2 backend 'nghttp2'"):
        H2Transport(ssl_context=ca_context(ca), backend="nghttp2")
    with pytest.raises(ConfigError) as err:
        PushConfig(h2_backend="nghttp2")
    assert err.value.setting == "PUSH_H2_BACKEND" and "auto, h2, jh2" in str(err.value)


@pytest.mark.parametrize("name", ["h2", "jh2"])
def test_config_picks_the_backend(ca: trustme.CA, name: str) -> None:
    transport = transport_from_config(PushConfig(h2_backend=name), ca_context(ca))
    assert transport.backend.name == name


def test_private_ca_with_ca_environment_variables_pointing_elsewhere(
        ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    other = trustme.CA()
    other_pem = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_pem))
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, str(other_pem))

    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, _ = client_for(server)  # explicit context trusting the private CA
            async with client:
                assert (await post(client, "ca")).status_code == 200

            # A context that trusts only the other CA must fail verification.
            wrong = ssl.create_default_context(cafile=str(other_pem))
            transport = H2Transport(ssl_context=wrong)
            async with httpx.AsyncClient(transport=transport, base_url=server.url,
                                         trust_env=True) as bad:
                with pytest.raises(httpx.ConnectError):
                    await post(bad, "nope")
            assert [q.id for q in server.requests] == ["ca"]
    run(main)


def test_refuses_context_without_verification() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError):
        H2Transport(ssl_context=ctx)


def test_connect_failure_is_connect_error(ca: trustme.CA) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        # Bind then close a listener so the port is (very likely) unused.
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        srv.close()
        await srv.wait_closed()
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        transport = H2Transport(ssl_context=ctx, connect_timeout=2.0)
        async with httpx.AsyncClient(transport=transport, base_url=f"https://127.0.0.1:{port}",
                                     trust_env=False) as client:
            results = await asyncio.gather(*(post(client, f"c{i}") for i in range(5)),
                                           return_exceptions=True)
        assert all(isinstance(r, httpx.ConnectError) for r in results)
        assert transport.stats.connect_failures == 1  # one attempt, all waiters told
    run(main)


def test_goaway_during_setup_is_connect_error_with_reason(ca: trustme.CA) -> None:
    class RejectCert(Behaviour):
        def on_connect(self, conn: ServerConn) -> None:
            conn.goaway(0, 0, b'{"reason":"BadCertificate"}')
            conn.close()

    async def main() -> None:
        async with ScriptedServer(ca, RejectCert()) as server:
            client, transport = client_for(server)
            async with client:
                with pytest.raises(ConnectFailed) as info:
                    await post(client, "x")
            assert info.value.reason == "BadCertificate"
            assert server.requests == []
            assert transport.stats.connect_failures == 1
    run(main)


def test_pool_timeout_when_no_stream_slot(ca: trustme.CA) -> None:
    class OneSilent(Behaviour):
        max_streams = 1

        def on_request(self, conn: ServerConn, req: Req) -> None:
            pass  # never answer: the only slot stays taken

    async def main() -> None:
        async with ScriptedServer(ca, OneSilent()) as server:
            client, transport = client_for(server, max_connections=1)
            async with client:
                first = asyncio.ensure_future(post(client, "hold", timeout=httpx.Timeout(2.0)))
                await wait_until(lambda: len(server.requests) == 1)
                with pytest.raises(httpx.PoolTimeout):
                    await post(client, "waits", timeout=httpx.Timeout(5.0, pool=0.2))
                assert [q.id for q in server.requests] == ["hold"]  # never sent
                first.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await first
                # cancelling freed the slot (RST_STREAM CANCEL) for the next request
                await wait_until(lambda: bool(server.client_resets))
                assert server.client_resets[0][2] == 8
    run(main)


def test_aclose_sends_goaway_and_fails_in_flight(ca: trustme.CA) -> None:
    async def main() -> None:
        async with ScriptedServer(ca, NoResponse()) as server:
            client, transport = client_for(server)
            pending = asyncio.ensure_future(post(client, "silent"))
            await wait_until(lambda: len(server.requests) == 1)
            await client.aclose()
            with pytest.raises(ConnectionLost):
                await pending
            await wait_until(lambda: server.client_goaways == [0])
            with pytest.raises(RuntimeError):
                await post(client, "late")
    run(main)


def test_throughput_smoke(ca: trustme.CA) -> None:
    """Thousands of small requests complete quickly on one connection (client and
    server share one core here, so this is a floor, not the benchmark)."""
    n = 2000

    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, transport = client_for(server, max_connections=1)
            async with client:
                sem = asyncio.Semaphore(500)

                async def one(i: int) -> int:
                    async with sem:
                        return (await post(client, f"t{i}")).status_code

                t0 = time.monotonic()
                codes = await asyncio.gather(*(one(i) for i in range(n)))
                elapsed = time.monotonic() - t0
            assert codes == [200] * n
            assert elapsed < 7.0, f"{n / elapsed:.0f} req/s"
    run(main)


def test_early_response_while_body_still_sending(ca: trustme.CA) -> None:
    """A server may answer (413) before the body is complete; the response wins and
    our side of the stream is closed (RFC 9113 §8.1)."""

    class TooLarge(Behaviour):
        def on_headers(self, conn: ServerConn, req: Req) -> bool:
            conn.respond(req, status=413, body=b'{"reason":"PayloadTooLarge"}')
            return True

    async def main() -> None:
        async with ScriptedServer(ca, TooLarge()) as server:
            client, transport = client_for(server)
            async with client:
                r = await post(client, "big", content=b"x" * 300_000)
                assert r.status_code == 413
                assert r.json() == {"reason": "PayloadTooLarge"}
                assert (await post(client, "big2", content=b"y" * 300_000)).status_code == 413
            assert transport.stats.connections_opened == 1
            assert not server.protocol_errors
    run(main)


def test_goaway_with_last_stream_id_zero_and_resend_limit(ca: trustme.CA) -> None:
    """A server that GOAWAYs every connection before processing anything: each request
    is resent up to max_resends times, then ResendLimitExceeded carries the GOAWAY."""

    class AlwaysGoaway(Behaviour):
        def on_request(self, conn: ServerConn, req: Req) -> None:
            conn.goaway(0, 0, b'{"reason":"Shutdown"}')
            conn.close()

    async def main() -> None:
        async with ScriptedServer(ca, AlwaysGoaway()) as server:
            client, transport = client_for(server, max_resends=2)
            async with client:
                with pytest.raises(ResendLimitExceeded) as info:
                    await post(client, "never")
            exc = info.value
            assert exc.may_have_been_processed is False
            assert exc.reason == "Shutdown" and exc.goaway_error_code == 0
            assert exc.resends == 2
            assert len(server.requests) == 3 and server.processed == []
            assert transport.stats.connections_opened == 3
    run(main)


# --------------------------------------------------------------------------- fake push server
# The project's FakePushServer (fixtures/server.py) picks a scenario from the device
# token. These tests check the transport against it as a second, independent server.


def fake_client(server: FakePushServer, pki: TestPKI, **kw: Any) -> tuple[httpx.AsyncClient, H2Transport]:
    transport = H2Transport(ssl_context=pki.client_ssl_context(), **kw)
    client = httpx.AsyncClient(transport=transport, base_url=server.url, trust_env=False,
                               timeout=httpx.Timeout(5.0))
    return client, transport


def apns_post(client: httpx.AsyncClient, key: ApnsKey, token: str, **kw: Any) -> Awaitable[httpx.Response]:
    apns_id = kw.pop("apns_id", None) or str(uuid.uuid4())
    headers = {"authorization": f"bearer {apns_jwt(key)}", "apns-topic": "com.example.app",
               "apns-push-type": "alert", "apns-id": apns_id}
    return client.post(f"/3/device/{token}", content=b'{"aps":{"alert":"hi"}}', headers=headers, **kw)


def test_fake_server_connection_scenarios(fake_server: FakePushServer, pki: TestPKI,
                                          apns_key: ApnsKey) -> None:
    fake_server.slow_delay = 0.2

    async def main() -> None:
        client, transport = fake_client(fake_server, pki)
        async with client:
            ok = [apns_post(client, apns_key, ok_apns_token(i)) for i in range(6)]
            refused = apns_post(client, apns_key, apns_token("rst_refused"))
            slow = apns_post(client, apns_key, apns_token("slow"))
            results = await asyncio.gather(*ok, refused, slow)
            assert [r.status_code for r in results] == [200] * 8
            assert results[6].extensions["resends"] == 1  # REFUSED_STREAM, resent

            cancel_id = str(uuid.uuid4())
            with pytest.raises(StreamReset) as info:
                await apns_post(client, apns_key, apns_token("rst_cancel"), apns_id=cancel_id)
            assert info.value.error_code == 2 and info.value.may_have_been_processed
            assert fake_server.accepted[cancel_id] == 1  # it *was* processed: never resent

            with pytest.raises(httpx.ReadTimeout):
                await apns_post(client, apns_key, apns_token("no_response"),
                                timeout=httpx.Timeout(5.0, read=0.3))

            drop_id = str(uuid.uuid4())
            with pytest.raises(ConnectionLost) as lost:
                await apns_post(client, apns_key, apns_token("drop"), apns_id=drop_id)
            assert lost.value.may_have_been_processed
            r = await apns_post(client, apns_key, ok_apns_token(99))
            assert r.status_code == 200
        assert sum(1 for q in fake_server.requests if q.headers.get("apns-id") == drop_id) == 1
        assert transport.stats.connections_opened == 2
    run(main)


def test_fake_server_goaway_scenario_no_loss_no_duplicates(fake_server: FakePushServer, pki: TestPKI,
                                                           apns_key: ApnsKey) -> None:
    async def main() -> None:
        client, transport = fake_client(fake_server, pki)
        async with client:
            ids = [str(uuid.uuid4()) for _ in range(20)]
            tokens = [ok_apns_token(i) for i in range(20)]
            tokens[10] = apns_token("goaway")
            rs = await asyncio.gather(*(apns_post(client, apns_key, t, apns_id=i)
                                        for t, i in zip(tokens, ids)))
        assert [r.status_code for r in rs] == [200] * 20
        assert all(fake_server.accepted[i] == 1 for i in ids)  # each delivered exactly once
        assert transport.stats.goaways == 1
        assert transport.stats.resends >= 1
        assert sum(r.extensions["resends"] for r in rs) == transport.stats.resends
    run(main)


def test_fake_server_goaway_after_and_stream_limits(fake_server: FakePushServer, pki: TestPKI,
                                                    apns_key: ApnsKey) -> None:
    async def main() -> None:
        fake_server.goaway_after = 40
        client, transport = fake_client(fake_server, pki, max_connections=2)
        async with client:
            ids = [str(uuid.uuid4()) for _ in range(150)]
            tokens = [ok_apns_token(i) for i in range(150)]
            tokens[5] = apns_token("settings_one")
            rs = await asyncio.gather(*(apns_post(client, apns_key, t, apns_id=i)
                                        for t, i in zip(tokens, ids)))
        assert all(r.status_code == 200 for r in rs)
        assert all(fake_server.accepted[i] == 1 for i in ids)
        assert transport.stats.goaways >= 3  # every connection goes away after 40
    run(main)


def test_fake_server_token_connection_starting_at_one_stream(fake_server: FakePushServer, pki: TestPKI,
                                                             apns_key: ApnsKey) -> None:
    fake_server.max_concurrent_streams = 1

    async def main() -> None:
        client, transport = fake_client(fake_server, pki, max_connections=1)
        async with client:
            rs = await asyncio.gather(*(apns_post(client, apns_key, ok_apns_token(i))
                                        for i in range(30)))
        assert all(r.status_code == 200 for r in rs)
        assert fake_server.refused_streams == 0 and transport.stats.resends == 0
    run(main)


def test_body_upload_continues_after_goaway_for_processed_stream(ca: trustme.CA) -> None:
    """GOAWAY(last_stream_id=1) arrives while stream 1 is still uploading: RFC 9113
    lets it finish, so the client keeps sending DATA (and taking WINDOW_UPDATEs) after
    the GOAWAY, while stream 3 is resent elsewhere."""

    class GoawayDuringUpload(Behaviour):
        def on_connect(self, conn: ServerConn) -> None:
            conn.ack_data = conn.index != 0  # stall the first upload at 64 KiB

        def on_headers(self, conn: ServerConn, req: Req) -> bool:
            if conn.index == 0 and req.stream_id == 3:
                conn.goaway(1, 0, b"")
                conn.ack_all()  # WINDOW_UPDATEs only after the GOAWAY
            return False

        def on_request(self, conn: ServerConn, req: Req) -> None:
            if conn.index == 0 and req.stream_id > 1:
                return  # above last_stream_id: never processed
            conn.respond(req)
            if conn.index == 0:
                conn.close()

    async def main() -> None:
        async with ScriptedServer(ca, GoawayDuringUpload()) as server:
            client, transport = client_for(server)
            async with client:
                payload = b"z" * 400_000
                big = asyncio.ensure_future(post(client, "big", content=payload))
                await wait_until(lambda: bool(server.conns) and bool(server.conns[0].unacked))
                small = await post(client, "small")
                r = await big
            assert r.status_code == 200 and r.json()["len"] == len(payload)
            assert r.json()["conn"] == 0 and r.extensions["resends"] == 0
            assert small.json()["conn"] == 1 and small.extensions["resends"] == 1
            assert server.processed.count("big") == 1 and server.processed.count("small") == 1
            assert not server.protocol_errors
    run(main)


def test_request_never_written_is_resent_when_connection_dies(ca: trustme.CA) -> None:
    """White-box: the connection dies after the request was queued in h2 but before
    the batched socket write. Nothing reached the server, so it is resent."""

    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, transport = client_for(server)
            async with client:
                assert (await post(client, "first")).status_code == 200
                (conn,) = [c for p in transport._pools.values() for c in p.conns]
                task = asyncio.ensure_future(post(client, "queued"))
                # Runs after the task's first step (which queues HEADERS and schedules
                # the flush) and before that flush.
                asyncio.get_running_loop().call_soon(
                    lambda: conn._close("test: socket died", abort=True))
                r = await task
            assert r.status_code == 200 and r.extensions["resends"] == 1
            assert [q.id for q in server.requests] == ["first", "queued"]
            assert r.json()["conn"] == 1
    run(main)


def test_failed_extra_connections_back_off(ca: trustme.CA) -> None:
    """While one connection works, failing to open another is retried with back-off,
    not in a tight loop (APNs treats rapid reconnects as abuse)."""

    class OnlyOne(Behaviour):
        max_streams = 1

        def on_connect(self, conn: ServerConn) -> None:
            if conn.index > 0:
                conn.drop()  # every further connection dies right after the handshake

        def on_request(self, conn: ServerConn, req: Req) -> None:
            pass  # hold the only stream

    async def main() -> None:
        async with ScriptedServer(ca, OnlyOne()) as server:
            client, transport = client_for(server, max_connections=2)
            async with client:
                first = asyncio.ensure_future(post(client, "hold"))
                await wait_until(lambda: len(server.requests) == 1)
                with pytest.raises(httpx.PoolTimeout):
                    await post(client, "waits", timeout=httpx.Timeout(5.0, pool=1.2))
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)
            # attempts at ~0, 0.5 and 1.5 s at most, not one per loop iteration
            assert 2 <= len(server.conns) <= 4
            stats = transport.stats
            assert stats.connections_opened + stats.connect_failures == len(server.conns)
    run(main)


@pytest.mark.parametrize("name,value", [("x-evil", "a\r\nb"), ("x evil", "a"), ("x-nul", "a\0b")])
def test_invalid_header_is_rejected_before_sending(ca: trustme.CA, name: str, value: str) -> None:
    async def main() -> None:
        async with ScriptedServer(ca) as server:
            client, _ = client_for(server)
            async with client:
                with pytest.raises(httpx.LocalProtocolError):
                    await post(client, "bad", headers={name: value})
                assert (await post(client, "good", headers={"te": "trailers"})).status_code == 200
            assert [q.id for q in server.requests] == ["good"]
    run(main)
