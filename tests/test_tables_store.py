"""tables.store on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from push.errors import ValidationError
from push.outcomes import FailureReason, FailureType, Outcome, Scope
from push.qualification import RuleStatus
from push.quarantine import QuarantinePolicy, QuarantineStatus
from tables import store
from tables.models import (
    DELIV,
    DENY,
    DLOG,
    EXCL,
    QUAR,
    RELOG,
    RULE,
    SUBS,
    LogStatus,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def rows(conn: Connection, table: sa.Table, order: Any = None) -> list[dict[str, Any]]:
    stmt = sa.select(table).order_by(order if order is not None else table.c[list(table.c.keys())[0]])
    return [dict(r) for r in conn.execute(stmt).mappings()]


def fail(kind: FailureType | None, reason: FailureReason = FailureReason.REFUSED, **kw: Any) -> Outcome:
    return Outcome(
        failure_type=kind,
        failure_reason=FailureReason.UNDEFINED if kind is None else reason,
        retry=False,
        scope=kw.pop("scope", Scope.TOKEN),
        rule="test",
        error_text=kw.pop("error_text", "" if kind is None else "error text"),
        **kw,
    )


HARD = fail(FailureType.HARD, FailureReason.USER_UNKNOWN, error_text="Unregistered")
SOFT = fail(FailureType.SOFT, error_text="TooManyProviderTokenUpdates")
OK = fail(None)


@pytest.fixture(params=[None, 5], ids=["chunk-default", "chunk-5"])
def small_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a test once with tiny parameter chunks so the chunking paths execute."""
    if request.param is not None:
        monkeypatch.setattr(store, "_max_params", lambda conn: request.param)
        monkeypatch.setattr(store, "ROW_BATCH", 3)


# --------------------------------------------------------------------------- subscriptions


def test_upsert_subscriptions_inserts_then_keeps_registration(conn: Connection) -> None:
    batch = [
        {"app": "a", "platform": "apns", "token": "t1", "profile_id": "p1"},
        {"app": "a", "platform": "apns", "token": "t2"},
        {"app": "a", "platform": "apns", "token": "t2", "profile_id": "p2"},  # duplicate: last wins
    ]
    assert store.upsert_subscriptions(conn, batch, now=NOW) == 2
    later = NOW + timedelta(days=1)
    again = [
        {"app": "a", "platform": "apns", "token": "t1"},  # no profile given: keep p1
        {"app": "a", "platform": "apns", "token": "t2", "profile_id": "p9"},  # profile moves
        {"app": "a", "platform": "fcm", "token": "t1"},  # same token, other platform: new row
    ]
    assert store.upsert_subscriptions(conn, again, now=later) == 2
    got = {(r["platform"], r["token"]): r for r in rows(conn, SUBS)}
    assert len(got) == 3
    assert got[("apns", "t1")]["profile_id"] == "p1"
    assert got[("apns", "t1")]["updated_at"] == NOW  # untouched: nothing changed
    assert got[("apns", "t2")]["profile_id"] == "p9"
    assert got[("apns", "t2")]["registered_at"] == NOW  # an import is not a registration
    assert got[("apns", "t2")]["updated_at"] == later
    assert got[("fcm", "t1")]["registered_at"] == later
    assert all(not r["disabled"] for r in got.values())
    assert store.upsert_subscriptions(conn, []) == 0


def test_upsert_does_not_re_enable(conn: Connection) -> None:
    store.upsert_subscriptions(conn, [{"app": "a", "platform": "fcm", "token": "t"}], now=NOW)
    conn.execute(sa.update(SUBS).values(disabled=True, disabled_at=NOW, disabled_reason=1))
    store.upsert_subscriptions(conn, [{"app": "a", "platform": "fcm", "token": "t", "profile_id": "p"}], now=NOW)
    (row,) = rows(conn, SUBS)
    assert row["disabled"] and row["disabled_at"] == NOW and row["profile_id"] == "p"


def test_register_token_bumps_registration_and_re_enables(conn: Connection) -> None:
    first = store.register_token(conn, app="a", platform="apns", token="t", profile_id="p", now=NOW)
    conn.execute(sa.update(SUBS).values(disabled=True, disabled_at=NOW, disabled_reason=int(FailureReason.USER_UNKNOWN)))
    later = NOW + timedelta(hours=3)
    again = store.register_token(conn, app="a", platform="apns", token="t", now=later)
    assert again == first
    (row,) = rows(conn, SUBS)
    assert (row["registered_at"], row["created_at"], row["updated_at"]) == (later, NOW, later)
    assert (row["disabled"], row["disabled_at"], row["disabled_reason"], row["profile_id"]) == (False, None, None, "p")
    other = store.register_token(conn, app="a", platform="fcm", token="t", now=later)
    assert other != first


# --------------------------------------------------------------------------- analysis state


def test_load_analysis_state(conn: Connection, small_chunks: None) -> None:
    subs = [{"app": "a", "platform": "apns", "token": f"t{i}", "profile_id": f"p{i % 4}"} for i in range(12)]
    subs.append({"app": "b", "platform": "fcm", "token": "t0", "profile_id": "p0"})
    store.upsert_subscriptions(conn, subs, now=NOW)
    conn.execute(sa.update(SUBS).where(SUBS.c.token == "t3").values(disabled=True))
    conn.execute(
        sa.insert(DENY),
        [
            {"profile_id": "p1", "channel": "apns", "created_at": NOW},
            {"profile_id": "p0", "channel": "fcm", "created_at": NOW},  # other channel than apns/p0
        ],
    )
    store.apply_quarantine(conn, {("apns", "a", "t2"): HARD, ("apns", "a", "t6"): SOFT}, now=NOW)

    keys = [("apns", "a", f"t{i}") for i in range(12)] + [("fcm", "b", "t0"), ("apns", "a", "unknown")]
    state = store.load_analysis_state(conn, keys + keys[:3])  # duplicates are harmless
    assert list(state) == keys
    assert state[("apns", "a", "unknown")] == store.AnalysisState(None, None, False, None, None, False)
    t0 = state[("apns", "a", "t0")]
    assert t0.subscription_id is not None and t0.profile_id == "p0" and t0.registered_at == NOW
    assert not t0.denylisted  # p0 is denylisted on fcm only
    assert state[("fcm", "b", "t0")].denylisted
    assert [k[2] for k, s in state.items() if s.denylisted and k[0] == "apns"] == ["t1", "t5", "t9"]
    assert [k[2] for k, s in state.items() if s.disabled] == ["t3"]
    assert state[("apns", "a", "t2")].quarantine_status is QuarantineStatus.QUARANTINE
    assert state[("apns", "a", "t6")].quarantine_status is QuarantineStatus.WITH_ERRORS
    assert state[("apns", "a", "t7")].quarantine_status is None
    assert store.load_analysis_state(conn, []) == {}


def test_load_analysis_state_large_chunk(conn: Connection) -> None:
    subs = [{"app": "a", "platform": "fcm", "token": f"tok-{i:05d}"} for i in range(2500)]
    store.upsert_subscriptions(conn, subs, now=NOW)
    keys = [("fcm", "a", s["token"]) for s in subs]
    state = store.load_analysis_state(conn, keys)
    assert len(state) == 2500 and all(s.subscription_id is not None for s in state.values())


# --------------------------------------------------------------------------- delivery logs


@pytest.fixture
def delivery(conn: Connection) -> str:
    conn.execute(sa.insert(DELIV).values(id="d1", label="test", created_at=NOW))
    return "d1"


def _log(seq: int, **extra: Any) -> dict[str, Any]:
    return {"delivery_id": "d1", "seq": seq, "token": f"t{seq}", "platform": "apns", "app": "a", **extra}


def test_insert_delivery_logs_is_idempotent(conn: Connection, delivery: str, small_chunks: None) -> None:
    payload = {"aps": {"alert": "héllo"}, "a": 1}
    first = [_log(i, payload=payload) for i in range(4)]
    assert store.insert_delivery_logs(conn, first, now=NOW) == 4
    # Resume: 2..7, of which 2 and 3 exist. Existing rows are left alone.
    resumed = [_log(i, status=LogStatus.SENT, payload="{}") for i in range(2, 8)]
    assert store.insert_delivery_logs(conn, resumed, now=NOW + timedelta(minutes=1)) == 4
    got = rows(conn, DLOG, DLOG.c.seq)
    assert [r["seq"] for r in got] == list(range(8))
    assert [r["status"] for r in got] == ["pending"] * 4 + ["sent"] * 4
    assert got[0]["payload"] == '{"a":1,"aps":{"alert":"héllo"}}'
    assert json.loads(got[0]["payload"]) == payload
    assert got[0]["attempts"] == 0 and got[0]["created_at"] == NOW
    assert store.insert_delivery_logs(conn, []) == 0


def test_insert_delivery_logs_validates(conn: Connection, delivery: str) -> None:
    with pytest.raises(ValidationError, match="seq"):
        store.insert_delivery_logs(conn, [{"delivery_id": "d1", "token": "t", "platform": "apns", "app": "a"}])
    with pytest.raises(ValidationError, match="colour"):
        store.insert_delivery_logs(conn, [_log(1, colour="red")])


def test_existing_log_status(conn: Connection, delivery: str) -> None:
    store.insert_delivery_logs(
        conn, [_log(i, status=LogStatus.SENT if i % 2 else LogStatus.PENDING) for i in range(10)], now=NOW
    )
    assert store.existing_log_status(conn, "d1", range(3, 6)) == {3: LogStatus.SENT, 4: LogStatus.PENDING, 5: LogStatus.SENT}
    assert store.existing_log_status(conn, "d1", range(8, 20)) == {8: LogStatus.PENDING, 9: LogStatus.SENT}
    assert store.existing_log_status(conn, "d1", range(0, 10, 4)) == {0: LogStatus.PENDING, 4: LogStatus.PENDING, 8: LogStatus.PENDING}
    assert store.existing_log_status(conn, "d1", range(5, 5)) == {}
    assert store.existing_log_status(conn, "other", range(0, 10)) == {}


def test_update_delivery_logs(conn: Connection, delivery: str, small_chunks: None) -> None:
    store.insert_delivery_logs(conn, [_log(i) for i in range(8)], now=NOW)
    ids = {r["seq"]: r["id"] for r in rows(conn, DLOG)}
    later = NOW + timedelta(minutes=5)
    retry_at = later + timedelta(minutes=10)
    updates: list[dict[str, Any]] = [
        {"id": ids[0], "status": LogStatus.SENT, "provider_id": "apns-id-0", "attempts": 1},
        {"id": ids[1], "status": LogStatus.SENT, "provider_id": "apns-id-1", "attempts": 1},
        {
            "delivery_id": "d1",
            "seq": 2,
            "status": LogStatus.FAILED,
            "failure_type": FailureType.HARD,
            "failure_reason": FailureReason.USER_UNKNOWN,
            "provider_status": 410,
            "provider_reason": "Unregistered",
            "error_text": "Unregistered",
        },
        {"delivery_id": "d1", "seq": 3, "status": "retry_pending", "next_retry_at": retry_at, "attempts": 1},
        {"delivery_id": "d1", "seq": 99, "status": "sent"},  # no such row
    ] + [{"id": ids[i], "status": "sent"} for i in range(4, 8)]
    assert store.update_delivery_logs(conn, updates, now=later) == 8
    got = {r["seq"]: r for r in rows(conn, DLOG)}
    assert (got[0]["status"], got[0]["provider_id"], got[0]["attempts"], got[0]["updated_at"]) == ("sent", "apns-id-0", 1, later)
    assert (got[2]["failure_type"], got[2]["failure_reason"], got[2]["provider_status"]) == ("hard", 1, 410)
    assert (got[3]["status"], got[3]["next_retry_at"]) == ("retry_pending", retry_at)
    assert got[2]["provider_id"] is None and got[0]["error_text"] is None  # only named columns change
    # The retry job's query uses the (status, next_retry_at) index.
    due = conn.execute(
        sa.select(DLOG.c.seq).where(DLOG.c.status == "retry_pending", DLOG.c.next_retry_at <= retry_at)
    ).scalars().all()
    assert due == [3]


def test_update_delivery_logs_validates(conn: Connection, delivery: str) -> None:
    with pytest.raises(ValidationError):
        store.update_delivery_logs(conn, [{"status": "sent"}])
    with pytest.raises(ValidationError, match="token"):
        store.update_delivery_logs(conn, [{"id": 1, "token": "x"}])


# --------------------------------------------------------------------------- exclusions


def test_insert_exclusions_analysis_is_idempotent(conn: Connection, delivery: str) -> None:
    excl = [
        {"delivery_id": "d1", "token": f"t{i}", "platform": "apns", "app": "a",
         "failure_reason": FailureReason.QUARANTINED, "reason_text": "quarantined", "source": "analysis"}
        for i in range(3)
    ]
    assert store.insert_exclusions(conn, excl, now=NOW) == 3
    assert store.insert_exclusions(conn, excl, now=NOW) == 0
    got = rows(conn, EXCL)
    assert len(got) == 3 and got[0]["failure_reason"] == 9 and got[0]["created_at"] == NOW


def test_insert_exclusions_opt_out_job_once_per_disable_event(conn: Connection) -> None:
    sub = store.register_token(conn, app="a", platform="fcm", token="t", now=NOW)
    event = {"subscription_id": sub, "token": "t", "platform": "fcm", "app": "a",
             "failure_reason": FailureReason.USER_UNKNOWN, "source": "opt_out_job", "event_at": NOW}
    assert store.insert_exclusions(conn, [event], now=NOW) == 1
    assert store.insert_exclusions(conn, [event], now=NOW + timedelta(hours=6)) == 0  # job re-run
    # Re-registered, then disabled again later: a new event, recorded.
    assert store.insert_exclusions(conn, [{**event, "event_at": NOW + timedelta(days=3)}], now=NOW) == 1
    assert len(rows(conn, EXCL)) == 2


def test_insert_exclusions_validates(conn: Connection) -> None:
    base = {"token": "t", "platform": "fcm", "app": "a", "failure_reason": 1}
    with pytest.raises(ValidationError, match="delivery_id"):
        store.insert_exclusions(conn, [{**base, "source": "analysis"}])
    with pytest.raises(ValidationError, match="event_at"):
        store.insert_exclusions(conn, [{**base, "source": "opt_out_job", "subscription_id": 1}])
    with pytest.raises(ValueError):
        store.insert_exclusions(conn, [{**base, "source": "manual", "delivery_id": "x"}])


# --------------------------------------------------------------------------- quarantine


def _quarantine(conn: Connection) -> dict[str, dict[str, Any]]:
    return {r["token"]: r for r in rows(conn, QUAR)}


def test_apply_quarantine(conn: Connection, small_chunks: None) -> None:
    outcomes = {
        ("apns", "a", "hard"): HARD,
        ("apns", "a", "soft"): SOFT,
        ("apns", "a", "ok"): OK,
        ("apns", "a", "ignored"): fail(FailureType.IGNORED),
        ("apns", "a", "msg"): HARD.with_(scope=Scope.MESSAGE),
        ("fcm", "a", "five"): [SOFT] * 5,
    }
    assert store.apply_quarantine(conn, outcomes, now=NOW) == 2
    q = _quarantine(conn)
    assert set(q) == {"hard", "soft", "five"}  # no rows for no-change outcomes
    assert (q["hard"]["status"], q["hard"]["error_count"], q["hard"]["failure_type"], q["hard"]["failure_reason"]) == (
        "quarantine", 1, "hard", 1)
    assert (q["hard"]["error_text"], q["hard"]["first_error_at"], q["hard"]["last_error_at"]) == ("Unregistered", NOW, NOW)
    assert (q["soft"]["status"], q["soft"]["error_count"]) == ("with_errors", 1)
    assert (q["five"]["status"], q["five"]["error_count"]) == ("quarantine", 5)

    # Next delivery: soft errors accumulate, success resets, quarantine is sticky.
    later = NOW + timedelta(days=1)
    assert store.apply_quarantine(
        conn, {("apns", "a", "soft"): SOFT, ("apns", "a", "hard"): OK, ("fcm", "a", "five"): HARD}, now=later
    ) == 0
    q = _quarantine(conn)
    assert (q["soft"]["error_count"], q["soft"]["first_error_at"], q["soft"]["last_error_at"]) == (2, NOW, later)
    assert q["hard"]["status"] == "quarantine" and q["hard"]["updated_at"] == NOW
    assert store.apply_quarantine(conn, {("apns", "a", "soft"): OK}, now=later) == 0
    assert (_quarantine(conn)["soft"]["status"], _quarantine(conn)["soft"]["error_count"]) == ("valid", 0)
    assert store.apply_quarantine(conn, {}) == 0


def test_apply_quarantine_ten_day_reset(conn: Connection) -> None:
    key = ("fcm", "a", "t")
    for day in range(4):
        store.apply_quarantine(conn, {key: SOFT}, now=NOW + timedelta(days=day))
    assert _quarantine(conn)["t"]["error_count"] == 4
    quiet = NOW + timedelta(days=3 + 11)
    assert store.apply_quarantine(conn, {key: SOFT}, now=quiet) == 0
    row = _quarantine(conn)["t"]
    assert (row["status"], row["error_count"], row["first_error_at"]) == ("with_errors", 1, quiet)


def test_apply_quarantine_policy(conn: Connection) -> None:
    key = ("fcm", "a", "t")
    assert store.apply_quarantine(conn, {key: [SOFT, SOFT]}, now=NOW, policy=QuarantinePolicy(threshold=2)) == 1


def test_apply_quarantine_stale_apns_410(conn: Connection) -> None:
    registered = NOW - timedelta(hours=1)
    store.register_token(conn, app="a", platform="apns", token="re", now=registered)
    store.register_token(conn, app="a", platform="apns", token="gone", now=registered - timedelta(days=30))
    stale = HARD.with_(provider_status=410, provider_timestamp=registered - timedelta(days=1))
    assert store.apply_quarantine(
        conn, {("apns", "a", "re"): stale, ("apns", "a", "gone"): stale, ("apns", "a", "nosub"): stale}, now=NOW
    ) == 2
    q = _quarantine(conn)
    assert set(q) == {"gone", "nosub"}
    assert q["gone"]["provider_timestamp"] == registered - timedelta(days=1)


def test_cleanup_quarantine(conn: Connection) -> None:
    mailbox = fail(FailureType.SOFT, FailureReason.MAILBOX_FULL)
    store.apply_quarantine(
        conn,
        {
            ("fcm", "a", "old-soft"): SOFT,
            ("fcm", "a", "old-mailbox"): mailbox,
            ("fcm", "a", "older-mailbox"): mailbox,
            ("fcm", "a", "hard"): HARD,
        },
        now=NOW - timedelta(days=11),
    )
    store.apply_quarantine(conn, {("fcm", "a", "older-mailbox"): mailbox}, now=NOW - timedelta(days=31))
    store.apply_quarantine(conn, {("fcm", "a", "recent"): SOFT}, now=NOW - timedelta(days=2))
    # older-mailbox's last error is the day -11 one; move it back by hand to day -31.
    conn.execute(sa.update(QUAR).where(QUAR.c.token == "older-mailbox").values(last_error_at=NOW - timedelta(days=31)))
    assert store.cleanup_quarantine(conn, now=NOW, dry_run=True) == 2
    assert _quarantine(conn)["old-soft"]["status"] == "with_errors"
    assert store.cleanup_quarantine(conn, now=NOW) == 2
    status = {t: (r["status"], r["error_count"]) for t, r in _quarantine(conn).items()}
    assert status == {
        "old-soft": ("valid", 0),
        "older-mailbox": ("valid", 0),
        "old-mailbox": ("with_errors", 1),
        "hard": ("quarantine", 1),
        "recent": ("with_errors", 1),
    }
    assert store.cleanup_quarantine(conn, now=NOW) == 0


# --------------------------------------------------------------------------- release


@pytest.fixture
def quarantined(conn: Connection) -> None:
    store.apply_quarantine(
        conn,
        {
            ("apns", "a", "t1"): HARD.with_(error_text="Unregistered 100%_sure"),
            ("apns", "b", "t2"): HARD.with_(error_text="BadDeviceToken"),
            ("fcm", "a", "t3"): SOFT.with_(error_text="QUOTA_EXCEEDED"),
            ("fcm", "a", "t4"): OK,
        },
        now=NOW,
    )
    store.apply_quarantine(conn, {("fcm", "b", "t5"): HARD.with_(error_text="UNREGISTERED")}, now=NOW + timedelta(days=2))
    conn.execute(
        sa.insert(QUAR).values(platform="fcm", app="a", token="spam", status="denylisted", updated_at=NOW, error_text="unregistered")
    )


def _status(conn: Connection) -> dict[str, str]:
    return {t: r["status"] for t, r in _quarantine(conn).items()}


@pytest.mark.usefixtures("quarantined")
@pytest.mark.parametrize(
    ("criteria", "released"),
    [
        ({"token": "t1"}, {"t1"}),
        ({"token": "t1' OR '1'='1"}, set()),  # bound parameter, not SQL
        ({"app": "b"}, {"t2", "t5"}),
        ({"platform": "fcm"}, {"t3", "t5"}),
        ({"error_text_contains": "unregistered"}, {"t1", "t5"}),  # case-insensitive
        ({"error_text_contains": "100%_"}, {"t1"}),  # % and _ are literal
        ({"error_text_contains": "1%"}, set()),
        ({"error_text_contains": "unregistered", "platform": "apns"}, {"t1"}),
        ({"modified_since": NOW + timedelta(days=1)}, {"t5"}),
        ({"modified_until": NOW}, {"t1", "t2", "t3"}),
        ({"modified_since": NOW, "modified_until": NOW, "app": "a"}, {"t1", "t3"}),
    ],
)
def test_release_quarantine_criteria(conn: Connection, criteria: dict[str, Any], released: set[str]) -> None:
    before = _status(conn)
    assert store.release_quarantine(conn, released_by="ops", dry_run=True, **criteria) == len(released)
    assert _status(conn) == before
    assert rows(conn, RELOG) == []
    later = NOW + timedelta(days=5)
    assert store.release_quarantine(conn, released_by="ops", now=later, **criteria) == len(released)
    after = {t: r for t, r in _quarantine(conn).items()}
    for token in released:
        assert (after[token]["status"], after[token]["error_count"], after[token]["updated_at"]) == ("valid", 0, later)
    for token in set(before) - released:
        assert after[token]["status"] == before[token]
    log = rows(conn, RELOG)
    assert {r["token"] for r in log} == released
    for r in log:
        assert r["previous_status"] == before[r["token"]] and r["created_at"] == later
        assert r["released_by"].startswith("ops | ")


@pytest.mark.usefixtures("quarantined")
def test_release_denylisted_only_when_asked(conn: Connection) -> None:
    assert store.release_quarantine(conn, released_by="ops", token="spam") == 0
    assert store.release_quarantine(conn, released_by="ops", token="spam", include_denylisted=True) == 1
    assert _status(conn)["spam"] == "valid"
    (log,) = rows(conn, RELOG)
    assert log["previous_status"] == "denylisted" and log["released_by"] == "ops | token='spam'"
    assert store.release_quarantine(conn, released_by="ops", token="spam", include_denylisted=True) == 0


def test_release_requires_criteria_and_author(conn: Connection) -> None:
    with pytest.raises(ValidationError, match="criteria"):
        store.release_quarantine(conn, released_by="ops")
    with pytest.raises(ValidationError, match="released_by"):
        store.release_quarantine(conn, released_by=" ", token="t")


def test_release_in_chunks(conn: Connection, small_chunks: None) -> None:
    store.apply_quarantine(conn, {("fcm", "a", f"t{i}"): HARD for i in range(13)}, now=NOW)
    assert store.release_quarantine(conn, released_by="ops", app="a") == 13
    assert set(_status(conn).values()) == {"valid"}
    assert len(rows(conn, RELOG)) == 13


# --------------------------------------------------------------------------- qualification rules


def test_bump_qualification_rules(conn: Connection, small_chunks: None) -> None:
    items = [
        ("apns", "BadDeviceToken", "BadDeviceToken for abc"),
        ("apns", "BadDeviceToken", "BadDeviceToken for def"),
        ("fcm", "BadDeviceToken", "fcm text"),
        ("apns", "Unregistered #xxx#", "Unregistered 123"),
    ]
    assert store.bump_qualification_rules(conn, items, now=NOW) == 3
    later = NOW + timedelta(hours=1)
    assert store.bump_qualification_rules(conn, [("apns", "BadDeviceToken", "a later text")], now=later) == 1
    got = {(r["provider"], r["normalized_text"]): r for r in rows(conn, RULE)}
    bad = got[("apns", "BadDeviceToken")]
    assert (bad["occurrences"], bad["first_text"], bad["status"], bad["created_at"], bad["updated_at"]) == (
        3, "BadDeviceToken for abc", "to_qualify", NOW, later)
    assert got[("fcm", "BadDeviceToken")]["occurrences"] == 1
    assert store.bump_qualification_rules(conn, []) == 0


def test_rules_are_written_in_key_order(conn: Connection) -> None:
    # Two writers bumping the same rules then lock them in the same order (no deadlock between
    # deliveries); the ids of new rows show the order they were written in.
    store.bump_qualification_rules(conn, [("fcm", "zeta", "z"), ("apns", "mu", "m"), ("fcm", "alpha", "a")], now=NOW)
    by_id = sorted(rows(conn, RULE), key=lambda r: r["id"])
    assert [(r["provider"], r["normalized_text"]) for r in by_id] == [("apns", "mu"), ("fcm", "alpha"), ("fcm", "zeta")]


def test_qualification_occurrences_cap_and_user_fields_survive(conn: Connection) -> None:
    store.bump_qualification_rules(conn, [("fcm", "INTERNAL", "INTERNAL")], now=NOW)
    conn.execute(
        sa.update(RULE).values(occurrences=99_998, status="ignore", failure_type="ignored", failure_reason=25)
    )
    store.bump_qualification_rules(conn, [("fcm", "INTERNAL", "x")] * 5, now=NOW)
    (row,) = rows(conn, RULE)
    assert (row["occurrences"], row["status"], row["failure_type"], row["failure_reason"]) == (100_000, "ignore", "ignored", 25)
    store.bump_qualification_rules(conn, [("fcm", "OTHER", "x")] * 100_005, now=NOW)
    assert conn.execute(sa.select(RULE.c.occurrences).where(RULE.c.normalized_text == "OTHER")).scalar_one() == 100_000
    rules = store.load_qualification_rules(conn, provider="fcm")
    assert rules[("fcm", "INTERNAL")].status is RuleStatus.IGNORE
    assert rules[("fcm", "INTERNAL")].failure_reason is FailureReason.ERROR_IGNORED
    assert set(store.load_qualification_rules(conn)) == {("fcm", "INTERNAL"), ("fcm", "OTHER")}


def test_long_normalized_text_is_truncated(conn: Connection) -> None:
    text = "x" * 5000
    store.bump_qualification_rules(conn, [("fcm", text, text)], now=NOW)
    (row,) = rows(conn, RULE)
    assert row["normalized_text"] == "x" * 1024 and row["first_text"] == text


# --------------------------------------------------------------------------- sessions


def test_functions_accept_a_session(engine: Engine) -> None:
    from sqlmodel import Session

    with Session(engine) as session:
        store.upsert_subscriptions(session, [{"app": "a", "platform": "fcm", "token": "t"}], now=NOW)
        session.commit()
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(SUBS)).scalar_one() == 1
