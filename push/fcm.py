"""FCM HTTP v1 client with google-auth service-account OAuth.

The OAuth token is fetched through our own ``google.auth.transport.Request``
built on httpx with an explicit ``ssl.SSLContext``: google-auth's default
``requests`` transport lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` silently
replace the trust store, which would break a private CA (or trust the wrong one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import google.auth.exceptions
import google.auth.transport
import h2.errors
import h2.events
import httpx
from google.oauth2 import service_account

from push import jsoncodec, metrics
from push.classify import classify
from push.clock import Clock, SystemClock
from push.config import PushConfig, check_project_id
from push.errors import ConfigError
from push.notification import Notification
from push.outcome_table import DEFAULT_TABLE, OutcomeTable
from push.outcomes import Action, Outcome
from push.tls import make_ssl_context
from push.transport_errors import post_and_classify

log = logging.getLogger("push.fcm")
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_MARGIN = timedelta(minutes=5)  # refresh before expiry so no send races the deadline
# After a token fetch really failed, sends get its outcome for a while instead of each asking the endpoint
# again. A transient failure (connection, 5xx, 429) holds 1 s, doubling while it keeps failing up to 30 s: the
# endpoint is often back at once, and every second held sends a whole second of notifications to retry.
# A credential or configuration error holds 30 s at once: asking again soon cannot help.
TRANSIENT_HOLD = timedelta(seconds=1)
FAILURE_HOLD = timedelta(seconds=30)
# A token request the server provably did not process (RST_STREAM REFUSED_STREAM, or GOAWAY before it) is
# resent at once, as the push transport does; these many times per fetch.
UNPROCESSED_RESENDS = 3
_SA_FIELDS = ("type", "client_email", "private_key", "token_uri")


class _Response:
    def __init__(self, r: httpx.Response):
        self.status = r.status_code
        self.headers = r.headers
        self.data = r.content


def _unprocessed(exc: BaseException) -> bool:
    """The server provably did not process the request: it refused the stream, or sent GOAWAY before it
    (httpcore itself resends what a GOAWAY's last_stream_id leaves out, except for last_stream_id 0)."""
    seen: BaseException | None = exc
    while seen is not None:
        event = seen.args[0] if seen.args else None
        if isinstance(event, h2.events.StreamReset) and event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
            return True
        if isinstance(event, h2.events.ConnectionTerminated) and event.last_stream_id == 0:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class HttpxAuthRequest(google.auth.transport.Request):
    """google-auth transport on httpx, trusting exactly the context it is given."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float = 10.0):
        self._client = httpx.Client(verify=ssl_context, http2=True, timeout=timeout, trust_env=False)
        self._timeout = timeout
        self.last: httpx.Response | None = None
        self.resent = 0  # unprocessed requests resent

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None,
                 timeout: float | None = None, **kwargs: Any) -> _Response:
        self.last = None
        resends = 0
        while True:
            try:
                r = self._client.request(method, url, content=body, headers=headers, timeout=timeout or self._timeout)
            except httpx.HTTPError as exc:
                if resends < UNPROCESSED_RESENDS and _unprocessed(exc):
                    resends += 1
                    self.resent += 1
                    log.info("FCM OAuth token request not processed by the server (%s); resending", exc)
                    continue
                raise google.auth.exceptions.TransportError(f"{type(exc).__name__}: {exc}") from exc
            self.last = r
            return _Response(r)

    def close(self) -> None:
        self._client.close()


def load_service_account(path: str) -> service_account.Credentials:
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except FileNotFoundError:
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"{path} is not readable JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"{path} must hold a JSON object")
    missing = [f for f in _SA_FIELDS if not info.get(f)]
    if missing:
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"{path} is missing {', '.join(missing)}")
    if info.get("type") != "service_account":
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"{path} has type {info.get('type')!r}, expected 'service_account'")
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", f"{path}: unusable private key: {exc}") from None


class FcmAccessToken:
    """One OAuth access token shared by every send; refreshed before expiry, once at a time."""

    def __init__(self, credentials: service_account.Credentials, ssl_context: ssl.SSLContext, *, clock: Clock,
                 table: OutcomeTable):
        self._creds = credentials
        self._request = HttpxAuthRequest(ssl_context)
        self._clock = clock
        self._table = table
        self._token: str | None = None
        self._expires: datetime | None = None
        self._failure: tuple[Outcome, datetime] | None = None
        self._hold = TRANSIENT_HOLD  # the next transient failure's hold
        self._lock: asyncio.Lock | None = None
        self.fetched = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._expires is not None and self._clock.now() < self._expires - REFRESH_MARGIN

    async def get(self) -> str | Outcome:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fresh():
                return self._token  # type: ignore[return-value]
            if self._failure is not None and self._clock.now() < self._failure[1]:
                return self._failure[0]
            result = await asyncio.to_thread(self._refresh)
            metrics.for_provider("fcm").auth(not isinstance(result, Outcome))
            if isinstance(result, Outcome):
                if result.retry:
                    hold, self._hold = self._hold, min(self._hold * 2, FAILURE_HOLD)
                else:
                    hold = FAILURE_HOLD
                self._failure = (result, self._clock.now() + hold)
                log.error("FCM OAuth token refresh failed for service account %s: %s (held %g s)",
                          self._creds.service_account_email, result.raw_error_text, hold.total_seconds())
            else:
                self._failure, self._hold = None, TRANSIENT_HOLD
            return result

    def _refresh(self) -> str | Outcome:
        try:
            self._creds.refresh(self._request)
        except google.auth.exceptions.RefreshError:
            last = self._request.last
            if last is None:
                return classify("oauth", error="connection_lost", table=self._table)
            return classify("oauth", status=last.status_code, body=last.content, headers=last.headers,
                            table=self._table)
        except google.auth.exceptions.TransportError as exc:
            return classify("oauth", error="connection_lost", detail=str(exc)[:200], table=self._table)
        self.fetched += 1
        expiry = self._creds.expiry  # naive UTC from google-auth's own clock
        remaining = (expiry.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)) if expiry else timedelta(hours=1)
        self._token = self._creds.token
        self._expires = self._clock.now() + remaining
        return self._token  # type: ignore[return-value]

    def rejected(self, token: str) -> None:
        """FCM answered 401 to ``token``: the next ``get`` fetches a new one (once per bad token)."""
        if token == self._token:
            self._token = None

    def close(self) -> None:
        self._request.close()


class FcmClient:
    """Sends to ``POST /v1/projects/<project>/messages:send``."""

    provider = "fcm"

    def __init__(self, config: PushConfig, *, clock: Clock | None = None, table: OutcomeTable | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        config.require_fcm()
        self._clock = clock or SystemClock()
        self._table = table or DEFAULT_TABLE
        creds = load_service_account(config.fcm_credentials_file)  # type: ignore[arg-type]
        self.project_id = config.fcm_project_id or creds.project_id
        if not self.project_id:
            raise ConfigError("PUSH_FCM_PROJECT_ID", "not set and the service-account file has no project_id")
        if not config.fcm_project_id:  # PushConfig checked its own; the file's becomes a URL segment too
            check_project_id(self.project_id, "PUSH_FCM_CREDENTIALS_FILE",
                             f"{config.fcm_credentials_file}: project_id ")
        ctx = make_ssl_context(config.ca_file)
        self.oauth = FcmAccessToken(creds, make_ssl_context(config.ca_file, alpn=("h2", "http/1.1")),
                                    clock=self._clock, table=self._table)
        if transport is None:
            from push.transport import transport_from_config
            transport = transport_from_config(config, ctx, provider="fcm")
        self._transport = transport
        self._metrics = metrics.for_provider("fcm")
        self._timeout = config.stream_timeout
        self._http = httpx.AsyncClient(transport=transport, base_url=config.fcm_base_url.rstrip("/"),
                                       timeout=httpx.Timeout(config.stream_timeout))
        from push.transport import DirectPost, H2Transport
        self._direct = DirectPost(self._http, transport) if isinstance(transport, H2Transport) else None
        self._path = f"/v1/projects/{self.project_id}/messages:send"
        self.sent = 0

    async def ready(self) -> bool:
        """An access token and a stream slot free on an open connection: a send would leave at once."""
        if isinstance(await self.oauth.get(), Outcome):
            return False
        if self._direct is None:
            return True
        return await self._direct.wait_free_stream(self._timeout)

    def capacity(self) -> int | None:
        """How many sends would leave at once (None: unknown, not our transport)."""
        return None if self._direct is None else self._direct.free_streams()

    async def send(self, n: Notification, *, apns_id: str | None = None) -> Outcome:
        """Send one notification (``apns_id`` is accepted for the ``Sender`` protocol; FCM has none)."""
        if not metrics.enabled():
            return await self._send(n)
        gauge = self._metrics.in_flight
        gauge.inc()
        try:
            return await self._send(n)
        finally:
            gauge.dec()

    async def _send(self, n: Notification) -> Outcome:
        size, limit = n.payload_size()
        if size > limit:
            return classify("fcm", error="payload_too_large", detail=f"payload is {size} bytes, limit {limit}",
                            table=self._table)
        if not n.token:
            return classify("fcm", error="invalid_content", detail="no registration token", table=self._table)
        body = jsoncodec.dumps({"message": n.fcm_message()})
        refreshed = False
        while True:
            token = await self.oauth.get()
            if isinstance(token, Outcome):
                return token
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            t0 = time.perf_counter()
            out = await post_and_classify("fcm", self._http, self._direct, self._path, body, headers,
                                          table=self._table, now=self._clock.now)
            if metrics.enabled():
                self._metrics.latency.observe(time.perf_counter() - t0)
            if out.provider_status is not None:
                self.sent += 1
            if out.action is Action.REFRESH_AUTH and not refreshed:
                self.oauth.rejected(token)
                refreshed = True
                continue
            return out

    async def aclose(self) -> None:
        from push.transport import warn_if_never_connected
        warn_if_never_connected(self._transport, "fcm", str(self._http.base_url))
        await self._http.aclose()
        self.oauth.close()

    async def __aenter__(self) -> "FcmClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FcmClient(project={self.project_id!r}, sent={self.sent}, oauth_fetches={self.oauth.fetched})"
