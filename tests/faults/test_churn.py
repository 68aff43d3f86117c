"""Provider churn: connections that end (gracefully, by GOAWAY) every few requests.

Requests above a GOAWAY's ``last_stream_id`` provably were not processed: they are resent at once and
do not count as attempts, however often one request is bounced (a budget per delivery, not per
request), so churn costs neither an attempt nor a retry delay.
"""

from __future__ import annotations

from collections import Counter

from fixtures.scenarios import ok_apns_token, ok_fcm_token
from tests.faults.helpers import apns_n, assert_ledger, fault, fcm_n, log_rows, make_config, run_batch


def test_heavy_goaway_churn_costs_no_attempt_and_no_retry(db, fake_server, apns_key, service_account):
    engine, url = db
    fake_server.goaway_after = 20  # every connection: GOAWAY after its 20th request ...
    fake_server.goaway_margin = 2  # ... leaving the last 2 and any later ones unprocessed
    notifs = [apns_n(ok_apns_token(i)) for i in range(300)] + [fcm_n(ok_fcm_token(i)) for i in range(100)]
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=50, max_connections=2)
    rep = run_batch(notifs, cfg, "churn-1")
    fault("GOAWAY every 3 requests", fake_server.connections_opened)
    rows = assert_ledger(engine, "churn-1", len(notifs), fake_server.accepted)
    assert Counter(r.status for r in rows.values()) == {"sent": len(notifs)}, Counter(
        (r.status, r.error_text) for r in rows.values())
    assert {r.attempts for r in rows.values()} == {1}
    assert rep.sent == len(notifs) and rep.retry_pending == 0
    assert len(log_rows(engine, "churn-1")) == len(notifs)
