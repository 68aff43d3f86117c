"""A fast fake APNs + FCM + OAuth server that answers each request after a fixed delay.

    python -m bench.latency_server '<BenchEnv JSON>' DELAY_SECONDS COUNT_FILE

The bench's latency profile: this machine's kernel has no netem, so the round trip
is added here, in the server, between "request fully received" and "response
written" (``loop.call_later``). It speaks HTTP/2 over TLS on ``jh2`` (compiled
HPACK) with no validation of JWTs or access tokens, and HTTP/1.1 (``h11``) for
the OAuth ``/token`` request that google-auth sends with ``requests``.

Streams are limited the way APNs announces it: the first SETTINGS announce
``MAX_CONCURRENT_STREAMS = 1``; once the connection's first request has been
accepted (answered 200) a new SETTINGS frame raises it to 1,000. A stream opened
beyond the announced limit is still served (how APNs treats one is not
documented, and a refused stream would hang a client that ignores RST_STREAM,
as aioapns does), but counted: the count is written to the file named by the
third argument, and the bench reports it per case as "over-limit streams".

What the delay does not model: TCP slow start and congestion windows, the TLS
handshake's and the SETTINGS exchange's round trips (they are instant here),
WINDOW_UPDATE frames arriving a round trip late (flow-control credit comes back
at once), the request's own transmission time, jitter and loss. It is one fixed
wait per request, so it caps throughput at ``requests in flight / delay`` exactly
as a real round trip does, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys

import h11
from jh2.config import H2Configuration
from jh2.connection import H2Connection
from jh2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from jh2.settings import SettingCodes, Settings

from bench.env import STATIC_ACCESS_TOKEN, BenchEnv
from bench.server import APNS_DEAD_PREFIX, FCM_DEAD_MARK
from fixtures.scenarios import APNS_SCENARIOS, FCM_SCENARIOS

FIRST_STREAMS, LATER_STREAMS = 1, 1000
COUNT_EVERY = 0.05  # seconds between writes of the over-limit count
TOKEN_BODY = json.dumps({"access_token": STATIC_ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}).encode()
JSON = b"application/json; charset=UTF-8"
APNS_DEAD = APNS_SCENARIOS["unregistered"]
FCM_DEAD = FCM_SCENARIOS["unregistered"]


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body


def answer(path: bytes, body: bytes, apns_id: bytes | None, counter: int) -> Answer:
    """(status, headers, body) for one request: the same answers as the nginx fake."""
    if path.startswith(b"/3/device/"):
        headers = [(b"apns-id", apns_id)] if apns_id else []
        if path[10:18].decode() == APNS_DEAD_PREFIX:
            return APNS_DEAD.status, [*headers, (b"content-type", b"application/json")], APNS_DEAD.body
        return 200, headers, b""
    if path == b"/token":
        return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], TOKEN_BODY
    if path.startswith(b"/v1/projects/") and path.endswith(b"/messages:send"):
        if FCM_DEAD_MARK.encode() in body:
            return FCM_DEAD.status, [(b"content-type", JSON)], FCM_DEAD.body
        project = path.split(b"/")[3]
        return 200, [(b"content-type", JSON)], b'{\n  "name": "projects/' + project + b"/messages/0:%d" % counter \
            + b'"\n}\n'
    return 404, [(b"content-type", b"application/json")], b'{"error":"not found"}'


class _ServerH2(H2Connection):
    # jh2 turns a stream over our limit into a connection error; this server counts such
    # streams instead (and serves them), so it does not let jh2 count open inbound streams.
    @property
    def open_inbound_streams(self) -> int:
        super().open_inbound_streams  # noqa: B018 - keeps jh2's closed-stream cleanup
        return 0


class OverLimit:
    """Streams opened beyond the announced limit, written to a file the bench reads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._scheduled = False
        self.write()

    def add(self) -> None:
        self.count += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(COUNT_EVERY, self.write)

    def write(self) -> None:
        self._scheduled = False
        with open(self.path + ".tmp", "w") as fh:
            fh.write(str(self.count))
        os.replace(self.path + ".tmp", self.path)


class _Stream:
    __slots__ = ("path", "apns_id", "body")

    def __init__(self, path: bytes, apns_id: bytes | None) -> None:
        self.path = path
        self.apns_id = apns_id
        self.body = bytearray()


class Server(asyncio.Protocol):
    """One client connection; HTTP/2 or HTTP/1.1 by ALPN."""

    counter = 0

    def __init__(self, delay: float, over: OverLimit) -> None:
        self.delay = delay
        self.over = over
        self.limit = FIRST_STREAMS
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.h2: H2Connection | None = None
        self.h1: h11.Connection | None = None
        self.streams: dict[int, _Stream] = {}
        self.raised = False  # MAX_CONCURRENT_STREAMS raised after the first accepted request
        self.h1_body = bytearray()
        self.h1_target = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.h2 = _ServerH2(H2Configuration(client_side=False, header_encoding=None))
            self.h2.local_settings = Settings(client=False, initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: FIRST_STREAMS})
            self.h2.initiate_connection()
            transport.write(self.h2.data_to_send())
        else:
            self.h1 = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self._h2_received(data)
        else:
            self._h1_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # HTTP/2
    def _h2_received(self, data: bytes) -> None:
        conn = self.h2
        assert conn is not None
        try:
            events = conn.receive_data(data)
        except Exception:  # noqa: BLE001 - a protocol error closes this connection only
            self._write()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                if len(self.streams) >= self.limit:
                    self.over.add()
                hdrs = dict(ev.headers)
                self.streams[ev.stream_id] = _Stream(hdrs.get(b":path", b""), hdrs.get(b"apns-id"))
            elif isinstance(ev, DataReceived):
                stream = self.streams.get(ev.stream_id)
                if stream is not None:
                    stream.body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, StreamEnded):
                if ev.stream_id in self.streams:
                    self.loop.call_later(self.delay, self._respond, ev.stream_id)
            elif isinstance(ev, StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, ConnectionTerminated):
                self._write()
                if self.transport is not None:
                    self.transport.close()
                return
        self._write()

    def _respond(self, sid: int) -> None:
        stream = self.streams.pop(sid, None)
        conn = self.h2
        if stream is None or conn is None or self.transport is None:
            return
        Server.counter += 1
        status, headers, body = answer(stream.path, bytes(stream.body), stream.apns_id, Server.counter)
        all_headers = [(b":status", str(status).encode()), *headers, (b"content-length", str(len(body)).encode())]
        try:
            conn.send_headers(sid, all_headers, end_stream=not body)
            if body:
                conn.send_data(sid, body, end_stream=True)
        except Exception:  # noqa: BLE001 - the client reset the stream meanwhile
            return
        if status == 200 and not self.raised and stream.path != b"/token":
            self.raised = True  # APNs: one stream until the first request is accepted, then up to 1,000
            conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: LATER_STREAMS})
            self.limit = LATER_STREAMS
        self._write()

    def _write(self) -> None:
        if self.h2 is not None and self.transport is not None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    # HTTP/1.1 (OAuth for google-auth's requests session)
    def _h1_received(self, data: bytes) -> None:
        assert self.h1 is not None
        self.h1.receive_data(data)
        self._h1_process()

    def _h1_process(self) -> None:
        conn = self.h1
        assert conn is not None
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError:
                if self.transport is not None:
                    self.transport.close()
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                break
            if isinstance(ev, h11.Request):
                self.h1_target, self.h1_body = ev.target, bytearray()
            elif isinstance(ev, h11.Data):
                self.h1_body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                self.loop.call_later(self.delay, self._h1_respond)
                break
            elif isinstance(ev, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return

    def _h1_respond(self) -> None:
        conn = self.h1
        if conn is None or self.transport is None:
            return
        Server.counter += 1
        status, headers, body = answer(self.h1_target.split(b"?")[0], bytes(self.h1_body), None, Server.counter)
        out = conn.send(h11.Response(status_code=status, headers=[*headers, (b"content-length", b"%d" % len(body))]))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        self.transport.write(out)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._h1_process()  # a pipelined next request may already be buffered
        else:
            self.transport.close()


async def serve(env: BenchEnv, delay: float, count_file: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(env.cert_file, env.key_file)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    loop = asyncio.get_running_loop()
    over = OverLimit(count_file)
    server = await loop.create_server(lambda: Server(delay, over), env.host, env.port, ssl=ctx, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    env, delay = BenchEnv.from_json(argv[0]), float(argv[1])
    asyncio.run(serve(env, delay, argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
