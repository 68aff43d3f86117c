"""The fake APNs / FCM / OAuth server behaves as fixtures/scenarios.py says.

Real TLS + HTTP/2 on 127.0.0.1, no mocks: a raw h2 client (to see GOAWAY and
RST_STREAM codes exactly) and httpx (to prove ordinary clients interoperate).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from google.auth.transport import Request as GoogleRequest
from google.auth.transport import Response as GoogleResponse
from google.oauth2 import service_account as google_sa

from fixtures.h2client import ConnectionLost, H2Response, RawH2Client, StreamReset, Unprocessed
from fixtures.keys import (
    FCM_SCOPE,
    GOOGLE_TOKEN_URI,
    JWT_BEARER,
    ApnsKey,
    ServiceAccount,
    apns_jwt,
    make_apns_key,
    make_service_account,
    service_account_assertion,
    write_corrupt_p8,
    write_incomplete_service_account,
)
from fixtures.scenarios import (
    APNS_REASONS,
    APNS_SCENARIOS,
    CONNECTION_KINDS,
    FCM_SCENARIOS,
    HTML_404_BATCH,
    OAUTH_ERRORS,
    Scenario,
    apns_token,
    fcm_token,
    ok_apns_token,
    ok_fcm_token,
    scenario_for,
)
from fixtures.server import FakePushServer
from fixtures.tls import TestPKI

T = TypeVar("T")
FIXED_NOW = 1_800_000_000.0
TOPIC = "com.example.app"
PAYLOAD = b'{"aps":{"alert":"hi"}}'
H2_NO_ERROR, H2_INTERNAL_ERROR, H2_REFUSED_STREAM = 0, 2, 7


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def connect(server: FakePushServer, pki: TestPKI, **kw: Any) -> RawH2Client:
    return await RawH2Client.connect(server.url, pki.client_ssl_context(), **kw)


def apns_headers(key: ApnsKey, *, apns_id: str | None = None, push_type: str = "alert",
                 iat: float | None = None) -> list[tuple[str, str]]:
    headers = [("authorization", f"bearer {apns_jwt(key, iat=iat)}"),
               ("apns-topic", TOPIC), ("apns-push-type", push_type)]
    if apns_id is not None:
        headers.append(("apns-id", apns_id))
    return headers


def fcm_body(token: str, **message: Any) -> bytes:
    return json.dumps({"message": {"token": token, "notification": {"title": "hi"}, **message}}).encode()


def fcm_headers(bearer: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {bearer}"), ("content-type", "application/json")]


FCM_PATH = "/v1/projects/demo-project/messages:send"


async def apns_once(server: FakePushServer, pki: TestPKI, key: ApnsKey, token: str, **kw: Any) -> H2Response:
    async with await connect(server, pki) as client:
        return await client.request("POST", f"/3/device/{token}", apns_headers(key, **kw), PAYLOAD)


async def send_until_done(server: FakePushServer, pki: TestPKI,
                          requests: Sequence[tuple[str, list[tuple[str, str]], bytes]],
                          max_connections: int = 100) -> tuple[list[H2Response], list[Exception]]:
    """A well-behaved sender: resend only what the server says it did not process."""
    todo = list(requests)
    done: list[H2Response] = []
    seen: list[Exception] = []
    for _ in range(max_connections):
        if not todo:
            break
        async with await connect(server, pki) as client:
            started = []
            for req in todo:
                try:
                    started.append((req, (await client.start("POST", *req))[1]))
                except ConnectionLost:
                    break
            todo = todo[len(started):]
            for req, future in started:
                try:
                    done.append(await asyncio.wait_for(future, 5))
                except (Unprocessed, StreamReset) as exc:
                    assert not isinstance(exc, StreamReset) or exc.error_code == H2_REFUSED_STREAM
                    seen.append(exc)
                    todo.append(req)
    assert not todo, f"{len(todo)} requests never answered"
    return done, seen


# ----------------------------------------------------------------- credentials & TLS


def test_pki_and_keys(pki: TestPKI, apns_key: ApnsKey, service_account: ServiceAccount,
                      fake_server: FakePushServer, tmp_path: Path) -> None:
    assert pki.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert fake_server.url.startswith("https://127.0.0.1:") and fake_server.ca_file == pki.ca_file
    assert apns_key.path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert len(apns_key.key_id) == 10 and len(apns_key.team_id) == 10
    info = service_account.info
    assert info["type"] == "service_account" and info["token_uri"] == fake_server.token_url
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert service_account.public_key.key_size == 2048
    assert google_sa.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(service_account.path)).service_account_email \
        == service_account.client_email
    with pytest.raises(ValueError):
        google_sa.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(write_incomplete_service_account(tmp_path)))
    with pytest.raises(ValueError):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        load_pem_private_key(write_corrupt_p8(tmp_path).read_bytes(), None)


def test_httpx_http2_interop(fake_server: FakePushServer, apns_key: ApnsKey) -> None:
    async def main() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(fake_server.ca_file))
        async with httpx.AsyncClient(http2=True, verify=ctx) as client:
            apns_id = str(uuid.uuid4())
            response = await client.post(f"{fake_server.url}/3/device/{ok_apns_token(1)}", content=PAYLOAD,
                                         headers=dict(apns_headers(apns_key, apns_id=apns_id)))
            assert response.headers["apns-id"] == apns_id
            assert fake_server.accepted[apns_id] == 1
            return response

    response = run(main())
    assert response.http_version == "HTTP/2" and response.status_code == 200 and response.content == b""


# ----------------------------------------------------------------- scenarios as data


def test_scenario_tables_cover_the_reference() -> None:
    documented = """BadCollapseId BadDeviceToken BadExpirationDate BadMessageId BadPriority BadTopic
        DeviceTokenNotForTopic DuplicateHeaders IdleTimeout InvalidPushType MissingDeviceToken MissingTopic
        PayloadEmpty TopicDisallowed BadCertificate BadCertificateEnvironment ExpiredProviderToken Forbidden
        InvalidProviderToken MissingProviderToken UnrelatedKeyIdInToken BadEnvironmentKeyIdInToken
        BadEnvironmentKeyInToken BadPath MethodNotAllowed ExpiredToken Unregistered PayloadTooLarge
        TooManyProviderTokenUpdates TooManyRequests InternalServerError ServiceUnavailable Shutdown""".split()
    assert list(APNS_REASONS) == documented
    by_reason = {s.reason: s for s in APNS_SCENARIOS.values() if s.kind == "response" and s.reason}
    for reason, status in APNS_REASONS.items():
        assert by_reason[reason].status == status
        assert ("timestamp" in by_reason[reason].json) == (status == 410)
    assert APNS_SCENARIOS["unregistered_old"].json == {"reason": "Unregistered", "timestamp": 1577836800000}
    fcm_required = """ok unregistered unregistered_apns invalid_token invalid_token_message_only
        invalid_argument_payload apns_disabled apns_bad_device_token apns_expired_token sender_id_mismatch
        quota_exceeded unavailable internal third_party_auth_error apns_auth_error unspecified_error
        unknown_code unauthenticated_no_fcm_error permission_denied_no_fcm_error not_found_no_fcm_error
        html_404 html_500 empty_503 truncated_json""".split()
    for table in (APNS_SCENARIOS, FCM_SCENARIOS):
        assert set(CONNECTION_KINDS) <= set(table)
        assert all(table[k].kind == k for k in CONNECTION_KINDS)
    assert set(fcm_required) <= set(FCM_SCENARIOS)
    assert FCM_SCENARIOS["quota_exceeded"].retry_after == "30"
    assert FCM_SCENARIOS["unavailable"].retry_after == "5"
    details = FCM_SCENARIOS["invalid_token"].json["error"]["details"]
    assert {"field": "message.token", "description": "Invalid registration token"} in details[1]["fieldViolations"]


def test_token_helpers_select_scenarios() -> None:
    apns_tokens = {apns_token(name, i) for name in APNS_SCENARIOS for i in range(3)}
    assert len(apns_tokens) == 3 * len(APNS_SCENARIOS)
    for name in APNS_SCENARIOS:
        token = apns_token(name, 7)
        assert re.fullmatch(r"ffff[0-9a-f]{60}", token)
        assert scenario_for("apns", token).name == name
        assert scenario_for("apns", token.upper()).name == name
    for name in FCM_SCENARIOS:
        token = fcm_token(name, 12)
        assert re.fullmatch(r"[A-Za-z0-9_:-]{140,200}", token) and ":APA91b" in token
        assert scenario_for("fcm", token).name == name
    oks_apns = {ok_apns_token(i) for i in range(5000)}
    oks_fcm = {ok_fcm_token(i) for i in range(5000)}
    assert len(oks_apns) == len(oks_fcm) == 5000
    assert all(re.fullmatch(r"[0-9a-f]{64}", t) and not t.startswith("ffff") for t in oks_apns)
    assert all(scenario_for("fcm", t).name == "ok" for t in oks_fcm)
    assert scenario_for("apns", "ffff9999" + "0" * 56).name == "ok"  # index out of range


# ----------------------------------------------------------------- APNs responses

APNS_RESPONSES = [s for s in APNS_SCENARIOS.values() if s.kind == "response"]


@pytest.mark.parametrize("sc", APNS_RESPONSES, ids=lambda s: s.name)
def test_apns_response_scenario(sc: Scenario, fake_server: FakePushServer, pki: TestPKI,
                                apns_key: ApnsKey) -> None:
    fake_server.clock = lambda: FIXED_NOW
    apns_id = str(uuid.uuid4())
    response = run(apns_once(fake_server, pki, apns_key, apns_token(sc.name), apns_id=apns_id, iat=FIXED_NOW))
    assert response.status == sc.status
    assert response.body == sc.render(now_ms=int(FIXED_NOW * 1000))
    assert response.headers["apns-id"] == apns_id
    for name, value in sc.headers:
        assert response.headers[name] == value
    assert fake_server.accepted == ({apns_id: 1} if sc.status == 200 else {})
    [rec] = fake_server.requests
    assert rec.scenario == sc.name and rec.status == sc.status and rec.outcome == "answered"
    assert rec.jwt_claims == {"iss": apns_key.team_id, "iat": int(FIXED_NOW)}
    assert rec.jwt_header == {"alg": "ES256", "kid": apns_key.key_id, "typ": "JWT"}


def test_apns_410_timestamp_is_server_time(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    before = int(time.time() * 1000)
    response = run(apns_once(fake_server, pki, apns_key, apns_token("unregistered")))
    body = json.loads(response.body)
    assert response.status == 410 and body["reason"] == "Unregistered"
    assert before <= body["timestamp"] <= int(time.time() * 1000)


def test_apns_generates_apns_id_and_dedup_key_without_one(fake_server: FakePushServer, pki: TestPKI,
                                                           apns_key: ApnsKey) -> None:
    token = ok_apns_token(3)

    async def main() -> list[H2Response]:
        async with await connect(fake_server, pki) as client:
            return [await client.request("POST", f"/3/device/{token}", apns_headers(apns_key), PAYLOAD)
                    for _ in range(2)]

    first, second = run(main())
    assert uuid.UUID(first.headers["apns-id"]) and first.headers["apns-id"] != second.headers["apns-id"]
    [(key, count)] = fake_server.accepted.items()
    assert key.startswith(token) and count == 2  # the duplicate is visible


# ----------------------------------------------------------------- APNs auth & validation


@pytest.fixture(scope="module")
def impostor_key(apns_key: ApnsKey, tmp_path_factory: pytest.TempPathFactory) -> ApnsKey:
    """Same key id and team, different private key."""
    return make_apns_key(tmp_path_factory.mktemp("impostor"), key_id=apns_key.key_id, team_id=apns_key.team_id)


JWT_CASES: list[tuple[str, Callable[[ApnsKey, ApnsKey], str | None], int, str | None]] = [
    ("valid", lambda k, i: f"bearer {apns_jwt(k)}", 200, None),
    ("scheme-case", lambda k, i: f"Bearer {apns_jwt(k)}", 200, None),
    ("missing", lambda k, i: None, 403, "MissingProviderToken"),
    ("empty", lambda k, i: "bearer ", 403, "MissingProviderToken"),
    ("garbage", lambda k, i: "bearer abc.def.ghi", 403, "InvalidProviderToken"),
    ("wrong-signature", lambda k, i: f"bearer {apns_jwt(i)}", 403, "InvalidProviderToken"),
    ("unknown-kid", lambda k, i: f"bearer {apns_jwt(k, kid='ZZZZZZZZZZ')}", 403, "InvalidProviderToken"),
    ("wrong-team", lambda k, i: f"bearer {apns_jwt(k, iss='ZZZZZZZZZZ')}", 403, "InvalidProviderToken"),
    ("hs256", lambda k, i: "bearer " + jwt.encode({"iss": k.team_id, "iat": int(time.time())}, "s" * 32,
                                                  algorithm="HS256", headers={"kid": k.key_id}),
     403, "InvalidProviderToken"),
    ("age-3599s", lambda k, i: f"bearer {apns_jwt(k, iat=time.time() - 3599)}", 200, None),
    ("age-3601s", lambda k, i: f"bearer {apns_jwt(k, iat=time.time() - 3601)}", 403, "ExpiredProviderToken"),
]


@pytest.mark.parametrize(("case", "auth", "status", "reason"), JWT_CASES, ids=[c[0] for c in JWT_CASES])
def test_apns_jwt_validation(case: str, auth: Callable[[ApnsKey, ApnsKey], str | None], status: int,
                             reason: str | None, fake_server: FakePushServer, pki: TestPKI,
                             apns_key: ApnsKey, impostor_key: ApnsKey) -> None:
    value = auth(apns_key, impostor_key)
    headers = [("apns-topic", TOPIC)] + ([("authorization", value)] if value is not None else [])

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request("POST", f"/3/device/{ok_apns_token(1)}", headers, PAYLOAD)

    response = run(main())
    assert response.status == status
    assert (json.loads(response.body)["reason"] if response.body else None) == reason


def test_apns_jwt_expiry_follows_server_clock(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    iat = time.time()
    assert run(apns_once(fake_server, pki, apns_key, ok_apns_token(1), iat=iat)).status == 200
    fake_server.clock = lambda: iat + 3601
    response = run(apns_once(fake_server, pki, apns_key, ok_apns_token(1), iat=iat))
    assert (response.status, json.loads(response.body)) == (403, {"reason": "ExpiredProviderToken"})


def test_apns_certificate_auth(fake_server: FakePushServer, pki: TestPKI, tmp_path: Path) -> None:
    cert = pki.issue_client_cert(tmp_path)

    async def main(ctx: ssl.SSLContext) -> H2Response:
        async with await RawH2Client.connect(fake_server.url, ctx) as client:
            # no authorization and no apns-topic: both fine on a certificate connection
            return await client.request("POST", f"/3/device/{ok_apns_token(1)}", [], PAYLOAD)

    assert run(main(pki.client_ssl_context(cert))).status == 200
    assert fake_server.requests[-1].client_cert is True
    import trustme

    foreign = trustme.CA().issue_cert("evil.example", common_name="Apple Push Services: evil")
    ctx = pki.client_ssl_context()
    foreign.configure_cert(ctx)
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionLost)):
        run(main(ctx))


VALIDATION_CASES: list[tuple[str, str, str, list[tuple[str, str]], bytes, int, str]] = [
    ("method", "GET", "/3/device/{t}", [], b"", 405, "MethodNotAllowed"),
    ("path", "POST", "/3/devices/{t}", [], PAYLOAD, 404, "BadPath"),
    ("no-token", "POST", "/3/device/", [], PAYLOAD, 400, "MissingDeviceToken"),
    ("non-hex-token", "POST", "/3/device/not-hex", [], PAYLOAD, 400, "BadDeviceToken"),
    ("apns-id", "POST", "/3/device/{t}", [("apns-id", "not-a-uuid")], PAYLOAD, 400, "BadMessageId"),
    ("push-type", "POST", "/3/device/{t}", [("apns-push-type", "shout")], PAYLOAD, 400, "InvalidPushType"),
    ("priority", "POST", "/3/device/{t}", [("apns-priority", "7")], PAYLOAD, 400, "BadPriority"),
    ("expiration", "POST", "/3/device/{t}", [("apns-expiration", "soon")], PAYLOAD, 400, "BadExpirationDate"),
    ("collapse-id", "POST", "/3/device/{t}", [("apns-collapse-id", "c" * 65)], PAYLOAD, 400, "BadCollapseId"),
    ("duplicate", "POST", "/3/device/{t}", [("apns-priority", "10"), ("apns-priority", "5")], PAYLOAD, 400,
     "DuplicateHeaders"),
    ("empty", "POST", "/3/device/{t}", [], b"", 400, "PayloadEmpty"),
    ("too-large", "POST", "/3/device/{t}", [], b"x" * 4097, 413, "PayloadTooLarge"),
    ("voip-too-large", "POST", "/3/device/{t}", [("apns-push-type", "voip")], b"x" * 5121, 413,
     "PayloadTooLarge"),
    ("voip-max", "POST", "/3/device/{t}", [("apns-push-type", "voip")], b"x" * 5120, 200, ""),
    ("alert-max", "POST", "/3/device/{t}", [], b"x" * 4096, 200, ""),
]


@pytest.mark.parametrize(("case", "method", "path", "extra", "body", "status", "reason"), VALIDATION_CASES,
                         ids=[c[0] for c in VALIDATION_CASES])
def test_apns_request_validation(case: str, method: str, path: str, extra: list[tuple[str, str]], body: bytes,
                                 status: int, reason: str, fake_server: FakePushServer, pki: TestPKI,
                                 apns_key: ApnsKey) -> None:
    base = [("authorization", f"bearer {apns_jwt(apns_key)}"), ("apns-topic", TOPIC)]
    names = {k for k, _ in extra}
    headers = base + [("apns-push-type", "alert")] * ("apns-push-type" not in names) + extra

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request(method, path.format(t=ok_apns_token(2)), headers, body)

    response = run(main())
    assert response.status == status
    assert (json.loads(response.body)["reason"] if status != 200 else "") == reason
    assert "apns-id" in response.headers


def test_apns_missing_topic_on_token_connection(fake_server: FakePushServer, pki: TestPKI,
                                                apns_key: ApnsKey) -> None:
    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request("POST", f"/3/device/{ok_apns_token(1)}",
                                        [("authorization", f"bearer {apns_jwt(apns_key)}")], PAYLOAD)

    response = run(main())
    assert (response.status, json.loads(response.body)["reason"]) == (400, "MissingTopic")


# ----------------------------------------------------------------- FCM responses

FCM_RESPONSES = [s for s in FCM_SCENARIOS.values() if s.kind == "response"]
_FCM_NAME = re.compile(r'\{\n  "name": "projects/demo-project/messages/0:1800000000000000%[0-9a-f]{16}"\n\}\n')


@pytest.mark.parametrize("sc", FCM_RESPONSES, ids=lambda s: s.name)
def test_fcm_response_scenario(sc: Scenario, fake_server: FakePushServer, pki: TestPKI) -> None:
    fake_server.clock = lambda: FIXED_NOW
    bearer = fake_server.issue_access_token()
    token = fcm_token(sc.name, 1)
    body = fcm_body(token)

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request("POST", FCM_PATH, fcm_headers(bearer), body)

    response = run(main())
    assert response.status == sc.status
    if sc.name == "ok":
        assert _FCM_NAME.fullmatch(response.body.decode())
    else:
        assert response.body == sc.body
    for name, value in sc.headers:
        assert response.headers[name] == value
    assert fake_server.accepted == ({f"{token}:{hashlib.sha256(body).hexdigest()}": 1}
                                    if sc.status == 200 else {})
    [rec] = fake_server.requests
    assert (rec.provider, rec.token, rec.scenario, rec.bearer) == ("fcm", token, sc.name, bearer)
    assert rec.json == json.loads(body)


FCM_VALIDATION: list[tuple[str, str, str, Any, int, str | None]] = [
    ("no-auth", "POST", FCM_PATH, None, 401, "unauthenticated_no_fcm_error"),
    ("wrong-project", "POST", "/v1/projects/other/messages:send", {"message": {"token": "t"}}, 404,
     "not_found_no_fcm_error"),
    ("bad-json", "POST", FCM_PATH, b"{not json", 400, None),
    ("no-message", "POST", FCM_PATH, {"validate_only": False}, 400, None),
    ("unknown-field", "POST", FCM_PATH, {"message": {"token": "t", "priority": "high"}}, 400, None),
    ("no-target", "POST", FCM_PATH, {"message": {"data": {"a": "b"}}}, 400, None),
    ("two-targets", "POST", FCM_PATH, {"message": {"token": "t", "topic": "news"}}, 400, None),
    ("empty-token", "POST", FCM_PATH, {"message": {"token": ""}}, 400, "invalid_token"),
    ("data-not-string", "POST", FCM_PATH, {"message": {"token": "t", "data": {"a": "b", "n": 12}}}, 400, None),
    ("get", "GET", FCM_PATH, b"", 405, None),
    ("batch", "POST", "/batch", b"--boundary", 404, "html_404"),
]


@pytest.mark.parametrize(("case", "method", "path", "payload", "status", "expected"), FCM_VALIDATION,
                         ids=[c[0] for c in FCM_VALIDATION])
def test_fcm_request_validation(case: str, method: str, path: str, payload: Any, status: int,
                                expected: str | None, fake_server: FakePushServer, pki: TestPKI) -> None:
    headers = [] if case == "no-auth" else fcm_headers(fake_server.issue_access_token())
    body = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request(method, path, headers, body)

    response = run(main())
    assert response.status == status
    if expected is not None:
        assert response.body == FCM_SCENARIOS[expected].body
    elif status == 400:
        error = json.loads(response.body)["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        violations = [v for d in error.get("details", []) for v in d.get("fieldViolations", [])]
        if case == "data-not-string":
            assert violations[0]["field"] == "message.data[1].value"
            assert error["message"] == "Invalid value at 'message.data[1].value' (TYPE_STRING), 12"
        if case == "unknown-field":
            assert violations[0]["field"] == "message" and '"priority"' in error["message"]
    assert fake_server.accepted == {}
    if case == "batch":
        assert response.body == HTML_404_BATCH
    if case == "no-auth":
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_fcm_validate_only_and_topic(fake_server: FakePushServer, pki: TestPKI) -> None:
    bearer = fake_server.issue_access_token()

    async def main() -> list[H2Response]:
        async with await connect(fake_server, pki) as client:
            dry = json.dumps({"validate_only": True, "message": {"token": ok_fcm_token(1)}}).encode()
            topic = json.dumps({"message": {"topic": "news", "data": {"a": "b"}}}).encode()
            return [await client.request("POST", FCM_PATH, fcm_headers(bearer), b) for b in (dry, topic)]

    dry, topic = run(main())
    assert json.loads(dry.body) == {"name": "projects/demo-project/messages/fake_message_id"}
    assert topic.status == 200
    [(key, count)] = fake_server.accepted.items()
    assert key.startswith("topic:news:") and count == 1


def test_fcm_token_expiry_follows_server_clock(fake_server: FakePushServer, pki: TestPKI) -> None:
    bearer = fake_server.issue_access_token(expires_in=60)

    async def send() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request("POST", FCM_PATH, fcm_headers(bearer), fcm_body(ok_fcm_token(1)))

    assert run(send()).status == 200
    now = time.time()
    fake_server.clock = lambda: now + 61
    response = run(send())
    assert (response.status, response.body) == (401, FCM_SCENARIOS["unauthenticated_no_fcm_error"].body)


# ----------------------------------------------------------------- OAuth


async def post_token(server: FakePushServer, pki: TestPKI, form: str) -> H2Response:
    async with await connect(server, pki) as client:
        return await client.request("POST", "/token", [("content-type", "application/x-www-form-urlencoded")],
                                    form.encode())


def test_oauth_issues_tokens_that_fcm_accepts(fake_server: FakePushServer, pki: TestPKI,
                                              service_account: ServiceAccount) -> None:
    fake_server.oauth_expires_in = 120
    form = f"grant_type={JWT_BEARER}&assertion={service_account_assertion(service_account)}"
    response = run(post_token(fake_server, pki, form))
    data = json.loads(response.body)
    assert response.status == 200 and data["expires_in"] == 120 and data["token_type"] == "Bearer"
    assert fake_server.oauth_requests == 1
    claims = fake_server.requests[0].jwt_claims
    assert claims is not None and claims["scope"] == FCM_SCOPE

    async def send() -> H2Response:
        async with await connect(fake_server, pki) as client:
            return await client.request("POST", FCM_PATH, fcm_headers(data["access_token"]),
                                        fcm_body(ok_fcm_token(1)))

    assert run(send()).status == 200
    now = time.time()
    fake_server.clock = lambda: now + 121
    assert run(send()).status == 401


@pytest.fixture(scope="module")
def stranger_sa(tmp_path_factory: pytest.TempPathFactory, fake_server_session: FakePushServer) -> ServiceAccount:
    return make_service_account(tmp_path_factory.mktemp("stranger"), fake_server_session.token_url)


ASSERTION_CASES: list[tuple[str, Callable[[ServiceAccount, ServiceAccount], str], str, str]] = [
    ("wrong-key", lambda sa, other: service_account_assertion(other, iss=sa.client_email),
     "invalid_grant", "Invalid JWT Signature."),
    ("unknown-account", lambda sa, other: service_account_assertion(sa, iss="nobody@x.iam.gserviceaccount.com"),
     "invalid_grant", "Invalid grant: account not found"),
    ("wrong-aud", lambda sa, other: service_account_assertion(sa, aud="https://example.com/token"),
     "invalid_grant", "Invalid JWT: Failed audience check."),
    ("no-fcm-scope", lambda sa, other: service_account_assertion(sa, scope="https://www.googleapis.com/auth/drive"),
     "invalid_scope", "Invalid OAuth scope or ID token audience provided."),
    ("expired", lambda sa, other: service_account_assertion(sa, iat=time.time() - 7200),
     "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
    ("too-long", lambda sa, other: service_account_assertion(sa, lifetime=7200),
     "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
    ("not-a-jwt", lambda sa, other: "not-a-jwt", "invalid_grant", "Invalid JWT Signature."),
]


@pytest.mark.parametrize(("case", "make", "error", "description"), ASSERTION_CASES,
                         ids=[c[0] for c in ASSERTION_CASES])
def test_oauth_rejects_bad_assertions(case: str, make: Callable[[ServiceAccount, ServiceAccount], str],
                                      error: str, description: str, fake_server: FakePushServer, pki: TestPKI,
                                      service_account: ServiceAccount, stranger_sa: ServiceAccount) -> None:
    response = run(post_token(fake_server, pki, f"grant_type={JWT_BEARER}&assertion={make(service_account, stranger_sa)}"))
    data = json.loads(response.body)
    assert response.status == 400 and data["error"] == error
    assert data["error_description"].startswith(description)


def test_oauth_wrong_grant_type(fake_server: FakePushServer, pki: TestPKI) -> None:
    response = run(post_token(fake_server, pki, "grant_type=client_credentials"))
    assert (response.status, json.loads(response.body)["error"]) == (400, "unsupported_grant_type")


@pytest.mark.parametrize("mode", sorted(OAUTH_ERRORS))
def test_oauth_modes(mode: str, fake_server: FakePushServer, pki: TestPKI,
                     service_account: ServiceAccount) -> None:
    fake_server.oauth_mode = mode  # type: ignore[assignment]
    form = f"grant_type={JWT_BEARER}&assertion={service_account_assertion(service_account)}"
    response = run(post_token(fake_server, pki, form))
    assert (response.status, response.body) == OAUTH_ERRORS[mode]
    assert fake_server.oauth_requests == 1


def test_oauth_drop(fake_server: FakePushServer, pki: TestPKI) -> None:
    fake_server.oauth_mode = "drop"
    with pytest.raises(ConnectionLost):
        run(post_token(fake_server, pki, "grant_type=x"))
    assert fake_server.oauth_requests == 1


class _HttpxGoogleRequest(GoogleRequest):
    """google-auth transport on httpx (no requests/urllib3 here); speaks HTTP/1.1."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> GoogleResponse:
        r = self.client.request(method, url, content=body, headers=headers, timeout=timeout or 5)

        class _R(GoogleResponse):
            status = r.status_code
            headers = r.headers
            data = r.content

        return _R()


def test_google_auth_refresh_over_http11_then_fcm_over_httpx_h2(fake_server: FakePushServer, pki: TestPKI,
                                                                service_account: ServiceAccount) -> None:
    creds = google_sa.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(service_account.path), scopes=[FCM_SCOPE])
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca_file))) as http1:
        creds.refresh(_HttpxGoogleRequest(http1))
    assert creds.token and fake_server.requests[0].http_version == "1.1"
    # google-auth signs for Google's endpoint whatever token_uri says; the fake accepts both
    claims = fake_server.requests[0].jwt_claims
    assert claims is not None and claims["aud"] == GOOGLE_TOKEN_URI

    async def main() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        async with httpx.AsyncClient(http2=True, verify=ctx) as client:
            return await client.post(fake_server.url + FCM_PATH, content=fcm_body(fcm_token("unregistered")),
                                     headers={"authorization": f"Bearer {creds.token}"})

    response = run(main())
    assert response.http_version == "HTTP/2" and response.status_code == 404
    assert response.content == FCM_SCENARIOS["unregistered"].body


def test_http11_fcm_works_and_apns_is_refused(fake_server: FakePushServer, pki: TestPKI,
                                              apns_key: ApnsKey) -> None:
    bearer = fake_server.issue_access_token()
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca_file))) as client:
        response = client.post(fake_server.url + FCM_PATH, content=fcm_body(ok_fcm_token(1)),
                               headers={"authorization": f"Bearer {bearer}"})
        assert response.http_version == "HTTP/1.1" and response.status_code == 200
        with pytest.raises(httpx.TransportError):
            client.post(f"{fake_server.url}/3/device/{ok_apns_token(1)}", content=PAYLOAD,
                        headers=dict(apns_headers(apns_key)))


# ----------------------------------------------------------------- connection-level kinds


def _request_for(provider: str, name: str, server: FakePushServer, key: ApnsKey, i: int = 0,
                 bearer: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    if provider == "apns":
        return f"/3/device/{apns_token(name, i)}", apns_headers(key, apns_id=str(uuid.uuid4())), PAYLOAD
    return FCM_PATH, fcm_headers(bearer or server.issue_access_token()), fcm_body(fcm_token(name, i))


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_goaway_scenario_then_resend_is_ok(provider: str, fake_server: FakePushServer, pki: TestPKI,
                                           apns_key: ApnsKey) -> None:
    ok = _request_for(provider, "ok", fake_server, apns_key, 1)
    goaway = _request_for(provider, "goaway", fake_server, apns_key)

    async def main() -> tuple[Unprocessed, H2Response]:
        async with await connect(fake_server, pki) as client:
            assert (await client.request("POST", *ok)).status == 200  # stream 1
            with pytest.raises(Unprocessed) as info:
                await client.request("POST", *goaway)  # stream 3
        async with await connect(fake_server, pki) as client:
            return info.value, await client.request("POST", *goaway)

    exc, resent = run(main())
    assert (exc.stream_id, exc.last_stream_id) == (3, 1)
    assert exc.debug_data == (b'{"reason":"Shutdown"}' if provider == "apns" else b"")
    assert resent.status == 200
    assert sorted(fake_server.accepted.values()) == [1, 1]  # no duplicates
    assert [r.outcome for r in fake_server.requests] == ["answered", "goaway", "answered"]


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_rst_refused_then_ok(provider: str, fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    req = _request_for(provider, "rst_refused", fake_server, apns_key)

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            with pytest.raises(StreamReset) as info:
                await client.request("POST", *req)
            assert info.value.error_code == H2_REFUSED_STREAM
            return await client.request("POST", *req)  # same connection is still fine

    assert run(main()).status == 200
    assert list(fake_server.accepted.values()) == [1]


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_rst_cancel_counts_as_delivered(provider: str, fake_server: FakePushServer, pki: TestPKI,
                                        apns_key: ApnsKey) -> None:
    req = _request_for(provider, "rst_cancel", fake_server, apns_key)

    async def main() -> H2Response:
        async with await connect(fake_server, pki) as client:
            with pytest.raises(StreamReset) as info:
                await client.request("POST", *req)
            assert info.value.error_code == H2_INTERNAL_ERROR
            assert list(fake_server.accepted.values()) == [1]
            return await client.request("POST", *req)

    assert run(main()).status == 200
    assert list(fake_server.accepted.values()) == [2]  # blind resend = duplicate push


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_drop_then_resend_on_new_connection(provider: str, fake_server: FakePushServer, pki: TestPKI,
                                            apns_key: ApnsKey) -> None:
    req = _request_for(provider, "drop", fake_server, apns_key)

    async def main() -> tuple[RawH2Client, H2Response]:
        client = await connect(fake_server, pki)
        with pytest.raises(ConnectionLost) as info:
            await client.request("POST", *req)
        assert not isinstance(info.value, Unprocessed) and client.goaway is None  # no GOAWAY
        async with await connect(fake_server, pki) as again:
            return client, await again.request("POST", *req)

    _, resent = run(main())
    assert resent.status == 200 and list(fake_server.accepted.values()) == [1]
    assert fake_server.requests[0].outcome == "dropped"


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_no_response_and_slow(provider: str, fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    fake_server.slow_delay = 0.3
    silent = _request_for(provider, "no_response", fake_server, apns_key)
    slow = _request_for(provider, "slow", fake_server, apns_key)
    ok = _request_for(provider, "ok", fake_server, apns_key)

    async def main() -> tuple[float, float]:
        async with await connect(fake_server, pki) as client:
            with pytest.raises(asyncio.TimeoutError):
                await client.request("POST", *silent, timeout=0.2)
            t0 = time.perf_counter()
            slow_task = asyncio.ensure_future(client.request("POST", *slow))
            assert (await client.request("POST", *ok)).status == 200  # not stuck behind the slow one
            t_ok = time.perf_counter() - t0
            assert (await slow_task).status == 200
            return t_ok, time.perf_counter() - t0

    t_ok, t_slow = run(main())
    assert t_ok < 0.25 <= t_slow
    assert fake_server.requests[0].outcome == "client_reset"  # our CANCEL after the timeout
    assert len(fake_server.accepted) == 2


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_settings_one_lowers_then_restores(provider: str, fake_server: FakePushServer, pki: TestPKI,
                                           apns_key: ApnsKey) -> None:
    async def main() -> list[int]:
        async with await connect(fake_server, pki) as client:
            assert (await client.request("POST", *_request_for(provider, "settings_one", fake_server,
                                                                apns_key))).status == 200
            assert client.remote_max_streams == 1
            assert (await client.request("POST", *_request_for(provider, "ok", fake_server, apns_key))).status == 200
            assert client.remote_max_streams == 1000
            return client.max_streams_history

    assert run(main()) == [1000, 1, 1000]


# ----------------------------------------------------------------- server knobs


def test_goaway_after_n_sequential(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    fake_server.goaway_after = 5
    reqs = [_request_for("apns", "ok", fake_server, apns_key, i) for i in range(5)]

    async def main() -> Unprocessed:
        async with await connect(fake_server, pki) as client:
            for req in reqs[:4]:
                assert (await client.request("POST", *req)).status == 200  # streams 1,3,5,7
            with pytest.raises(Unprocessed) as info:
                await client.request("POST", *reqs[4])  # stream 9
            return info.value

    exc = run(main())
    assert (exc.stream_id, exc.last_stream_id) == (9, 5)
    done, _ = run(send_until_done(fake_server, pki, reqs[4:]))
    assert [r.status for r in done] == [200]
    assert len(fake_server.accepted) == 5 and set(fake_server.accepted.values()) == {1}


def test_goaway_after_n_burst_leaves_a_few_unprocessed(fake_server: FakePushServer, pki: TestPKI,
                                                       apns_key: ApnsKey) -> None:
    fake_server.goaway_after = 8
    reqs = [_request_for("apns", "ok", fake_server, apns_key, i) for i in range(12)]

    async def main() -> tuple[dict[int, int], dict[int, int]]:
        async with await connect(fake_server, pki) as client:
            futures = [await client.start("POST", *req) for req in reqs]
            answered, unprocessed = {}, {}
            for sid, future in futures:
                try:
                    answered[sid] = (await future).status
                except Unprocessed as exc:
                    unprocessed[sid] = exc.last_stream_id
            return answered, unprocessed

    answered, unprocessed = run(main())
    assert set(answered) | set(unprocessed) == set(range(1, 24, 2))
    assert set(answered.values()) == {200}
    assert set(unprocessed.values()) == {11}  # 8th stream (15) minus 2 * goaway_margin
    assert {1, 3, 5, 7, 9, 11} <= set(answered) and {15, 17, 19, 21, 23} <= set(unprocessed)
    assert all(sid > 11 for sid in unprocessed)
    assert sum(fake_server.accepted.values()) == len(answered)


def test_goaway_after_many_connections_no_loss_no_duplicates(fake_server: FakePushServer, pki: TestPKI,
                                                             apns_key: ApnsKey) -> None:
    fake_server.goaway_after = 10
    reqs = [_request_for("apns", "ok", fake_server, apns_key, i) for i in range(100)]
    done, resent = run(send_until_done(fake_server, pki, reqs))
    assert len(done) == 100 and {r.status for r in done} == {200}
    assert resent and all(isinstance(e, Unprocessed) for e in resent)
    assert len(fake_server.accepted) == 100 and set(fake_server.accepted.values()) == {1}
    assert fake_server.connections_opened >= 10


def test_max_concurrent_streams_knob(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    fake_server.max_concurrent_streams = 7

    async def main() -> list[int]:
        async with await connect(fake_server, pki) as client:
            ok = _request_for("apns", "ok", fake_server, apns_key)
            await client.request("POST", *ok)
            assert client.remote_max_streams == 7
            fake_server.max_concurrent_streams = 3  # live connections follow
            await client.request("POST", *ok)
            assert client.remote_max_streams == 3
            # the client honours the limit, so 20 concurrent requests all succeed
            results = await asyncio.gather(*(client.request("POST", *_request_for(
                "apns", "ok", fake_server, apns_key, i)) for i in range(20)))
            assert {r.status for r in results} == {200}
            return client.max_streams_history

    assert run(main()) == [7, 3]
    assert fake_server.refused_streams == 0
    fake_server.reset()
    assert fake_server.max_concurrent_streams == 1000


def test_server_refuses_streams_over_its_limit(fake_server: FakePushServer, pki: TestPKI,
                                               apns_key: ApnsKey) -> None:
    fake_server.max_concurrent_streams = 2

    async def main() -> list[Any]:
        async with await connect(fake_server, pki) as client:
            await client.request("POST", *_request_for("apns", "ok", fake_server, apns_key))
            # pretend we never saw the SETTINGS: push 5 streams at once
            client.h2.remote_settings[3] = 100  # SETTINGS_MAX_CONCURRENT_STREAMS
            client.h2.remote_settings.acknowledge()
            futures = [await client.start("POST", *_request_for("apns", "ok", fake_server, apns_key, i))
                       for i in range(5)]
            return await asyncio.gather(*(f for _, f in futures), return_exceptions=True)

    results = run(main())
    statuses = [r.status if isinstance(r, H2Response) else r.error_code for r in results]
    assert statuses.count(200) >= 2 and set(statuses) <= {200, H2_REFUSED_STREAM}
    assert fake_server.refused_streams == statuses.count(H2_REFUSED_STREAM)


def test_flow_control_both_ways(fake_server: FakePushServer, pki: TestPKI) -> None:
    bearer = fake_server.issue_access_token()
    big = fcm_body(ok_fcm_token(1), data={"blob": "x" * 300_000})  # > 4 x the default 64 KiB window

    async def main() -> tuple[H2Response, H2Response]:
        async with await connect(fake_server, pki, initial_window=16) as client:  # tiny receive window
            html = await client.request("POST", FCM_PATH, fcm_headers(bearer), fcm_body(fcm_token("html_404")))
            large = await client.request("POST", FCM_PATH, fcm_headers(bearer), big)
            return html, large

    html, large = run(main())
    assert html.status == 404 and html.body == FCM_SCENARIOS["html_404"].body
    assert large.status == 200 and fake_server.requests[-1].body == big


def test_throughput_many_streams(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    headers = apns_headers(apns_key)
    n_conn, per_conn = 4, 500

    async def one_connection(c: int) -> list[H2Response]:
        async with await connect(fake_server, pki) as client:
            return await asyncio.gather(*(client.request(
                "POST", f"/3/device/{ok_apns_token(c * per_conn + i)}", headers, PAYLOAD)
                for i in range(per_conn)))

    async def main() -> list[list[H2Response]]:
        return await asyncio.gather(*(one_connection(c) for c in range(n_conn)))

    start = time.perf_counter()
    results = run(main())
    elapsed = time.perf_counter() - start
    assert {r.status for rs in results for r in rs} == {200}
    assert sum(fake_server.accepted.values()) == n_conn * per_conn
    assert elapsed < 10, f"{n_conn * per_conn / elapsed:.0f} req/s"


def test_reset_restores_defaults(fake_server: FakePushServer, pki: TestPKI, apns_key: ApnsKey) -> None:
    fake_server.goaway_after, fake_server.slow_delay, fake_server.oauth_mode = 3, 9.0, "drop"
    fake_server.clock = lambda: 0.0

    async def main() -> None:
        async with await connect(fake_server, pki) as client:
            await client.request("POST", *_request_for("apns", "ok", fake_server, apns_key))
            assert fake_server.requests and fake_server.accepted and fake_server.connections_opened == 1
            fake_server.reset()  # blocks only until the server loop has done it
            await asyncio.wait_for(client.closed.wait(), 2)  # open connections are closed

    run(main())
    knobs: tuple[object, ...] = (fake_server.goaway_after, fake_server.slow_delay, fake_server.oauth_mode)
    assert knobs == (None, 2.0, "ok")
    assert fake_server.clock is time.time
    assert not fake_server.requests and not fake_server.accepted and fake_server.connections_opened == 0


def test_function_scoped_server_lifecycle(pki: TestPKI, apns_key: ApnsKey) -> None:
    server = FakePushServer(pki, apns_key=apns_key).start()
    try:
        assert run(apns_once(server, pki, apns_key, ok_apns_token(1))).status == 200
    finally:
        server.stop()
    with pytest.raises(OSError):
        run(apns_once(server, pki, apns_key, ok_apns_token(1)))
