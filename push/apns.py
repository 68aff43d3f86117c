"""APNs client: one notification in, one ``Outcome`` out, over a long-lived HTTP/2 client."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from push import metrics
from push.classify import classify
from push.clock import Clock, SystemClock
from push.config import PushConfig
from push.errors import ConfigError
from push.notification import Notification, mask_device_paths
from push.outcome_table import DEFAULT_TABLE, OutcomeTable
from push.outcomes import Action, Outcome
from push.tls import make_ssl_context
from push.transport_errors import post_and_classify



class _MaskDeviceTokens(logging.Filter):
    """httpx logs every request URL at INFO, and an APNs URL ends in the device token: mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "/3/device/" in record.msg:
            record.msg = _mask_path(record.msg)
        if isinstance(record.args, tuple) and any("/3/device/" in str(a) for a in record.args
                                                   if isinstance(a, (str, httpx.URL))):
            record.args = tuple(_mask_path(str(a)) if isinstance(a, (str, httpx.URL)) else a for a in record.args)
        return True


_mask_path = mask_device_paths


_MASK_FILTER = _MaskDeviceTokens()
logging.getLogger("httpx").addFilter(_MASK_FILTER)  # idempotent: the same filter object is added once

JWT_MIN_AGE = 20 * 60  # Apple: a new provider token at most every 20 minutes ...
JWT_MAX_AGE = 50 * 60  # ... and at least every 60; refresh with margin.


class ApnsJwt:
    """One ES256 provider token per (team, key), shared by every connection and task."""

    _shared: dict[tuple[str, str, str, int], "ApnsJwt"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, key_file: str | Path, key_id: str, team_id: str, *, clock: Clock, max_age: float = JWT_MAX_AGE):
        try:
            key = load_pem_private_key(Path(key_file).read_bytes(), password=None)
        except FileNotFoundError:
            raise ConfigError("PUSH_APNS_KEY_FILE", f"file not found: {key_file}") from None
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError("PUSH_APNS_KEY_FILE", f"{key_file} is not a readable PKCS#8 .p8 key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigError("PUSH_APNS_KEY_FILE", f"{key_file} must hold an ES256 (P-256) key")
        for setting, value in (("PUSH_APNS_KEY_ID", key_id), ("PUSH_APNS_TEAM_ID", team_id)):
            if not value or len(value) != 10 or not value.isalnum():
                raise ConfigError(setting, f"must be the 10-character id from the Apple developer account, not {value!r}")
        self._key = key
        self.key_id, self.team_id = key_id, team_id
        self._clock = clock
        self._max_age = max_age
        self._token: str | None = None
        self._issued: datetime | None = None
        self.minted = 0

    @classmethod
    def shared(cls, key_file: str, key_id: str, team_id: str, *, clock: Clock) -> "ApnsJwt":
        k = (str(Path(key_file).resolve()), key_id, team_id, id(clock))
        with cls._shared_lock:
            if k not in cls._shared:
                cls._shared[k] = cls(key_file, key_id, team_id, clock=clock)
            return cls._shared[k]

    def _age(self) -> float:
        assert self._issued is not None
        return (self._clock.now() - self._issued).total_seconds()

    def current(self) -> str:
        if self._token is None or self._age() >= self._max_age:
            self._mint()
        assert self._token is not None
        return self._token

    def rejected(self, token: str) -> str:
        """APNs said ``ExpiredProviderToken`` for ``token``: mint once, however many streams saw it."""
        if token == self._token:
            self._mint()
        return self.current()

    def _mint(self) -> None:
        now = self._clock.now()
        try:
            self._token = jwt.encode({"iss": self.team_id, "iat": int(now.timestamp())}, self._key,
                                     algorithm="ES256", headers={"kid": self.key_id})
        except Exception:
            metrics.for_provider("apns").auth(False)
            raise
        metrics.for_provider("apns").auth(True)
        self._issued = now
        self.minted += 1

    def __repr__(self) -> str:
        return f"ApnsJwt(team={self.team_id}, kid={self.key_id}, minted={self.minted})"


class ApnsClient:
    """Sends to ``POST /3/device/<token>``; token auth (JWT) or certificate auth."""

    provider = "apns"

    def __init__(self, config: PushConfig, *, clock: Clock | None = None, table: OutcomeTable | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        config.require_apns()
        self._clock = clock or SystemClock()
        self._table = table or DEFAULT_TABLE
        self._timeout = config.stream_timeout
        if config.apns_auth == "token":
            self.jwt: ApnsJwt | None = ApnsJwt.shared(config.apns_key_file, config.apns_key_id or "",  # type: ignore[arg-type]
                                                      config.apns_team_id or "", clock=self._clock)
            ctx = make_ssl_context(config.ca_file)
        else:
            self.jwt = None
            ctx = make_ssl_context(config.ca_file, client_cert=config.apns_cert_file,
                                   client_key=config.apns_cert_key_file)
        if transport is None:
            from push.transport import transport_from_config
            transport = transport_from_config(config, ctx, provider="apns")
        self._transport = transport
        self._metrics = metrics.for_provider("apns")
        self._http = httpx.AsyncClient(transport=transport, base_url=config.apns_base_url.rstrip("/"),
                                       timeout=httpx.Timeout(self._timeout))
        from push.transport import DirectPost, H2Transport
        self._direct = DirectPost(self._http, transport) if isinstance(transport, H2Transport) else None
        self.sent = 0

    async def ready(self) -> bool:
        """Signing key minted and a stream slot free on an open connection: a send would leave at once."""
        if self.jwt is not None:
            self.jwt.current()
        if self._direct is None:
            return True
        return await self._direct.wait_free_stream(self._timeout)

    def capacity(self) -> int | None:
        """How many sends would leave at once (None: unknown, not our transport)."""
        return None if self._direct is None else self._direct.free_streams()

    async def send(self, n: Notification, *, apns_id: str | None = None) -> Outcome:
        if not metrics.enabled():
            return await self._send(n, apns_id)
        gauge = self._metrics.in_flight
        gauge.inc()
        try:
            return await self._send(n, apns_id)
        finally:
            gauge.dec()

    async def _send(self, n: Notification, apns_id: str | None) -> Outcome:
        body = n.apns_body()
        limit = n.apns_limit()
        if len(body) > limit:
            return classify("apns", error="payload_too_large", detail=f"payload is {len(body)} bytes, limit {limit}",
                            table=self._table)
        if not n.token:
            return classify("apns", status=400, body=b'{"reason":"MissingDeviceToken"}', table=self._table)
        headers = {
            "apns-topic": n.topic,
            "apns-push-type": n.push_type,
            "apns-priority": "10" if n.priority == "high" else "5",
            "apns-id": apns_id or str(uuid.uuid4()),
            "content-type": "application/json",
        }
        if n.expiration is not None:
            headers["apns-expiration"] = str(int(n.expiration.timestamp()))
        if n.collapse_id:
            headers["apns-collapse-id"] = n.collapse_id
        elif apns_id:
            # A resend of a send that may have been delivered (a lost connection) then shows on the
            # device as the same notification, not a second one: same id, same collapse id.
            headers["apns-collapse-id"] = apns_id
        path = f"/3/device/{n.token}"
        refreshed = False
        while True:
            jwt_token = None
            if self.jwt is not None:
                jwt_token = self.jwt.current()
                headers["authorization"] = f"bearer {jwt_token}"
            t0 = time.perf_counter()
            out = await post_and_classify("apns", self._http, self._direct, path, body, headers, table=self._table,
                                          now=self._clock.now)
            if metrics.enabled():
                self._metrics.latency.observe(time.perf_counter() - t0)
            if out.provider_status is not None:
                self.sent += 1
            if out.action is Action.REFRESH_AUTH and not refreshed and self.jwt is not None and jwt_token:
                self.jwt.rejected(jwt_token)
                refreshed = True
                continue
            return out

    async def aclose(self) -> None:
        from push.transport import warn_if_never_connected
        warn_if_never_connected(self._transport, "apns", str(self._http.base_url))
        await self._http.aclose()

    async def __aenter__(self) -> "ApnsClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ApnsClient(base_url={str(self._http.base_url)!r}, auth={'token' if self.jwt else 'certificate'}, sent={self.sent})"


