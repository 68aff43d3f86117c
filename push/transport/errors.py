"""The transport's exceptions (the tree is drawn in ``push.transport``'s docstring)."""

from __future__ import annotations

import httpx

from push.transport.values import GoAway

__all__ = ["ConnectFailed", "ConnectionLost", "ResendLimitExceeded", "StreamReset", "Unprocessed"]


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


class Unprocessed(Exception):
    """Never leaves the transport: the server provably did not process this stream; resend it."""

    def __init__(self, why: str, goaway: GoAway | None = None, cause: str = "goaway") -> None:
        super().__init__(why)
        self.why = why
        self.goaway = goaway
        self.cause = cause  # push_resends_total label: goaway | refused_stream | unwritten
