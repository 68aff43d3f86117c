"""Which HTTP/2 state machine the transport runs on: ``jh2`` (fast) or ``h2`` (fallback).

``jh2`` is a fork of ``h2`` with the same API whose HPACK codec and frame
buffer are compiled; HPACK alone was about a third of the client's CPU on
pure-Python ``h2``. ``auto`` takes ``jh2`` when it imports (it ships wheels for
the common platforms) and ``h2`` otherwise, so the library still works where no
``jh2`` wheel exists. Both run the same transport code and the same tests.

Differences the transport has to know about, and nothing else:

- the header tuple a backend's encoder reads as "never index" (credentials,
  per-request values) is that backend's own ``NeverIndexedHeaderTuple``;
- on ``h2`` the transport installs its own HPACK encoder (no Huffman coding, a
  cache of indexed fields, no DEBUG line that would print a bearer token); on
  ``jh2`` the compiled encoder is used as is (it logs nothing).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, Callable

BACKENDS: tuple[str, ...] = ("auto", "h2", "jh2")
# What ``auto`` tries, in order. The test suite narrows it to one backend to run the transport,
# client and fault tests once per backend.
AUTO_ORDER: tuple[str, ...] = ("jh2", "h2")


@dataclass(frozen=True, eq=False)
class H2Backend:
    """One HTTP/2 library, with the transport's subclasses of its connection built for it."""

    name: str
    version: str
    events: ModuleType
    exceptions: ModuleType
    SettingCodes: Any
    never_indexed: Callable[[bytes, bytes], tuple[bytes, bytes]]  # header marked "never index"
    connection_class: type  # our H2Connection subclass, constructed with the connection's ConnectionCore

    def is_never_indexed(self, header: tuple[bytes, bytes]) -> bool:
        return isinstance(header, self.never_indexed)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<H2Backend {self.name} {self.version}>"


class BackendUnavailable(ImportError):
    pass


def load_backend(name: str = "auto") -> H2Backend:
    """The backend called ``name`` (``auto``: ``jh2`` if it imports, else ``h2``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown HTTP/2 backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name != "auto":
        return _build(name)
    errors = []
    for candidate in AUTO_ORDER:
        try:
            return _build(candidate)
        except BackendUnavailable as exc:
            errors.append(str(exc))
    raise BackendUnavailable("; ".join(errors))


def available_backends() -> list[str]:
    """The concrete backends that import here (``h2`` always, ``jh2`` where installed)."""
    out = []
    for name in ("h2", "jh2"):
        try:
            _build(name)
        except BackendUnavailable:
            continue
        out.append(name)
    return out


@cache
def _build(name: str) -> H2Backend:
    try:
        root = importlib.import_module(name)
        config = importlib.import_module(f"{name}.config")
        connection = importlib.import_module(f"{name}.connection")
        events = importlib.import_module(f"{name}.events")
        exceptions = importlib.import_module(f"{name}.exceptions")
        settings = importlib.import_module(f"{name}.settings")
        hpack = importlib.import_module("hpack" if name == "h2" else "jh2.hpack")
    except ImportError as exc:
        raise BackendUnavailable(f"HTTP/2 backend {name!r} is not installed: {exc}") from exc

    ConnectionInputs, ConnectionState = connection.ConnectionInputs, connection.ConnectionState

    class DrainingStateMachine(connection.H2ConnectionStateMachine):  # type: ignore[misc,name-defined]
        """The library's connection state machine, except that a GOAWAY doesn't end existing streams.

        It moves to CLOSED on GOAWAY and then rejects every further frame as a
        protocol error. RFC 9113 §6.8 says streams up to ``last_stream_id`` may
        still complete, so after a GOAWAY we keep receiving HEADERS/DATA for them,
        keep sending their remaining DATA, RST_STREAM, WINDOW_UPDATE, PINGs and
        SETTINGS ACKs. SEND_HEADERS stays forbidden: no new stream can be opened.
        """

        _transitions = {
            **connection.H2ConnectionStateMachine._transitions,
            **{
                (ConnectionState.CLOSED, inp): (None, ConnectionState.CLOSED)
                for inp in (
                    ConnectionInputs.RECV_HEADERS,
                    ConnectionInputs.RECV_DATA,
                    ConnectionInputs.RECV_WINDOW_UPDATE,
                    ConnectionInputs.RECV_PING,
                    ConnectionInputs.RECV_SETTINGS,
                    ConnectionInputs.RECV_RST_STREAM,
                    ConnectionInputs.RECV_PRIORITY,
                    ConnectionInputs.RECV_ALTERNATIVE_SERVICE,
                    ConnectionInputs.SEND_DATA,
                    ConnectionInputs.SEND_RST_STREAM,
                    ConnectionInputs.SEND_WINDOW_UPDATE,
                    ConnectionInputs.SEND_PING,
                    ConnectionInputs.SEND_SETTINGS,
                )
            },
        }

    base_open_outbound = connection.H2Connection.open_outbound_streams.fget
    # header_encoding=None: headers stay bytes end to end (no decode/encode per request).
    # Outbound validation/normalisation is done once by H2Transport._headers instead of by the
    # library's generator chain per header (lowercase names, no connection headers, no CR/LF/NUL,
    # credentials never indexed).
    # Inbound checks are off too (a tenth of a send's CPU on jh2): the transport reads only
    # :status (checked there) and hands the other response headers over as they came.
    h2_config = config.H2Configuration(
        client_side=True, header_encoding=None,
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False, normalize_inbound_headers=False)
    encoder_factory = _python_encoder_class(hpack) if name == "h2" else None
    codes = settings.SettingCodes
    # What a peer that has not announced a setting is taken to use: RFC 9113 §6.5.2's defaults.
    # jh2 assumes 6 MiB stream windows and a 64 KiB HPACK table instead, so against a server that
    # omits INITIAL_WINDOW_SIZE it overran the 64 KiB window (FLOW_CONTROL_ERROR on big bodies).
    rfc_remote_defaults = {codes.HEADER_TABLE_SIZE: 4096, codes.INITIAL_WINDOW_SIZE: 65535}

    class Connection(connection.H2Connection):  # type: ignore[misc,name-defined]
        """The client connection with an O(1) open-stream count.

        ``open_outbound_streams`` scans every stream on each ``send_headers``
        (quadratic at hundreds of concurrent streams). Our ``ConnectionCore.active`` is
        the same number for a connection that still opens streams, so we return it
        and let the library scan (which also forgets closed streams) only once closed
        streams have piled up, which keeps the cost amortised O(1).
        """

        def __init__(self, owner: Any) -> None:
            super().__init__(config=h2_config)
            self.remote_settings = settings.Settings(client=False, initial_values=rfc_remote_defaults)
            self.state_machine = DrainingStateMachine()
            if encoder_factory is not None:
                self.encoder = encoder_factory()
            self._owner = owner
            self._gc_at = 256

        @property
        def open_outbound_streams(self) -> int:
            if len(self.streams) > self._gc_at:
                base_open_outbound(self)
                self._gc_at = 2 * len(self.streams) + 256
            return self._owner.active  # type: ignore[no-any-return]

    return H2Backend(
        name=name, version=getattr(root, "__version__", "?"), events=events, exceptions=exceptions,
        SettingCodes=settings.SettingCodes, never_indexed=hpack.NeverIndexedHeaderTuple,
        connection_class=Connection)


_HPACK_LOG = logging.getLogger("hpack.hpack")


def _python_encoder_class(hpack: ModuleType) -> type:
    class Encoder(hpack.Encoder):  # type: ignore[misc,name-defined]
        """Pure-Python HPACK encoder without Huffman coding.

        Pure-Python Huffman coding was the largest single per-request cost (about 3x
        the rest of HPACK) and saves only some tens of bytes per request; indexing,
        which saves far more, is unaffected.
        """

        def __init__(self) -> None:
            super().__init__()
            # Field -> its one-byte-or-so indexed representation, for fields found in the table. Valid
            # while the dynamic table is unchanged: emptied whenever ``add`` inserts (a literal with
            # incremental indexing) or the table is resized. Bounded by the table's entries.
            self._indexed: dict[tuple[bytes, bytes], bytes] = {}

        def encode(self, headers: Any, huffman: bool = True) -> bytes:
            # hpack.Encoder.encode, minus its DEBUG line "Encoded header block to ...": without Huffman
            # coding that block holds every value verbatim, the bearer JWT / OAuth token included
            # (hpack redacts never-indexed values only in its per-header line, which ``add`` keeps).
            block = []
            indexed = self._indexed
            if self.header_table.resized:
                block.append(self._encode_table_size_change())
                self.header_table.resized = False
                indexed.clear()
            # The cache skips ``add``, and with it hpack's per-header DEBUG line: only when that is off.
            cached = not _HPACK_LOG.isEnabledFor(logging.DEBUG)
            for header in headers:
                if isinstance(header, hpack.HeaderTuple):
                    sensitive = not header.indexable
                else:
                    sensitive = len(header) > 2 and bool(header[2])
                field = (_to_bytes(header[0]), _to_bytes(header[1]))
                if sensitive or not cached:
                    block.append(self.add(field, sensitive, False))
                    continue
                encoded = indexed.get(field)
                if encoded is None:
                    encoded = self.add(field, False, False)
                    if encoded[0] & 0x80:  # indexed representation: the table did not change
                        indexed[field] = encoded
                    else:  # a literal with incremental indexing: every dynamic index moved
                        indexed.clear()
                block.append(encoded)
            return b"".join(block)

    return Encoder


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")
