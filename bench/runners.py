"""One function per measured client. Each gets its inputs, warms up, then times N sends.

The inputs are JSON lines, one per notification, as ``push-feedback send`` reads
them; parsing them and building each client's own request objects (the project's
validated ``Notification``, aioapns's ``NotificationRequest``, firebase-admin's
``Message``) is on the clock, as are the payload's JSON encoding and per-request
headers (``spec.input == "objects"`` builds the project's Notifications before the
clock instead, the way this bench measured before). Concurrency is
``spec.concurrency`` requests in flight, or each client's defaults / best
settings in the latency profile (``spec.settings``; see ``inflight``).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench import workload
from bench.env import APNS_TOPIC, BenchEnv
from bench.spec import START_MARK, STOP_MARK, RunSpec

if TYPE_CHECKING:  # importing push loads SQLAlchemy: peers' processes must not pay for it
    from push.config import PushConfig

T = TypeVar("T")
R = TypeVar("R")
WARM_START = 50_000_000  # warm-up tokens never collide with timed ones


class Meter:
    """Wall and process CPU time of the timed part; prints markers for the parent."""

    def __init__(self, profile: str | None = None) -> None:
        self.wall = self.cpu = 0.0
        self._t0 = self._c0 = 0.0
        self._profile_path = profile
        self._profiler: cProfile.Profile | None = None

    def start(self) -> None:
        print(START_MARK, flush=True)
        if self._profile_path:
            self._profiler = cProfile.Profile()
            self._profiler.enable()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        if self._profiler is not None and self._profile_path:
            self._profiler.disable()
            self._profiler.dump_stats(self._profile_path)
        print(STOP_MARK, flush=True)

    @contextmanager
    def timing(self) -> Any:
        self.start()
        try:
            yield
        finally:
            self.stop()


async def gather_bounded(fn: Callable[[T], Awaitable[R]], items: Iterable[T], concurrency: int) -> list[R]:
    """``asyncio.gather`` over all items, at most ``concurrency`` running at once."""
    sem = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(one(item) for item in items))


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# In flight at "best" settings: 1,000 streams per connection is what APNs allows (and the latency
# server announces); send_batch spreads its in-flight requests over its two connections.
BEST_INFLIGHT = 1000
SEND_BATCH_BEST = 2000
FA_BATCH = 500  # firebase-admin's documented maximum per send_each / send_each_async call
FA_BEST_CALLS = 4  # send_each_async calls of FA_BATCH at once at "best"


def inflight(spec: RunSpec, default: int, best: int = BEST_INFLIGHT) -> int:
    """Requests in flight: the bench's common setting, the client's documented default, or its best."""
    return {"bench": spec.concurrency, "default": default, "best": best}[spec.settings]


def push_config(env: BenchEnv, spec: RunSpec, database_url: str = "sqlite:///:memory:") -> PushConfig:
    from push.config import PushConfig

    extra: dict[str, Any] = {}
    if spec.settings == "bench":
        extra["concurrency"] = spec.concurrency
    elif spec.settings == "best":
        extra["concurrency"] = SEND_BATCH_BEST
    return PushConfig(  # "default": PushConfig's own concurrency and connection count
        database_url=database_url, apns_base_url=env.url, apns_key_file=env.apns_key_file,
        apns_key_id=env.apns_key_id, apns_team_id=env.apns_team_id, fcm_base_url=env.url,
        fcm_credentials_file=env.service_account_file, fcm_project_id=env.project_id, ca_file=env.ca_file,
        **extra)


def _outcome_counts(outcomes: Iterable[Any]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for out in outcomes:
        counts["ok" if out.ok else f"failed:{out.failure_type.value if out.failure_type else 'none'}"] += 1
    return dict(counts)


def _status_counts(statuses: Iterable[int]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for status in statuses:
        counts["ok" if status == 200 else f"status:{status}"] += 1
    return dict(counts)


# --------------------------------------------------------------------------- the project


def run_send_batch(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    from push import metrics
    from push.pipeline import send_batch

    metrics.set_enabled(spec.metrics)  # one case per worker process: no need to restore it

    tmp = None
    url = spec.db_url  # postgres, or a copy of the grown SQLite database made by the parent
    if spec.db == "sqlite" and not url:
        tmp = tempfile.mkdtemp(prefix="pf-bench-")
        url = f"sqlite:///{tmp}/bench.db"
    assert url, "send_batch needs a database"
    cfg = push_config(env, spec, url)
    try:
        send_batch(list(workload.notifications(spec.provider, WARM_START, spec.warmup, spec.dead)), cfg, "warmup")
        items: Iterable[Any]
        if spec.generator:  # lazy all the way: JSON lines made and parsed one at a time
            items = workload.parsed(workload.record(spec.provider, workload.token(spec.provider, i, spec.dead))
                                    for i in range(spec.n))
        elif spec.input == "objects":
            items = list(workload.notifications(spec.provider, 0, spec.n, spec.dead))
        else:  # parsed and validated on the clock, lazily, as the CLI feeds send_batch
            items = workload.parsed(workload.records(spec.provider, 0, spec.n, spec.dead))
        # The memory check also takes every notification's result back, as a host deleting dead
        # tokens would (send_batch's on_result): what it costs in memory is part of the figure.
        results = [0]

        def count(_result: Any) -> None:
            results[0] += 1

        with meter.timing():
            report = send_batch(items, cfg, "bench", on_result=count if spec.generator else None)
        if spec.generator and results[0] != spec.n:
            raise RuntimeError(f"on_result saw {results[0]} results for {spec.n} notifications")
        counts = {"sent": report.sent, "failed": report.failed_total, "retry_pending": report.retry_pending,
                  "excluded": report.excluded_total, "pending": report.pending}
        return {k: v for k, v in counts.items() if v}
    finally:
        if tmp is not None:
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)


def run_client(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    from push.apns import ApnsClient
    from push.fcm import FcmClient

    from push.notification import Notification

    cfg = push_config(env, spec)
    warm = workload.records(spec.provider, WARM_START, spec.warmup, spec.dead)
    items = workload.records(spec.provider, 0, spec.n, spec.dead)
    from_dict = Notification.from_dict

    async def main() -> dict[str, int]:
        client = ApnsClient(cfg) if spec.provider == "apns" else FcmClient(cfg)

        def send(line: str) -> Awaitable[Any]:
            return client.send(from_dict(json.loads(line)))

        try:
            await gather_bounded(send, warm, spec.concurrency)
            with meter.timing():
                outs = await gather_bounded(send, items, spec.concurrency)
        finally:
            await client.aclose()
        return _outcome_counts(outs)

    return asyncio.run(main())


# --------------------------------------------------------------------------- raw clients


def _apns_jwt(env: BenchEnv) -> str:
    import jwt

    return jwt.encode({"iss": env.apns_team_id, "iat": int(time.time())}, Path(env.apns_key_file).read_bytes(),
                      algorithm="ES256", headers={"kid": env.apns_key_id})


def _fcm_access_token(env: BenchEnv) -> str:
    """An OAuth access token from the server's /token, as google-auth would get it."""
    import httpx

    from fixtures.keys import JWT_BEARER, ServiceAccount, service_account_assertion

    info = json.loads(Path(env.service_account_file).read_text())
    sa = ServiceAccount(Path(env.service_account_file), info["client_email"], None,  # type: ignore[arg-type]
                        info["project_id"], info["private_key_id"], info["token_uri"])
    assertion = service_account_assertion(sa)
    ctx = ssl.create_default_context(cafile=env.ca_file)
    with httpx.Client(verify=ctx, trust_env=False) as client:
        resp = client.post(info["token_uri"], data={"grant_type": JWT_BEARER, "assertion": assertion})
        resp.raise_for_status()
        token: str = resp.json()["access_token"]
        return token


class RawRequests:
    """Per-request (path, headers, body) as a correct client builds them, pseudo-headers first."""

    def __init__(self, env: BenchEnv, provider: str) -> None:
        import uuid

        self._uuid4 = uuid.uuid4
        self.provider = provider
        self.authority = env.authority.encode()
        if provider == "apns":
            self.auth = f"bearer {_apns_jwt(env)}".encode()
            self.fcm_path = b""
        else:
            self.auth = f"Bearer {_fcm_access_token(env)}".encode()
            self.fcm_path = f"/v1/projects/{env.project_id}/messages:send".encode()

    def build(self, line: str) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
        """The request for one JSON line (parsed here, on the clock)."""
        rec = json.loads(line)
        tok = rec["token"]
        if self.provider == "apns":
            path = f"/3/device/{tok}"
            body = workload.dumps({"aps": {"alert": {"title": rec["title"], "body": rec["body"]}}})
            headers = [
                (b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority),
                (b":path", path.encode()), (b"apns-topic", APNS_TOPIC.encode()), (b"apns-push-type", b"alert"),
                (b"apns-priority", b"10"), (b"apns-id", str(self._uuid4()).encode()),
                (b"content-type", b"application/json"), (b"authorization", self.auth),
                (b"content-length", str(len(body)).encode()),
            ]
            return path, headers, body
        body = workload.dumps({"message": {"token": tok, "notification": {"title": rec["title"],
                                                                         "body": rec["body"]},
                                           "android": {"priority": "HIGH"}}})
        headers = [
            (b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority),
            (b":path", self.fcm_path), (b"content-type", b"application/json"), (b"authorization", self.auth),
            (b"content-length", str(len(body)).encode()),
        ]
        return self.fcm_path.decode(), headers, body


def run_minimal(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    from bench.minimal import H2Lib, MinimalH2Client

    lib = H2Lib("jh2" if spec.kind == "minimal_jh2" else "h2")
    raw = RawRequests(env, spec.provider)
    warm = workload.records(spec.provider, WARM_START, spec.warmup, spec.dead)
    toks = workload.records(spec.provider, 0, spec.n, spec.dead)
    concurrency = inflight(spec, spec.concurrency)

    async def main() -> dict[str, int]:
        client = await MinimalH2Client.connect(lib, env.host, env.port, env.ca_file)

        async def send(line: str) -> int:
            _, headers, body = raw.build(line)
            status, _content = await client.request(headers, body)
            return status

        try:
            await gather_bounded(send, warm, concurrency)
            with meter.timing():
                statuses = await gather_bounded(send, toks, concurrency)
        finally:
            await client.aclose()
        return _status_counts(statuses)

    return asyncio.run(main())


def run_httpx(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    import httpx

    raw = RawRequests(env, spec.provider)
    warm = workload.records(spec.provider, WARM_START, spec.warmup, spec.dead)
    toks = workload.records(spec.provider, 0, spec.n, spec.dead)
    ctx = ssl.create_default_context(cafile=env.ca_file)

    async def main() -> dict[str, int]:
        async with httpx.AsyncClient(http2=True, verify=ctx, base_url=env.url, trust_env=False) as client:
            async def send(line: str) -> int:
                path, headers, body = raw.build(line)
                plain = [(k, v) for k, v in headers if not k.startswith(b":")]
                resp = await client.post(path, content=body, headers=plain)
                return resp.status_code

            await gather_bounded(send, warm, spec.concurrency)
            with meter.timing():
                statuses = await gather_bounded(send, toks, spec.concurrency)
        return _status_counts(statuses)

    return asyncio.run(main())


# --------------------------------------------------------------------------- peers


def use_jh2_as_h2() -> None:
    """Make ``import h2...`` load jh2 (a fork with the same API and a compiled HPACK codec) in this
    process, before aioapns is imported: aioapns in its strongest form."""
    import importlib
    import sys

    import jh2

    assert "aioapns" not in sys.modules, "aioapns already imported on h2"
    sys.modules["h2"] = jh2
    for sub in ("config", "connection", "errors", "events", "exceptions", "frame_buffer", "settings", "stream",
                "utilities", "windows"):
        sys.modules[f"h2.{sub}"] = importlib.import_module(f"jh2.{sub}")


def run_aioapns(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    if spec.kind == "aioapns_jh2":
        use_jh2_as_h2()
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    class LocalProtocol(APNsProductionClientProtocol):  # aioapns has no host setting: point its class at us
        APNS_SERVER = env.host
        APNS_PORT = env.port

    ctx = ssl.create_default_context(cafile=env.ca_file)
    ctx.set_alpn_protocols(["h2"])  # aioapns sets no ALPN; nginx needs it to speak HTTP/2 over TLS

    warm = workload.records("apns", WARM_START, spec.warmup, spec.dead)
    items = workload.records("apns", 0, spec.n, spec.dead)
    # aioapns bounds nothing itself: the caller's in-flight count is the bench's at "default".
    concurrency = inflight(spec, spec.concurrency)
    # "bench": two connections like the project's client; otherwise aioapns's default pool (10).
    pool = {"max_connections": 2} if spec.settings == "bench" else {}

    async def main() -> dict[str, int]:
        apns = APNs(key=Path(env.apns_key_file).read_text(), key_id=env.apns_key_id, team_id=env.apns_team_id,
                    topic=APNS_TOPIC, ssl_context=ctx, **pool)
        apns.pool.protocol_class = LocalProtocol

        def send(line: str) -> Awaitable[Any]:
            rec = json.loads(line)
            return apns.send_notification(NotificationRequest(
                device_token=rec["token"], message={"aps": {"alert": {"title": rec["title"], "body": rec["body"]}}},
                push_type=PushType.ALERT, priority=10))

        try:
            await gather_bounded(send, warm, concurrency)
            with meter.timing():
                results = await gather_bounded(send, items, concurrency)
        finally:
            apns.pool.close()
        return _status_counts(int(r.status) for r in results)

    return asyncio.run(main())


def _firebase_app(env: BenchEnv) -> Any:
    import firebase_admin
    from firebase_admin import credentials, messaging

    # The FCM URL is a class constant; the OAuth endpoint comes from the service account's token_uri.
    messaging._MessagingService.FCM_URL = f"{env.url}/v1/projects/{{0}}/messages:send"
    return firebase_admin.initialize_app(credentials.Certificate(env.service_account_file),
                                         {"projectId": env.project_id}, name="bench")


def _firebase_messages(lines: Iterable[str]) -> list[Any]:
    """firebase-admin Messages from JSON lines (on the clock for the timed batches)."""
    from firebase_admin import messaging

    out = []
    for line in lines:
        rec = json.loads(line)
        out.append(messaging.Message(token=rec["token"], notification=messaging.Notification(
            title=rec["title"], body=rec["body"]), android=messaging.AndroidConfig(priority="high")))
    return out


def _fa_batch(spec: RunSpec) -> int:
    return spec.concurrency if spec.settings == "bench" else FA_BATCH


def _batch_counts(responses: Iterable[Any]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for batch in responses:
        counts["ok"] += batch.success_count
        for r in batch.responses:
            if not r.success:
                counts[f"error:{type(r.exception).__name__}"] += 1
    return dict(counts)


def run_fa_async(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    """firebase-admin ``send_each_async``: batches of ``concurrency`` messages, one after another."""
    from firebase_admin import messaging

    app = _firebase_app(env)
    size = _fa_batch(spec)
    warm = _chunks(workload.records("fcm", WARM_START, spec.warmup, spec.dead), size)
    batches = _chunks(workload.records("fcm", 0, spec.n, spec.dead), size)
    calls = FA_BEST_CALLS if spec.settings == "best" else 1  # calls in flight at once

    async def send(lines: Sequence[str]) -> Any:
        return await messaging.send_each_async(_firebase_messages(lines), app=app)

    async def main() -> dict[str, int]:
        await gather_bounded(send, warm, calls)
        with meter.timing():
            responses = await gather_bounded(send, batches, calls)
        return _batch_counts(responses)

    return asyncio.run(main())


def run_fa_sync(spec: RunSpec, env: BenchEnv, meter: Meter) -> dict[str, int]:
    """firebase-admin ``send_each``: its thread pool, ``concurrency`` messages per call."""
    import requests
    from firebase_admin import _http_client, messaging

    app = _firebase_app(env)
    # firebase-admin mounts a 100-connection adapter for fcm.googleapis.com; mount the same for our host.
    service = messaging._get_messaging_service(app)
    service._client.session.mount(env.url, requests.adapters.HTTPAdapter(
        pool_connections=100, pool_maxsize=100, max_retries=_http_client.DEFAULT_RETRY_CONFIG))
    size = _fa_batch(spec)
    warm = _chunks(workload.records("fcm", WARM_START, spec.warmup, spec.dead), size)
    batches = _chunks(workload.records("fcm", 0, spec.n, spec.dead), size)
    for batch in warm:
        messaging.send_each(_firebase_messages(batch), app=app)
    with meter.timing():
        responses = [messaging.send_each(_firebase_messages(batch), app=app) for batch in batches]
    return _batch_counts(responses)


RUNNERS: dict[str, Callable[[RunSpec, BenchEnv, Meter], dict[str, int]]] = {
    "send_batch": run_send_batch,
    "client": run_client,
    "minimal_h2": run_minimal,
    "minimal_jh2": run_minimal,
    "httpx": run_httpx,
    "aioapns": run_aioapns,
    "aioapns_jh2": run_aioapns,
    "fa_async": run_fa_async,
    "fa_sync": run_fa_sync,
}
