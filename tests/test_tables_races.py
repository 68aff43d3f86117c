"""Two writers on the same rows at once, interleaved on purpose (the second one provably waits on
the first one's lock before the first commits), on both databases.

Postgres: a key without a quarantine row cannot be locked, so two first errors used to both decide
from "no row" and the last writer won. SQLite serializes writers (BEGIN IMMEDIATE), so there the
same interleaving simply runs one after the other; the tests hold both to one answer.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import Engine

from push.classify import classify
from push.quarantine import QuarantinePolicy
from tables import delivery as dq
from tables import store
from tables.models import DLOG, QUAR

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
KEY = ("apns", "com.example.app", "ab" * 32)
SOFT = classify("apns", status=400, body=b'{"reason":"DeviceTokenNotForTopic"}')
HARD = classify("apns", status=410, body=b'{"reason":"Unregistered"}')




def _waiting_on_a_lock(engine: Engine) -> bool:
    if engine.dialect.name != "postgresql":
        return True  # SQLite: the second writer waits in BEGIN IMMEDIATE; nothing to look at
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def interleave(engine: Engine, other: Engine, first, second) -> None:
    """``first(conn)`` runs and holds its transaction open until ``second(conn)``, on another
    connection, is blocked behind it; then the first commits and the second finishes."""
    errors: list[BaseException] = []
    conn = engine.connect()
    tx = conn.begin()
    first(conn)

    def run_second() -> None:
        try:
            with other.begin() as c2:
                second(c2)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run_second)
    thread.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_a_lock(engine):  # another connection's state: nothing to inject a clock into
        assert time.monotonic() < deadline, "the second writer never waited on the first"
        time.sleep(0.01)
    if engine.dialect.name == "sqlite":
        time.sleep(0.1)  # let it reach BEGIN IMMEDIATE
    tx.commit()
    conn.close()
    thread.join(20)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def quarantine_row(engine: Engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(QUAR).where(QUAR.c.token == KEY[2])).one()


def apply(outcome):
    return lambda conn: store.apply_quarantine(conn, {KEY: outcome}, now=NOW, policy=QuarantinePolicy())


def test_two_first_soft_errors_on_a_new_token_both_count(engine, other_engine):
    interleave(engine, other_engine, apply(SOFT), apply(SOFT))
    row = quarantine_row(engine)
    assert (row.status, row.error_count) == ("with_errors", 2)


def test_a_hard_error_and_a_concurrent_soft_error_end_in_quarantine(engine, other_engine):
    interleave(engine, other_engine, apply(HARD), apply(SOFT))
    row = quarantine_row(engine)
    assert row.status == "quarantine" and row.failure_type == "hard"


def test_concurrent_soft_errors_on_an_existing_row_both_count(engine, other_engine):
    with engine.begin() as conn:
        store.apply_quarantine(conn, {KEY: SOFT}, now=NOW)
    interleave(engine, other_engine, apply(SOFT), apply(SOFT))
    assert quarantine_row(engine).error_count == 3


def test_two_claims_of_the_same_rows_hand_each_row_to_one_claimant(engine, other_engine):
    with engine.begin() as conn:
        dq.ensure_delivery(conn, "d", None, NOW)
        store.insert_delivery_logs(conn, [{"delivery_id": "d", "seq": i, "token": f"t{i}", "platform": "apns",
                                           "app": "a"} for i in range(100)], now=NOW)
    won: dict[str, set[int]] = {}
    interleave(engine, other_engine,
               lambda c: won.setdefault("a", dq.claim_first_sends(c, "d", list(range(0, 60)), "a", NOW)),
               lambda c: won.setdefault("b", dq.claim_first_sends(c, "d", list(range(40, 100)), "b", NOW)))
    assert won["a"] == set(range(60)) and won["b"] == set(range(60, 100))
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(DLOG.c.claimed_by, sa.func.count()).group_by(DLOG.c.claimed_by)).all()) \
            == {"a": 60, "b": 40}


def test_opposite_order_upserts_of_shared_subscriptions_do_not_deadlock(engine, other_engine):
    """Two deliveries upserting the same 3,000 subscriptions (each changing the profile ids, so every row
    is written) in opposite input orders, at the same time: rows taken in input order meet in the
    middle and Postgres aborts one with a deadlock; taken in key order, one simply waits for the other."""
    keys = [("apns", "a", f"{i:05d}") for i in range(3000)]
    with engine.begin() as conn:
        store.upsert_subscriptions(conn, [{"platform": p, "app": a, "token": t} for p, a, t in keys], now=NOW)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(eng: Engine, order: list, tag: str) -> None:
        try:
            for round_ in range(4):
                rows = [{"platform": p, "app": a, "token": t, "profile_id": f"{tag}{round_}"} for p, a, t in order]
                start.wait(10)
                with eng.begin() as conn:
                    store.upsert_subscriptions(conn, rows, now=NOW)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(engine, keys, "a")),
               threading.Thread(target=run, args=(other_engine, list(reversed(keys)), "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
