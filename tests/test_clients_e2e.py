"""APNs and FCM clients against the real fake servers: TLS, HTTP/2, every scenario."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from fixtures.keys import make_apns_key, write_corrupt_p8, write_incomplete_service_account
from fixtures.scenarios import APNS_SCENARIOS, FCM_SCENARIOS, apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push.apns import ApnsClient, ApnsJwt
from push.clock import FakeClock, SystemClock
from push.config import PushConfig
from push.errors import ConfigError
from push.fcm import FcmClient
from push.notification import Notification
from push.outcomes import FailureType

APP = "com.example.app"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def apns_cfg(fake_server, apns_key):
    return PushConfig(apns_base_url=fake_server.url, apns_key_file=str(apns_key.path), apns_key_id=apns_key.key_id,
                      apns_team_id=apns_key.team_id, ca_file=str(fake_server.ca_file), stream_timeout=1.0)


@pytest.fixture
def fcm_cfg(fake_server, service_account):
    return PushConfig(fcm_base_url=fake_server.url, fcm_credentials_file=str(service_account.path),
                      ca_file=str(fake_server.ca_file), stream_timeout=1.0)


async def send_all(client, notifs, **kw):
    try:
        return await asyncio.gather(*(client.send(n, **kw) for n in notifs))
    finally:
        await client.aclose()


def apns_n(token, **kw):
    return Notification(token=token, platform="apns", app=APP, title="Hello", body="World", **kw)


def fcm_n(token, **kw):
    return Notification(token=token, platform="fcm", app="android-app", title="Hello", body="World", **kw)


def expected_apns_rule(name):
    sc = APNS_SCENARIOS[name]
    special = {"ok": "apns:200", "unknown_reason": "apns:400:*", "html_500": "apns:5xx:*",
               "truncated_json": "apns:5xx:*", "unregistered_old": "apns:410:Unregistered",
               "service_unavailable_retry_after": "apns:503:ServiceUnavailable", "html_502": "apns:5xx:*",
               "html_403": "apns:non_json",
               **{f"unknown_reason_{s}": f"apns:{s}:*" for s in (403, 404, 405, 410, 413, 429)}}
    if name in special:
        return special[name]
    return f"apns:{sc.status}:{json.loads(sc.body)['reason']}"


FCM_EXPECTED = {
    "ok": "fcm:200", "unregistered": "fcm:UNREGISTERED", "unregistered_apns": "fcm:apns:Unregistered",
    "invalid_token": "fcm:INVALID_ARGUMENT:token", "invalid_token_message_only": "fcm:INVALID_ARGUMENT:token",
    "invalid_argument_payload": "fcm:INVALID_ARGUMENT", "apns_disabled": "fcm:apns:Unregistered",
    "apns_bad_device_token": "fcm:apns:BadDeviceToken", "apns_expired_token": "fcm:apns:ExpiredToken",
    "sender_id_mismatch": "fcm:SENDER_ID_MISMATCH", "quota_exceeded": "fcm:QUOTA_EXCEEDED",
    "unavailable": "fcm:UNAVAILABLE", "unavailable_http_date": "fcm:UNAVAILABLE", "internal": "fcm:INTERNAL", "third_party_auth_error": "fcm:THIRD_PARTY_AUTH_ERROR",
    "apns_auth_error": "fcm:APNS_AUTH_ERROR", "unspecified_error": "fcm:UNSPECIFIED_ERROR",
    "unknown_code": "fcm:error_code:*", "unauthenticated_no_fcm_error": "fcm:401:no_fcm_error",
    "permission_denied_no_fcm_error": "fcm:403:no_fcm_error", "not_found_no_fcm_error": "fcm:404:no_fcm_error",
    "html_404": "fcm:non_json", "html_500": "fcm:5xx:no_fcm_error", "empty_503": "fcm:5xx:no_fcm_error",
    "truncated_json": "fcm:5xx:no_fcm_error", "quota_empty_429": "fcm:429:no_fcm_error",
    "quota_html_429": "fcm:429:no_fcm_error", "internal_unknown_code": "fcm:status:INTERNAL",
    "field_violations_not_a_list": "fcm:INVALID_ARGUMENT",
}
CONNECTION_EXPECTED = {"goaway": "ok", "rst_refused": "ok", "settings_one": "ok", "slow": "timeout",
                       "rst_cancel": "connection_lost", "drop": "connection_lost", "no_response": "timeout"}

APNS_RESPONSES = [n for n, s in APNS_SCENARIOS.items() if s.kind == "response"]
FCM_RESPONSES = [n for n, s in FCM_SCENARIOS.items() if s.kind == "response"]


def test_every_fcm_response_scenario_has_an_expectation():
    assert set(FCM_RESPONSES) == set(FCM_EXPECTED)


@pytest.mark.parametrize("name", APNS_RESPONSES)
def test_apns_scenario(name, fake_server, apns_cfg, apns_key):
    token = apns_token(name, 1) if name != "ok" else ok_apns_token(1)
    [out] = run(send_all(ApnsClient(apns_cfg), [apns_n(token)]))
    assert out.rule == expected_apns_rule(name)
    reqs = [r for r in fake_server.requests if r.provider == "apns"]
    assert reqs and all(r.http_version == "2" for r in reqs)
    r = reqs[-1]
    assert r.path == f"/3/device/{token}"
    assert r.headers["apns-topic"] == APP and r.headers["apns-push-type"] == "alert"
    assert r.headers["apns-priority"] == "10"
    assert r.jwt_header["kid"] == apns_key.key_id and r.jwt_claims["iss"] == apns_key.team_id
    assert json.loads(r.body)["aps"]["alert"] == {"title": "Hello", "body": "World"}
    if name == "expired_provider_token":
        assert len(reqs) == 2, "refreshed the JWT and resent exactly once"
    elif name != "ok":
        assert len(reqs) == 1
    if name in ("unregistered", "expired_token"):
        assert out.provider_timestamp is not None and out.failure_type is FailureType.HARD


@pytest.mark.parametrize("name", FCM_RESPONSES)
def test_fcm_scenario(name, fake_server, fcm_cfg, service_account):
    token = fcm_token(name, 1) if name != "ok" else ok_fcm_token(1)
    [out] = run(send_all(FcmClient(fcm_cfg), [fcm_n(token, data={"k": "v"})]))
    assert out.rule == FCM_EXPECTED[name]
    reqs = [r for r in fake_server.requests if r.provider == "fcm"]
    r = reqs[-1]
    assert r.path == f"/v1/projects/{service_account.project_id}/messages:send"
    assert r.json["message"]["token"] == token and r.json["message"]["data"] == {"k": "v"}
    assert r.bearer and r.http_version == "2"
    if name == "unauthenticated_no_fcm_error":
        assert len(reqs) == 2 and fake_server.oauth_requests == 2
    if name == "ok":
        assert out.provider_id.startswith(f"projects/{service_account.project_id}/messages/")
    if name == "quota_exceeded":
        assert out.retry_after == 30
    if name == "unavailable_http_date":  # read against the clock, capped at 7 days
        assert out.retry_after == 7 * 86400


@pytest.mark.parametrize("kind", sorted(CONNECTION_EXPECTED))
@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_connection_level_scenarios(kind, provider, fake_server, apns_cfg, fcm_cfg):
    fake_server.slow_delay = 2.0  # beyond the 1 s stream deadline
    if provider == "apns":
        client, n = ApnsClient(apns_cfg), apns_n(apns_token(kind, 3))
    else:
        client, n = FcmClient(fcm_cfg), fcm_n(fcm_token(kind, 3))
    started = time.monotonic()
    [out] = run(send_all(client, [n]))
    assert time.monotonic() - started < 5
    want = CONNECTION_EXPECTED[kind]
    if want == "ok":
        assert out.ok, out
        assert max(fake_server.accepted.values()) == 1
    else:
        assert out.rule == f"{provider}:{want}"
        assert out.retry and out.failure_type is not None


def test_jwt_is_shared_and_refreshed_by_age(fake_server, apns_cfg):
    clock = FakeClock(datetime.now(timezone.utc))
    fake_server.clock = lambda: clock.now().timestamp()
    client = ApnsClient(apns_cfg, clock=clock)
    run(send_all(client, [apns_n(ok_apns_token(i)) for i in range(50)]))
    jwts = {r.headers["authorization"] for r in fake_server.requests}
    assert len(jwts) == 1
    clock.advance(minutes=19)
    client2 = ApnsClient(apns_cfg, clock=clock)  # a second client shares the same provider token
    run(send_all(client2, [apns_n(ok_apns_token(100))]))
    assert len({r.headers["authorization"] for r in fake_server.requests}) == 1
    clock.advance(minutes=35)
    client3 = ApnsClient(apns_cfg, clock=clock)
    outs = run(send_all(client3, [apns_n(ok_apns_token(200 + i)) for i in range(5)]))
    assert all(o.ok for o in outs)
    assert len({r.headers["authorization"] for r in fake_server.requests}) == 2


def test_expired_provider_token_by_clock_skew_refreshes_once(fake_server, apns_cfg):
    clock = FakeClock(datetime.now(timezone.utc) - timedelta(hours=2))  # our clock is 2 h behind APNs
    [out] = run(send_all(ApnsClient(apns_cfg, clock=clock), [apns_n(ok_apns_token(1))]))
    assert out.rule == "apns:403:ExpiredProviderToken"
    assert len(fake_server.requests) == 2


def test_oauth_token_fetched_once_and_refreshed_after_expiry(fake_server, fcm_cfg):
    clock = FakeClock(datetime.now(timezone.utc))
    client = FcmClient(fcm_cfg, clock=clock)

    async def scenario():
        try:
            outs = await asyncio.gather(*(client.send(fcm_n(ok_fcm_token(i))) for i in range(100)))
            assert all(o.ok for o in outs)
            assert fake_server.oauth_requests == 1
            clock.advance(minutes=56)  # inside the 5-minute refresh margin of a 1-hour token
            out = await client.send(fcm_n(ok_fcm_token(500)))
            assert out.ok and fake_server.oauth_requests == 2
        finally:
            await client.aclose()
    run(scenario())


@pytest.mark.parametrize("mode,rule", [("invalid_grant", "oauth:invalid_grant"),
                                       ("disabled_client", "oauth:disabled_client"),
                                       ("unauthorized_client", "oauth:unauthorized_client"),
                                       ("access_denied", "oauth:access_denied"),
                                       ("drop", "oauth:connection")])
def test_oauth_failures_become_outcomes_without_hammering(mode, rule, fake_server, fcm_cfg, caplog):
    fake_server.oauth_mode = mode
    outs = run(send_all(FcmClient(fcm_cfg), [fcm_n(ok_fcm_token(i)) for i in range(20)]))
    assert {o.rule for o in outs} == {rule}
    assert all(o.failure_type is FailureType.IGNORED and o.scope.value == "provider" for o in outs)
    assert not [r for r in fake_server.requests if r.provider == "fcm"]
    assert fake_server.oauth_requests <= 3  # google-auth's own retries at most, then the failure is held
    assert any("OAuth token refresh failed" in m for m in caplog.messages)


def test_private_ca_works_with_requests_env_vars_pointing_elsewhere(fake_server, fcm_cfg, apns_cfg, monkeypatch, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, str(bogus))
    [f] = run(send_all(FcmClient(fcm_cfg), [fcm_n(ok_fcm_token(1))]))
    [a] = run(send_all(ApnsClient(apns_cfg), [apns_n(ok_apns_token(1))]))
    assert f.ok and a.ok and fake_server.oauth_requests == 1


def test_untrusted_server_is_refused(fake_server, apns_key):
    cfg = PushConfig(apns_base_url=fake_server.url, apns_key_file=str(apns_key.path), apns_key_id=apns_key.key_id,
                     apns_team_id=apns_key.team_id, stream_timeout=1.0)  # no PUSH_CA_FILE: system store only
    [out] = run(send_all(ApnsClient(cfg), [apns_n(ok_apns_token(1))]))
    assert out.rule == "apns:connection_lost" and not fake_server.requests


def test_certificate_auth(fake_server, pki, tmp_path):
    cert, key = pki.issue_client_cert(tmp_path)
    cfg = PushConfig(apns_base_url=fake_server.url, apns_cert_file=str(cert), apns_cert_key_file=str(key),
                     ca_file=str(fake_server.ca_file))
    [out] = run(send_all(ApnsClient(cfg), [apns_n(ok_apns_token(1))]))
    assert out.ok
    r = fake_server.requests[-1]
    assert r.client_cert and "authorization" not in r.headers


def test_payload_checks_happen_before_sending(fake_server, apns_cfg, fcm_cfg):
    big = {"blob": "x" * 5000}
    [a] = run(send_all(ApnsClient(apns_cfg), [apns_n(ok_apns_token(1), data=big)]))
    [f] = run(send_all(FcmClient(fcm_cfg), [fcm_n(ok_fcm_token(1), data=big)]))
    assert a.rule == "apns:payload_too_large" and f.rule == "fcm:payload_too_large"
    assert "limit 4096" in a.raw_error_text and "limit #xxx#" in a.error_text
    voip = Notification(token=ok_apns_token(2), platform="apns", app=APP, push_type="voip", data={"b": "x" * 4500})
    [v] = run(send_all(ApnsClient(apns_cfg), [voip]))
    assert v.ok and fake_server.requests[-1].headers["apns-topic"] == APP + ".voip"


def test_5000_mixed_with_goaway_mid_batch(fake_server, apns_cfg):
    fake_server.goaway_after = 1500
    names = ["unregistered", "bad_device_token", "too_many_requests", "internal_server_error", "rst_refused"]
    notifs = []
    for i in range(5000):
        tok = apns_token(names[(i // 10) % 5], i) if i % 10 == 0 else ok_apns_token(i)
        notifs.append(apns_n(tok))
    client = ApnsClient(apns_cfg.with_(stream_timeout=10.0))
    outs = run(send_all(client, notifs))
    assert len(outs) == 5000
    # Streams at or below GOAWAY's last_stream_id that the server closed without answering may have been
    # processed: they are reported as connection_lost (never silently resent); every other notification gets
    # its scenario's outcome, and rst_refused ones are resent transparently and accepted.
    want = {"unregistered": "apns:410:Unregistered", "bad_device_token": "apns:400:BadDeviceToken",
            "too_many_requests": "apns:429:TooManyRequests", "internal_server_error": "apns:500:InternalServerError",
            "rst_refused": "apns:200"}
    lost = 0
    for i, (n, o) in enumerate(zip(notifs, outs)):
        expected = want[names[(i // 10) % 5]] if i % 10 == 0 else "apns:200"
        assert o.rule in (expected, "apns:connection_lost"), (i, o.rule)
        lost += o.rule == "apns:connection_lost"
    assert lost < 500
    assert max(fake_server.accepted.values()) == 1, "a notification was accepted twice"
    assert fake_server.connections_opened >= 2


def test_bad_credentials_are_clear_errors(tmp_path, fake_server):
    bad = write_corrupt_p8(tmp_path)
    with pytest.raises(ConfigError, match="PUSH_APNS_KEY_FILE"):
        ApnsJwt(bad, "ABCDEFGHIJ", "ABCDEFGHIJ", clock=SystemClock())
    (tmp_path / "k").mkdir()
    key = make_apns_key(tmp_path / "k")
    with pytest.raises(ConfigError, match="PUSH_APNS_KEY_ID"):
        ApnsJwt(key.path, "short", "ABCDEFGHIJ", clock=SystemClock())
    incomplete = write_incomplete_service_account(tmp_path)
    with pytest.raises(ConfigError, match="PUSH_FCM_CREDENTIALS_FILE"):
        FcmClient(PushConfig(fcm_credentials_file=str(incomplete)))
    with pytest.raises(ConfigError, match="PUSH_APNS_KEY_FILE"):
        ApnsClient(PushConfig())
