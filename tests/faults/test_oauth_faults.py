"""The OAuth token endpoint down or refusing: FCM rows get the OAuth outcome, nothing is quarantined,
one clear log line names the credential problem, and no secret is logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fixtures.scenarios import ok_apns_token, ok_fcm_token
from tests.faults.helpers import apns_n, assert_ledger, fault, fcm_n, log_rows, make_config, quarantine_rows, run_batch

CASES = {
    # oauth_mode: (status of the FCM rows, error text start, what the log line must say)
    "drop": ("retry_pending", "OAuth connection lost", "OAuth connection lost"),
    "server_error": ("retry_pending", "OAuth 500 server_error", "OAuth 500 server_error: Backend Error"),
    "invalid_grant": ("failed", "OAuth 400 invalid_grant", "OAuth 400 invalid_grant: Invalid JWT Signature."),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_oauth_endpoint_down_or_refusing(mode, db, fake_server, apns_key, service_account, caplog):
    engine, url = db
    status, text, logged = CASES[mode]
    fake_server.oauth_mode = mode
    for name in ("push", "httpx", "google"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    cfg = make_config(fake_server, apns_key, service_account, url)
    notifs = [fcm_n(ok_fcm_token(i)) for i in range(30)] + [apns_n(ok_apns_token(i)) for i in range(10)]
    rep = run_batch(notifs, cfg, f"oauth-{mode}")
    fault(f"OAuth endpoint {mode}")
    rows = assert_ledger(engine, f"oauth-{mode}", len(notifs), fake_server.accepted)

    fcm_rows = [r for r in rows.values() if r.platform == "fcm"]
    assert all(r.status == status for r in fcm_rows), {r.status for r in fcm_rows}
    assert all(r.error_text.startswith(text) for r in fcm_rows), fcm_rows[0].error_text
    assert all(r.failure_type == "ignored" and r.failure_reason == 20 for r in fcm_rows)
    assert rep.sent == 10  # APNs is unaffected
    assert not [r for r in fake_server.requests if r.provider == "fcm"], "no FCM request without a token"
    assert fake_server.oauth_requests <= 3, "a failed token fetch is held, not retried per notification"
    assert not quarantine_rows(engine), "a credential problem must never quarantine device tokens"
    if status == "retry_pending":
        assert all(r.next_retry_at is not None for r in fcm_rows)

    lines = [r.getMessage() for r in caplog.records if r.name == "push.fcm" and r.levelno >= logging.ERROR]
    assert len(lines) == 1, lines  # one line per failure hold, not one per notification
    assert service_account.client_email in lines[0] and logged in lines[0], lines[0]
    assert "OAuth token refresh failed" in lines[0]
    # Nothing secret in any captured line or table: the key, the signed assertion.
    key_lines = [ln for ln in service_account.info["private_key"].splitlines() if ln and "-----" not in ln]
    assertions = [r.body.decode() for r in fake_server.requests if r.provider == "oauth" and r.body]
    everything = caplog.text + "\n".join(repr(vars(r)) for r in caplog.records)
    assert not [ln for ln in key_lines if ln in everything]
    for body in assertions:
        jwt_signature = body.rsplit(".", 1)[-1]
        assert jwt_signature not in everything
        assert all(jwt_signature not in (r.error_text or "") for r in log_rows(engine, f"oauth-{mode}"))


@pytest.mark.parametrize("kind", ["rst_refused", "goaway"])
def test_unprocessed_token_request_is_resent_at_once(kind, db, fake_server, apns_key, service_account):
    """A token request the server refused (REFUSED_STREAM) or bounced (GOAWAY before it) was not processed:
    it is resent at once and every FCM notification is sent, none parked in retry_pending."""
    engine, url = db
    fake_server.oauth_next = [kind]
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=200, chunk_size=500)
    notifs = [fcm_n(ok_fcm_token(i)) for i in range(2000)]
    rep = run_batch(notifs, cfg, f"oauth-{kind}")
    fault(f"OAuth token request {kind}")
    assert_ledger(engine, f"oauth-{kind}", len(notifs), fake_server.accepted)
    assert rep.sent == 2000 and rep.retry_pending == 0
    assert fake_server.oauth_requests == 2  # the unprocessed one and its resend
    assert len([r for r in fake_server.requests if r.provider == "fcm"]) == 2000


def test_a_real_token_failure_is_held_briefly_then_longer(fake_server, service_account):
    """A transient failure holds 1 s, doubling while it repeats; a success ends it; a credential error holds 30 s."""
    from datetime import datetime, timezone

    from push.clock import FakeClock
    from push.config import PushConfig
    from push.fcm import FcmClient

    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    cfg = PushConfig(fcm_base_url=fake_server.url, fcm_credentials_file=str(service_account.path),
                     ca_file=str(fake_server.ca_file), stream_timeout=2.0)

    async def scenario():
        client = FcmClient(cfg, clock=clock)
        try:
            async def send(i):
                return await client.send(fcm_n(ok_fcm_token(i)))

            fake_server.oauth_mode = "drop"  # connection lost: transient
            assert (await send(1)).rule == "oauth:connection" and fake_server.oauth_requests == 1
            clock.advance(0.9)
            assert not (await send(2)).ok and fake_server.oauth_requests == 1  # held
            clock.advance(0.2)
            assert not (await send(3)).ok and fake_server.oauth_requests == 2  # 1 s later: asked again
            clock.advance(1.1)
            assert not (await send(4)).ok and fake_server.oauth_requests == 2  # now held 2 s
            clock.advance(1.0)
            fake_server.oauth_mode = "ok"
            assert (await send(5)).ok and fake_server.oauth_requests == 3
            client.oauth.rejected(client.oauth._token)  # force the next fetch
            fake_server.oauth_mode = "invalid_grant"  # a credential error
            assert (await send(6)).rule == "oauth:invalid_grant" and fake_server.oauth_requests == 4
            clock.advance(29)
            assert not (await send(7)).ok and fake_server.oauth_requests == 4
            clock.advance(1.1)
            assert not (await send(8)).ok and fake_server.oauth_requests == 5
        finally:
            await client.aclose()
    asyncio.run(scenario())
