"""``H2Transport``: the httpx transport, its header block and the resend loop around one request."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

import httpx

from push import metrics
from push.errors import ConfigError
from push.h2backend import BackendUnavailable, H2Backend, load_backend
from push.transport.connection import _Stream
from push.transport.core.pool import PoolCore
from push.transport.core.request import RequestCore
from push.transport.errors import ResendLimitExceeded, Unprocessed
from push.transport.pool import _Pool
from push.transport.values import TransportStats

log = logging.getLogger(__name__)

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
BAD_VALUE = re.compile(rb"[\r\n\0]").search
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]").search  # RFC 9110 token, lower case


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
        streams = sum(c.core.active for c in conns)
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
        req = RequestCore(read_timeout, pool_timeout, self._max_resends)
        while True:
            now = loop.time()
            if req.too_late(now):
                raise httpx.PoolTimeout("deadline passed before the request could be resent; it was not processed")
            conn = await pool.acquire(req.wait_deadline(now), req.front)
            stream = conn.start(headers, body)
            if stream is None:
                req.requeue()
                continue
            read_deadline = req.sent(loop.time())
            if read_deadline is not None:
                stream.timer = loop.call_at(read_deadline, conn.deadline_passed, stream)
            try:
                if stream.body_offset is not None:
                    await conn.send_body(stream, body)
                await stream.future
            except Unprocessed as exc:
                if not req.unprocessed():
                    raise ResendLimitExceeded(
                        f"request not processed by the server ({exc.why}); gave up after "
                        f"{self._max_resends} resends", request=request,
                        goaway=exc.goaway, resends=req.resends - 1) from exc
                self.stats.resends += 1
                self.metrics.resends[exc.cause].inc()
                continue
            except BaseException:
                conn.abandon(stream)
                raise
            return stream, req.resends

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
        return PoolCore.free_streams(pool.conns, len(pool.waiters))

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
            if not name or _BAD_NAME(name) is not None or BAD_VALUE(value) is not None:
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
