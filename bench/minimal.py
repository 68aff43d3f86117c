"""A minimal HTTP/2 client on asyncio: the ceiling a Python client can reach.

The same code runs on ``h2`` or ``jh2`` (a fork with a Rust HPACK codec): only
the package it imports differs. One TLS connection, library defaults, no
retries, no GOAWAY handling, no deadlines: it sends, and it collects the status
and body. Do not use it for anything but measuring.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from types import ModuleType
from typing import Any


class H2Lib:
    """``connection``, ``config`` and ``events`` of ``h2`` or ``jh2``."""

    def __init__(self, package: str) -> None:
        self.name = package
        self.connection: ModuleType = importlib.import_module(f"{package}.connection")
        self.config: ModuleType = importlib.import_module(f"{package}.config")
        self.events: ModuleType = importlib.import_module(f"{package}.events")


class _Stream:
    __slots__ = ("future", "status", "chunks")

    def __init__(self, future: asyncio.Future[tuple[int, bytes]]) -> None:
        self.future = future
        self.status = 0
        self.chunks: list[bytes] = []


class MinimalH2Client(asyncio.Protocol):
    """``await client.request(headers, body)`` -> ``(status, body)``."""

    def __init__(self, lib: H2Lib) -> None:
        self.lib = lib
        self.conn: Any = lib.connection.H2Connection(
            config=lib.config.H2Configuration(client_side=True, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._flush_scheduled = False
        self._window: asyncio.Event = asyncio.Event()
        self._slots: asyncio.Event = asyncio.Event()
        ev = lib.events
        self._handlers = {
            ev.ResponseReceived: self._on_response,
            ev.DataReceived: self._on_data,
            ev.StreamEnded: self._on_ended,
            ev.StreamReset: self._on_reset,
            ev.RemoteSettingsChanged: self._on_settings,
            ev.WindowUpdated: self._on_window,
            ev.ConnectionTerminated: self._on_terminated,
        }

    @classmethod
    async def connect(cls, lib: H2Lib, host: str, port: int, ca_file: str) -> MinimalH2Client:
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: cls(lib), host, port, ssl=ctx, server_hostname=host)
        await client.ready
        return client

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        handlers = self._handlers
        for event in self.conn.receive_data(data):
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError(f"connection lost: {exc}")
        for stream in self.streams.values():
            if not stream.future.done():
                stream.future.set_exception(err)
        self.streams.clear()
        if not self.ready.done():
            self.ready.set_exception(err)
        if not self.closed.done():
            self.closed.set_result(None)

    # requests
    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        conn = self.conn
        # The server's stream limit (APNs starts at 1 and raises it after the first request).
        while len(self.streams) >= conn.remote_settings.max_concurrent_streams:
            self._slots.clear()
            await self._slots.wait()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        fut: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.streams[sid] = _Stream(fut)
        while conn.local_flow_control_window(sid) < len(body):
            self._window.clear()
            await self._window.wait()
        conn.send_data(sid, body, end_stream=True)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    async def aclose(self) -> None:
        if self.transport is None:
            return
        self.conn.close_connection()
        self._flush()
        self.transport.close()
        await self.closed

    # events
    def _on_response(self, ev: Any) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is not None:
            for name, value in ev.headers:
                if name == b":status":
                    stream.status = int(value)

    def _on_data(self, ev: Any) -> None:
        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        stream = self.streams.get(ev.stream_id)
        if stream is not None:
            stream.chunks.append(ev.data)

    def _on_ended(self, ev: Any) -> None:
        stream = self.streams.pop(ev.stream_id, None)
        if stream is not None:
            stream.future.set_result((stream.status, b"".join(stream.chunks)))
        self._slots.set()

    def _on_reset(self, ev: Any) -> None:
        stream = self.streams.pop(ev.stream_id, None)
        if stream is not None:
            stream.future.set_exception(ConnectionError(f"stream reset: {ev.error_code}"))
        self._slots.set()

    def _on_settings(self, ev: Any) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        self._window.set()
        self._slots.set()

    def _on_window(self, ev: Any) -> None:
        self._window.set()

    def _on_terminated(self, ev: Any) -> None:
        if self.transport is not None:
            self.transport.close()
