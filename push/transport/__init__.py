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

from push.transport.adapter import H2Transport, transport_from_config, warn_if_never_connected
from push.transport.direct import DirectPost, DirectResponse
from push.transport.errors import ConnectFailed, ConnectionLost, ResendLimitExceeded, StreamReset
from push.transport.values import GoAway, TransportStats

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "DirectPost",
    "DirectResponse",
    "GoAway",
    "H2Transport",
    "ResendLimitExceeded",
    "StreamReset",
    "TransportStats",
    "transport_from_config",
    "warn_if_never_connected",
]
