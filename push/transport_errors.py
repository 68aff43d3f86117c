"""The one boundary where network exceptions become outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

import httpx

from push.classify import Provider, classify
from push.outcome_table import OutcomeTable
from push.outcomes import Outcome


def outcome_for_transport_error(provider: str, exc: BaseException, table: OutcomeTable) -> Outcome:
    """A send that got no HTTP answer.

    Read timeouts and lost connections may have been delivered; connect
    failures, pool timeouts and exhausted resends provably were not. Both take
    the table's retry rule; the error text says which it was.
    """
    if isinstance(exc, httpx.LocalProtocolError):
        # Refused by our own HTTP/2 layer before anything was written (e.g. CR/LF in a header value):
        # our request is malformed, the device and the connection are fine.
        return classify(provider, error="invalid_content", detail=f"not sent; {exc}"[:200], table=table)  # type: ignore[arg-type]
    # UnsupportedProtocol: the URL's scheme is not one the transport speaks; nothing was sent.
    unsent = isinstance(exc, (httpx.ConnectError, httpx.PoolTimeout, httpx.UnsupportedProtocol)) or (
        getattr(exc, "may_have_been_processed", True) is False)
    name = "timeout" if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.PoolTimeout) else "connection_lost"
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = ("not sent; " if unsent else "may have been delivered; ") + detail
    out = classify(provider, error=name, detail=detail[:200], table=table)  # type: ignore[arg-type]
    if not unsent:
        return out
    return out.with_(unsent="connect" if isinstance(exc, (httpx.ConnectError, httpx.PoolTimeout)) else "bounced")


async def post_and_classify(provider: Provider, http: httpx.AsyncClient, direct: Any, path: str, body: bytes,
                            headers: Mapping[str, str], *, table: OutcomeTable,
                            now: Callable[[], datetime]) -> Outcome:
    """One POST to a provider, its answer (or the lack of one) classified.

    ``direct`` is the transport's ``DirectPost`` (or None): the same request without
    httpx's per-request work, used whenever httpx would not do more.
    """
    try:
        if direct is not None and direct.usable(path, body):
            resp = await direct.post(path, body, headers)
        else:
            resp = await http.post(path, content=body, headers=headers)
    except httpx.TransportError as exc:
        return outcome_for_transport_error(provider, exc, table)
    headers = resp.headers
    # The clock is only read for an HTTP-date Retry-After.
    return classify(provider, status=resp.status_code, body=resp.content, headers=headers,
                    now=now() if "retry-after" in headers else None, table=table)
