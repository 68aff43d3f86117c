"""``DirectPost``: the APNs/FCM clients' POST straight into their ``H2Transport``."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from push.transport.adapter import BAD_VALUE, H2Transport

log = logging.getLogger(__name__)
_HTTPX_LOG = logging.getLogger("httpx")
# Request paths httpx's URL merge leaves byte-for-byte unchanged (no escaping, no dot segments).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_~:/-]*").fullmatch


def mounted_transport(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
    """The transport httpx would send ``url`` through: a matching mount or the client's own.

    httpx has no public way to ask, so this is the one private httpx name the package uses,
    ``AsyncClient._transport_for_url(url)`` (httpx 0.27 to 0.29, pinned in pyproject.toml;
    tests/test_transport_direct.py fails if it goes or changes meaning). If a future httpx lacks
    it, this says so in a warning and returns None, which keeps every send on ``client.post``.
    """
    lookup = getattr(client, "_transport_for_url", None)
    if not callable(lookup):
        log.warning("httpx %s has no AsyncClient._transport_for_url: the direct send path is off",
                    httpx.__version__)
        return None
    try:
        transport = lookup(url)
    except Exception as exc:  # noqa: BLE001 - an httpx change we do not know: say so, keep the regular path
        log.warning("httpx %s AsyncClient._transport_for_url failed (%r): the direct send path is off",
                    httpx.__version__, exc)
        return None
    return transport if isinstance(transport, httpx.AsyncBaseTransport) else None


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
    body, auth or event hooks, or a mount (``mounts=``) in front of
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
        mounted = mounted_transport(client, base)  # a mount would take over here
        self._enabled = (
            mounted is transport and base.scheme == "https" and not base.query
            and client.auth is None and not any(client.event_hooks.values())
            and self._prefix.endswith(b"/"))

    @property
    def transport(self) -> H2Transport:
        return self._transport

    def free_streams(self) -> int:
        """Requests to the client's origin that could be written right now (``H2Transport.free_streams``)."""
        return self._transport.free_streams(self._client.base_url)

    async def wait_free_stream(self, timeout: float | None) -> bool:
        """Wait for a free stream on an open connection to the client's origin (``H2Transport.wait_free_stream``)."""
        return await self._transport.wait_free_stream(self._client.base_url, timeout)

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
            if BAD_VALUE(value) is not None:
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
