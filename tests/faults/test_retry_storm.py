"""A storm of 503 / 429 answers (FCM and APNs): rows wait for max(Retry-After, backoff), quarantine is left
alone, and the retry runner reschedules with doubling backoff without a hot loop."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from fixtures.scenarios import apns_token, fcm_token
from jobs.retry import run_retries
from push.clock import FakeClock, SystemClock
from tests.faults.helpers import apns_n, assert_ledger, fault, fcm_n, log_rows, make_config, quarantine_rows, run_batch

BASE = 2.0  # retry_base_delay: 2, 4, 8, 16 s ...
RETRY_AFTER = {"unavailable": 5.0, "quota_exceeded": 30.0, "empty_503": None}


def backoff(attempts: int) -> float:
    return BASE * 2 ** (attempts - 1)


def fcm_requests(fake_server) -> Counter[str]:
    return Counter(r.token for r in fake_server.requests if r.provider == "fcm")


def apns_requests(fake_server) -> Counter[str]:
    return Counter(r.token for r in fake_server.requests if r.provider == "apns")


def test_storm_of_503_and_429_with_retry_after(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, retry_base_delay=BASE, retry_max_delay=3600,
                      retry_max_attempts=5, concurrency=50)
    t0 = SystemClock().now()
    clock = FakeClock(t0)
    kinds = {fcm_token(name, i): name for name in RETRY_AFTER for i in range(30)}
    apns_kinds = {apns_token(name, i): name for name in ("service_unavailable", "too_many_requests")
                  for i in range(10)}
    notifs = [fcm_n(tok) for tok in kinds] + [apns_n(tok) for tok in apns_kinds]
    rep = run_batch(notifs, cfg, "storm-1", clock=clock)
    fault("HTTP 503 / 429 answers", len(notifs))
    rows = assert_ledger(engine, "storm-1", len(notifs), fake_server.accepted)
    assert rep.retry_pending == 110 and rep.sent == 0

    def check_schedule(now, attempts):
        for r in log_rows(engine, "storm-1"):
            ra = RETRY_AFTER[kinds[r.token]] if r.platform == "fcm" else None  # APNs sends no Retry-After
            assert r.attempts == attempts
            if attempts < cfg.retry_max_attempts:
                assert r.status == "retry_pending"
                want = max(ra or 0.0, backoff(attempts))
                assert r.next_retry_at == now + timedelta(seconds=want), (r.token, attempts)
            else:
                assert r.status == "failed" and r.next_retry_at is None

    check_schedule(t0, 1)
    # APNs 503 / 429 are retried like FCM's (documented choice 3), with the seed's soft / refused.
    for r in rows.values():
        if r.platform == "apns":
            assert r.status == "retry_pending" and r.provider_status in (503, 429) and r.attempts == 1
            assert (r.failure_type, r.failure_reason) == ("soft", 20)
    assert not quarantine_rows(engine), "provider throttling must never move a device's quarantine counter"

    sent = sum(fcm_requests(fake_server).values())
    assert sent == 90 and sum(apns_requests(fake_server).values()) == 20
    for attempt in range(2, cfg.retry_max_attempts + 1):
        # Not due yet: passes find nothing and send nothing, however often they run (no hot loop).
        for _ in range(3):
            res = asyncio.run(run_retries(engine, cfg, clock))
            assert res.examined == 0
        assert sum(fcm_requests(fake_server).values()) == sent
        # Just before the earliest due time: still nothing.
        pending = [r for r in log_rows(engine, "storm-1") if r.status == "retry_pending"]
        earliest = min(r.next_retry_at for r in pending)
        clock.set(earliest - timedelta(milliseconds=1))
        assert asyncio.run(run_retries(engine, cfg, clock)).examined == 0
        # All due: one pass sends each exactly once more.
        clock.set(max(r.next_retry_at for r in pending))
        res = asyncio.run(run_retries(engine, cfg, clock))
        assert res.examined == 110, res
        sent += 90
        assert set(apns_requests(fake_server).values()) == {attempt}
        assert sum(fcm_requests(fake_server).values()) == sent
        check_schedule(clock.now(), attempt)
        fault("HTTP 503 / 429 answers", 110)
    # Every token was tried exactly retry_max_attempts times, then given up.
    assert set(fcm_requests(fake_server).values()) == {cfg.retry_max_attempts}
    assert set(apns_requests(fake_server).values()) == {cfg.retry_max_attempts}
    clock.advance(days=1)
    assert asyncio.run(run_retries(engine, cfg, clock)).examined == 0
    assert_ledger(engine, "storm-1", len(notifs), fake_server.accepted)
    assert not quarantine_rows(engine)


def test_retry_pass_sends_each_row_at_most_once(sqlite_engine, sqlite_url, fake_server, apns_key, service_account):
    """retry_base_delay=0 and no Retry-After: the row is due again at once, but only in the next pass."""
    cfg = make_config(fake_server, apns_key, service_account, sqlite_url, retry_base_delay=0, retry_max_attempts=5)
    clock = FakeClock(SystemClock().now())
    run_batch([fcm_n(fcm_token("empty_503", 1))], cfg, "hot-1", clock=clock)
    assert fcm_requests(fake_server)[fcm_token("empty_503", 1)] == 1
    asyncio.run(run_retries(sqlite_engine, cfg, clock))
    assert fcm_requests(fake_server)[fcm_token("empty_503", 1)] == 2, "one pass, one more attempt"
    asyncio.run(run_retries(sqlite_engine, cfg, clock))
    assert fcm_requests(fake_server)[fcm_token("empty_503", 1)] == 3
