"""Plain values of the HTTP/2 transport: frame codes, a received GOAWAY, the counters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["CANCEL", "INITIAL_MAX_STREAMS", "NO_ERROR", "PROTOCOL_ERROR", "REFUSED_STREAM", "GoAway",
           "TransportStats"]

# RST_STREAM / GOAWAY error codes we send or act on (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7
CANCEL = 0x8

# Our assumed stream limit until the server's first SETTINGS frame arrives. A new
# connection takes no request before that frame (APNs token connections start at
# 1, and a burst of 100 would mostly be refused), so from the first request on the
# live value counts: the server's, or the protocol's "unlimited" if it omits it.
INITIAL_MAX_STREAMS = 100


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
