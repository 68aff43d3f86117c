"""tables.raw (pre-built SQL for the per-chunk statements) and the tables.delivery queries built on it,
on SQLite and PostgreSQL: what they write must be exactly what SQLAlchemy Core writes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from tables import delivery as dq
from tables import raw, store
from tables.models import (
    DELIV,
    DLOG,
    LogStatus,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def delivery(conn: Connection) -> str:
    conn.execute(sa.insert(DELIV).values(id="d1", created_at=NOW))
    return "d1"


def _log(seq: int, **extra: Any) -> dict[str, Any]:
    return {"delivery_id": "d1", "seq": seq, "token": f"t{seq}", "platform": "apns", "app": "a", **extra}


def _stored(conn: Connection, seq: int) -> tuple[Any, ...]:
    """The row as the database holds it: no SQLAlchemy result processing (SQLite: the datetime text)."""
    cols = ", ".join(c.name for c in DLOG.c if c.name != "id")
    return tuple(conn.exec_driver_sql(f"SELECT {cols} FROM delivery_log WHERE seq = {seq}").one())


def test_writes_are_identical_to_core(conn: Connection, delivery: str) -> None:
    # An offset other than UTC, microseconds and NULLs: the cases a hand-made conversion would get wrong.
    expires = datetime(2025, 3, 2, 14, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    values = {"profile_id": None, "status": LogStatus.PENDING.value, "attempts": 0, "expires_at": expires,
              "payload": '{"a":1}', "failure_type": None, "next_retry_at": None}
    conn.execute(sa.insert(DLOG).values(**_log(1), **values, created_at=NOW, updated_at=NOW))
    assert store.insert_delivery_logs(conn, [_log(2, **values)], now=NOW) == 1
    core, fast = _stored(conn, 1), _stored(conn, 2)
    assert fast[:2] == (core[0], 2) and fast[2:] == ("t2", *core[3:])

    retry_at = NOW + timedelta(minutes=3)
    conn.execute(sa.update(DLOG).where(DLOG.c.seq == 1).values(
        status="retry_pending", next_retry_at=retry_at, attempts=1, updated_at=NOW + timedelta(seconds=1)))
    assert store.update_delivery_logs(conn, [{"delivery_id": "d1", "seq": 2, "status": "retry_pending",
                                              "next_retry_at": retry_at, "attempts": 1}],
                                      now=NOW + timedelta(seconds=1)) == 1
    core, fast = _stored(conn, 1), _stored(conn, 2)
    assert fast[2:] == ("t2", *core[3:])
    got = conn.execute(sa.select(DLOG.c.expires_at, DLOG.c.next_retry_at).where(DLOG.c.seq == 2)).one()
    assert got == (expires, retry_at) and got.expires_at.tzinfo == timezone.utc


def test_naive_datetimes_are_rejected_like_core(conn: Connection, delivery: str) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
        store.insert_delivery_logs(conn, [_log(1, expires_at=datetime(2025, 1, 1))], now=NOW)


def test_insert_and_update_counts(conn: Connection, delivery: str) -> None:
    names = ("delivery_id", "seq", "token", "platform", "app", "profile_id", "created_at", "updated_at")
    rows = [("d1", i, f"t{i}", "apns", "a", None, NOW, NOW) for i in range(5)]  # profile_id: a column of NULLs
    tail = "ON CONFLICT (delivery_id, seq) DO NOTHING"
    assert raw.insert_rows(conn, DLOG, names, rows[:3], tail=tail, batch=2) == 3
    assert raw.insert_rows(conn, DLOG, names, rows, tail=tail, batch=2) == 2  # 0..2 exist
    assert raw.insert_rows(conn, DLOG, names, [], tail=tail) == 0
    updated = raw.update_rows(conn, DLOG, ("delivery_id", "seq"), ("status", "attempts"),
                              [("d1", 1, "sent", 1), ("d1", 4, "failed", 2), ("d1", 99, "sent", 1)], batch=2)
    assert updated == 2  # seq 99 has no row
    got = dict(conn.execute(sa.select(DLOG.c.seq, DLOG.c.status)).all())
    assert got == {0: "pending", 1: "sent", 2: "pending", 3: "pending", 4: "failed"}
    # Postgres sends a column whose values are all equal as one scalar: only the keys vary here ...
    assert raw.update_rows(conn, DLOG, ("delivery_id", "seq"), ("status",), [("d1", 0, "sent"), ("d1", 2, "sent")]) == 2
    # ... and here nothing does: the row count still comes from the batch.
    same = ("d1", 7, "t7", "apns", "a", None, NOW, NOW)
    assert raw.insert_rows(conn, DLOG, names, [same, same, same], tail=tail) == 1
    got = dict(conn.execute(sa.select(DLOG.c.seq, DLOG.c.status)).all())
    assert got == {0: "sent", 1: "sent", 2: "sent", 3: "pending", 4: "failed", 7: "pending"}


def test_claim_first_sends_is_a_compare_and_set(conn: Connection, delivery: str) -> None:
    store.insert_delivery_logs(conn, [_log(i) for i in range(2000)], now=NOW)
    conn.execute(sa.update(DLOG).where(DLOG.c.seq == 5).values(status="sent"))
    wanted = [i for i in range(2000) if i % 2 == 1]  # more than one 900-seq statement, not contiguous
    won = dq.claim_first_sends(conn, "d1", list(reversed(wanted)), "runner-a", NOW)
    assert won == set(wanted) - {5}  # a row with an outcome is never claimed
    assert dq.claim_first_sends(conn, "d1", [], "runner-a", NOW) == set()
    # A second runner asking for the same rows (and some free ones) wins only the free ones.
    assert dq.claim_first_sends(conn, "d1", [1, 3, 4, 6], "runner-b", NOW) == {4, 6}
    rows = {r.seq: r for r in conn.execute(sa.select(DLOG.c.seq, DLOG.c.attempts, DLOG.c.claimed_by))}
    assert {s for s, r in rows.items() if r.attempts} == (set(wanted) - {5}) | {4, 6}
    assert {r.attempts for r in rows.values()} == {0, 1}
    assert rows[1].claimed_by == "runner-a" and rows[4].claimed_by == "runner-b" and rows[0].claimed_by is None
    # Only the claimer can give a claim back; the row is then sendable again.
    assert dq.unclaim_first_sends(conn, "d1", [1, 4], "runner-a") == 1
    assert dq.claim_first_sends(conn, "d1", [1, 4], "runner-b", NOW) == {1}


def test_claim_retries_takes_each_due_row_once(conn: Connection, delivery: str) -> None:
    due, later = NOW - timedelta(minutes=1), NOW + timedelta(minutes=1)
    store.insert_delivery_logs(conn, [_log(i, status="retry_pending", attempts=1,
                                           next_retry_at=due if i < 3 else later) for i in range(4)], now=NOW)
    ids = dict(conn.execute(sa.select(DLOG.c.seq, DLOG.c.id)).all())
    assert dq.claim_retries(conn, list(ids.values()), "pass-a", NOW) == {ids[0], ids[1], ids[2]}
    assert dq.claim_retries(conn, list(ids.values()), "pass-b", NOW) == set()  # in flight: no longer due
    assert dq.due_retries(conn, NOW, 10) == []
    rows = {r.seq: r for r in conn.execute(sa.select(DLOG.c.seq, DLOG.c.attempts, DLOG.c.next_retry_at,
                                                     DLOG.c.claimed_by))}
    assert [rows[i].attempts for i in range(4)] == [2, 2, 2, 1]
    assert rows[0].next_retry_at is None and rows[0].claimed_by == "pass-a"
    assert dq.unclaim_retries(conn, [ids[0]], "pass-b", NOW) == 0  # not b's
    assert dq.unclaim_retries(conn, [ids[0]], "pass-a", NOW) == 1
    assert [r.id for r in dq.due_retries(conn, NOW, 10)] == [ids[0]]
    assert [r.id for r in dq.stale_retry_claims(conn, NOW + timedelta(seconds=1), 10)] == [ids[1], ids[2]]
    assert dq.stale_retry_claims(conn, NOW - timedelta(seconds=1), 10) == []


def test_first_seq_of_keys(conn: Connection, delivery: str) -> None:
    rows = [_log(i, token=f"t{i % 1000}") for i in range(1500)] + [_log(2000, token="t1", app="b")]
    store.insert_delivery_logs(conn, rows, now=NOW)
    keys = [("apns", "a", f"t{i}") for i in range(1000)] + [("apns", "b", "t1"), ("fcm", "a", "t1"),
                                                              ("apns", "a", "absent")]
    got = dq.first_seq_of_keys(conn, "d1", keys)
    assert got == {**{("apns", "a", f"t{i}"): i for i in range(1000)}, ("apns", "b", "t1"): 2000}
    assert dq.first_seq_of_keys(conn, "other", keys) == {}


def test_analysis_state_reads_back_through_result_processing(conn: Connection) -> None:
    registered = datetime(2025, 1, 1, 8, 0, 0, 42, tzinfo=timezone(timedelta(hours=-5)))
    store.upsert_subscriptions(conn, [{"app": "a", "platform": "apns", "token": "t", "profile_id": "p"}],
                               now=registered)
    (state,) = store.load_analysis_state(conn, [("apns", "a", "t")]).values()
    assert state.registered_at == registered and state.registered_at.tzinfo == timezone.utc
    assert state.disabled is False and state.denylisted is False


def test_too_long_values_fail_instead_of_being_truncated(pg_engine: sa.Engine) -> None:
    # Postgres only: SQLite does not enforce VARCHAR lengths. An explicit cast to VARCHAR(n) would
    # truncate silently; the array parameters are cast without the length so the column rejects it.
    with pg_engine.begin() as c:
        c.execute(sa.insert(DELIV).values(id="d1", created_at=NOW))
    with pytest.raises(sa.exc.DataError, match="too long"):
        with pg_engine.begin() as c:
            store.insert_delivery_logs(c, [_log(1, token="f" * 1025)], now=NOW)
    with pg_engine.begin() as c:
        store.insert_delivery_logs(c, [_log(1)], now=NOW)
    with pytest.raises(sa.exc.DataError, match="too long"):
        with pg_engine.begin() as c:
            store.update_delivery_logs(c, [{"delivery_id": "d1", "seq": 1, "provider_reason": "r" * 256}], now=NOW)
