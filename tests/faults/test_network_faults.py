"""Network faults during send_batch, through the real clients and the real HTTP/2 fake server.

Every test ends with ``assert_ledger``: one ``delivery_log`` row per notification,
none ``pending``, nothing accepted twice by the server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push import asend_batch
from push.apns import ApnsClient
from push.tls import make_ssl_context
from push.transport import H2Transport
from tests.faults.helpers import (
    FreezableProxy,
    apns_id,
    apns_n,
    assert_ledger,
    close_all,
    fault,
    fcm_n,
    log_rows,
    make_config,
    quarantine_rows,
    real_clients,
    run_batch,
)


# --------------------------------------------------------------------------- 1. GOAWAY


def test_goaway_mid_batch_resends_only_unprocessed_streams(db, fake_server, apns_key, service_account):
    engine, url = db
    fake_server.goaway_after = 120  # every connection: GOAWAY after its 120th request
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=100, chunk_size=100)
    notifs = [apns_n(ok_apns_token(i)) for i in range(400)] + [fcm_n(ok_fcm_token(i)) for i in range(200)]
    rep = run_batch(notifs, cfg, "goaway-1")

    unprocessed = [r for r in fake_server.requests if r.outcome == "unprocessed"]
    fault("GOAWAY with last_stream_id below open streams", len({r.connection_id for r in unprocessed}))
    fault("stream left unprocessed by a GOAWAY (must be resent)", len(unprocessed))
    assert unprocessed, "the knob should have left streams above last_stream_id unprocessed"
    assert fake_server.connections_opened >= 4  # at least two GOAWAYs per provider
    rows = assert_ledger(engine, "goaway-1", len(notifs), fake_server.accepted)

    # Streams above last_stream_id were resent on a new connection and accepted exactly once.
    seq_of = {apns_id("goaway-1", s): s for s in range(400)}
    for r in unprocessed:
        if r.provider == "apns":
            seq = seq_of[r.headers["apns-id"]]
            assert rows[seq].status == "sent", (seq, rows[seq].error_text)
            again = [x for x in fake_server.requests if x.headers.get("apns-id") == r.headers["apns-id"]]
            assert [x.outcome for x in again].count("answered") == 1
            assert again[-1].connection_id != r.connection_id  # resent on another connection
        else:
            assert fake_server.accepted[next(k for k in fake_server.accepted if k.startswith(r.token + ":"))] == 1
    # Anything not sent was a stream the server may have processed: recorded once, to retry later.
    for r in rows.values():
        if r.status != "sent":
            assert r.status == "retry_pending" and "may have been delivered" in r.error_text, r
    assert rep.sent + rep.retry_pending == len(notifs)


# --------------------------------------------------------------------------- 2. RST_STREAM, SETTINGS, flow control


def test_rst_stream_refused_is_resent_other_codes_recorded_as_maybe_delivered(db, fake_server, apns_key,
                                                                              service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    notifs = []
    for i in range(60):
        notifs.append(apns_n(ok_apns_token(i)))
        notifs.append(fcm_n(ok_fcm_token(i)))
        if i % 6 == 0:
            notifs += [apns_n(apns_token("rst_refused", i)), fcm_n(fcm_token("rst_refused", i)),
                       apns_n(apns_token("rst_cancel", i)), fcm_n(fcm_token("rst_cancel", i)),
                       apns_n(apns_token("settings_one", i)), fcm_n(fcm_token("settings_one", i))]
    rep = run_batch(notifs, cfg, "rst-1")
    fault("RST_STREAM REFUSED_STREAM", 20)
    fault("RST_STREAM INTERNAL_ERROR", 20)
    fault("SETTINGS_MAX_CONCURRENT_STREAMS=1 mid-connection", 20)
    rows = assert_ledger(engine, "rst-1", len(notifs), fake_server.accepted)

    by_token = {r.token: r for r in rows.values()}
    sent_to = Counter(r.token for r in fake_server.requests if r.provider in ("apns", "fcm"))
    for i in range(0, 60, 6):
        for tok in (apns_token("rst_refused", i), fcm_token("rst_refused", i)):
            assert by_token[tok].status == "sent"  # refused = provably unprocessed: resent, then accepted
            assert sent_to[tok] == 2
        for tok in (apns_token("rst_cancel", i), fcm_token("rst_cancel", i)):
            # Reset after processing: may have been delivered. Recorded once, never resent at once.
            r = by_token[tok]
            assert r.status == "retry_pending" and "may have been delivered" in r.error_text, r.error_text
            assert sent_to[tok] == 1
        for tok in (apns_token("settings_one", i), fcm_token("settings_one", i)):
            assert by_token[tok].status == "sent"
    assert rep.sent == len(notifs) - 20
    assert not quarantine_rows(engine), "a lost stream must not touch a token's quarantine counter"


def test_server_lowers_max_concurrent_streams_to_one_mid_batch(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=100)
    lowered_at = []

    def hook(calls, n):
        if calls == 60:
            fake_server.max_concurrent_streams = 1  # SETTINGS on every live connection
            lowered_at.append(len(fake_server.requests))

    async def main():
        clients = real_clients(cfg, hook)
        try:
            return await asend_batch([apns_n(ok_apns_token(i)) for i in range(250)]
                                     + [fcm_n(ok_fcm_token(i)) for i in range(250)],
                                     cfg, "lower-1", clients=clients)
        finally:
            await close_all(clients)

    rep = asyncio.run(main())
    fault("SETTINGS_MAX_CONCURRENT_STREAMS lowered to 1 by the knob", 2)
    assert len(lowered_at) == 2
    assert rep.sent == 500
    assert_ledger(engine, "lower-1", 500, fake_server.accepted)
    later = fake_server.requests[max(lowered_at):]
    assert later, "the batch went on after the limit dropped"


def test_flow_control_windows_exhausted_by_large_payloads(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=300, chunk_size=300)
    voip = [apns_n(ok_apns_token(i), push_type="voip", title=None, body=None, data={"blob": f"{i:05d}" + "v" * 4995})
            for i in range(200)]
    big_fcm = [fcm_n(ok_fcm_token(i), data={"blob": f"{i:05d}" + "f" * 3900}) for i in range(200)]
    assert all(4096 < n.payload_size()[0] <= 5120 for n in voip)  # over the normal limit, within VoIP's
    rep = run_batch(voip + big_fcm, cfg, "flow-1")
    # 200 x 5 KB and 200 x 4 KB in flight at once: far beyond the 64 KB connection windows.
    fault("flow-control window exhausted", 2)
    assert rep.sent == 400, rep.as_dict()
    assert_ledger(engine, "flow-1", 400, fake_server.accepted)
    bodies = {r.headers.get("apns-id"): r.body for r in fake_server.requests if r.provider == "apns"}
    for seq, n in enumerate(voip):
        assert bodies[apns_id("flow-1", seq)] == n.apns_body()  # every byte arrived, in order
    fcm_sizes = [len(r.body) for r in fake_server.requests if r.provider == "fcm"]
    assert len(fcm_sizes) == 200 and min(fcm_sizes) > 3900


# --------------------------------------------------------------------------- 3. a response that never comes


def test_response_that_never_comes_times_out_and_the_client_keeps_working(db, fake_server, apns_key,
                                                                          service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, stream_timeout=0.5)
    first = ([apns_n(apns_token("no_response", i)) for i in range(5)]
             + [fcm_n(fcm_token("no_response", i)) for i in range(5)]
             + [apns_n(ok_apns_token(i)) for i in range(40)] + [fcm_n(ok_fcm_token(i)) for i in range(40)])
    second = [apns_n(ok_apns_token(100 + i)) for i in range(40)] + [fcm_n(ok_fcm_token(100 + i)) for i in range(40)]

    async def main():
        clients = real_clients(cfg)  # one client per provider for both batches
        try:
            t0 = time.monotonic()
            r1 = await asend_batch(first, cfg, "noresp-1", clients=clients)
            elapsed = time.monotonic() - t0
            r2 = await asend_batch(second, cfg, "noresp-2", clients=clients)
            stats = {p: c.inner._http._transport.stats for p, c in clients.items()}
            return r1, r2, elapsed, stats
        finally:
            await close_all(clients)

    r1, r2, elapsed, stats = asyncio.run(main())
    fault("response never sent", 10)
    assert elapsed < 4, "the per-stream deadline bounds the wait"
    rows = assert_ledger(engine, "noresp-1", len(first), fake_server.accepted)
    for seq in range(10):
        r = rows[seq]
        assert r.status == "retry_pending" and r.next_retry_at is not None, r
        assert "timeout" in r.error_text and "may have been delivered" in r.error_text, r.error_text
    assert r1.sent == 80 and r1.retry_pending == 10
    # Same clients, later sends: all go through (the connection was PINGed and kept, or replaced).
    assert r2.sent == 80, r2.as_dict()
    assert_ledger(engine, "noresp-2", len(second), fake_server.accepted)
    assert all(s.timeouts >= 5 for s in stats.values())
    assert not quarantine_rows(engine)


# --------------------------------------------------------------------------- 4. idle and silently dead connections


@pytest.mark.parametrize("pause", [0.2, 0.0], ids=["idle", "immediate"])
def test_connection_closed_by_server_between_sends(db, fake_server, apns_key, service_account, pause):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    first = [apns_n(ok_apns_token(i)) for i in range(20)] + [fcm_n(ok_fcm_token(i)) for i in range(20)]
    second = [apns_n(ok_apns_token(100 + i)) for i in range(20)] + [fcm_n(ok_fcm_token(100 + i)) for i in range(20)]
    accepted: Counter[str] = Counter()

    async def main():
        clients = real_clients(cfg)
        try:
            r1 = await asend_batch(first, cfg, "idle-1", clients=clients)
            accepted.update(fake_server.accepted)
            fake_server.reset()  # aborts every server-side session (TCP reset), clears the counters
            if pause:
                await asyncio.sleep(pause)
            r2 = await asend_batch(second, cfg, "idle-2", clients=clients)
            accepted.update(fake_server.accepted)
            return r1, r2
        finally:
            await close_all(clients)

    r1, r2 = asyncio.run(main())
    fault("connection closed by the server while idle", 2)
    assert r1.sent == 40
    assert_ledger(engine, "idle-1", 40, accepted)
    rows = assert_ledger(engine, "idle-2", 40, accepted)
    assert fake_server.connections_opened >= 2, "the second batch reconnected"
    if pause:
        assert r2.sent == 40, [r.error_text for r in rows.values() if r.status != "sent"]
    else:
        # Racing the close: a request written to the dying socket may have been delivered.
        for r in rows.values():
            assert r.status == "sent" or "may have been delivered" in r.error_text or "not sent" in r.error_text


def test_silently_dead_connection_is_detected_and_replaced(db, fake_server, apns_key, service_account):
    """A black-holed connection (no FIN, no RST, no bytes): sends on it time out, then the client reconnects."""
    engine, url = db

    async def main():
        proxy = await FreezableProxy(fake_server.port).start()
        cfg = make_config(fake_server, apns_key, service_account, url, apns_base_url=proxy.url,
                          fcm_base_url=proxy.url, stream_timeout=1.0)
        clients = real_clients(cfg)
        try:
            r1 = await asend_batch([apns_n(ok_apns_token(i)) for i in range(10)]
                                   + [fcm_n(ok_fcm_token(i)) for i in range(10)], cfg, "dead-1", clients=clients)
            proxy.freeze()
            t0 = time.monotonic()
            r2 = await asend_batch([apns_n(ok_apns_token(100 + i)) for i in range(10)]
                                   + [fcm_n(ok_fcm_token(100 + i)) for i in range(10)], cfg, "dead-2", clients=clients)
            t2 = time.monotonic() - t0
            t0 = time.monotonic()
            r3 = await asend_batch([apns_n(ok_apns_token(200 + i)) for i in range(10)]
                                   + [fcm_n(ok_fcm_token(200 + i)) for i in range(10)], cfg, "dead-3", clients=clients)
            t3 = time.monotonic() - t0
            return r1, r2, r3, t2, t3
        finally:
            await close_all(clients)
            await proxy.aclose()

    r1, r2, r3, t2, t3 = asyncio.run(main())
    fault("silently dead connection", 2)
    assert r1.sent == 20
    # In flight on the dead connection: each times out, recorded once as maybe delivered.
    rows2 = assert_ledger(engine, "dead-2", 20, fake_server.accepted)
    assert all(r.status in ("sent", "retry_pending") for r in rows2.values())
    assert t2 < 4
    # The next sends go out on a new connection.
    assert r3.sent == 20, [r.error_text for r in log_rows(engine, "dead-3") if r.status != "sent"]
    assert t3 < 4
    assert_ledger(engine, "dead-3", 20, fake_server.accepted)


def test_idle_silently_dead_connection_is_pinged_before_reuse(fake_server, apns_key, service_account):
    """After ping_after_idle the transport PINGs before reuse: no send is lost to the dead connection."""

    async def main():
        proxy = await FreezableProxy(fake_server.port).start()
        cfg = make_config(fake_server, apns_key, service_account, apns_base_url=proxy.url, stream_timeout=2.0)
        transport = H2Transport(ssl_context=make_ssl_context(cfg.ca_file), ping_after_idle=0.2, ping_timeout=0.5)
        client = ApnsClient(cfg, transport=transport)
        try:
            a = await client.send(apns_n(ok_apns_token(1)))
            proxy.freeze()
            await asyncio.sleep(0.4)  # idle past ping_after_idle
            b = await client.send(apns_n(ok_apns_token(2)))
            return a, b, transport.stats
        finally:
            await client.aclose()
            await proxy.aclose()

    a, b, stats = asyncio.run(main())
    fault("silently dead idle connection")
    assert a.ok and b.ok, b
    assert stats.pings_failed == 1 and stats.timeouts == 0 and stats.connections_opened == 2
    assert max(fake_server.accepted.values()) == 1
