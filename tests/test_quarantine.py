"""The quarantine transition table, row by row, with an injected clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from push.outcomes import FailureReason, FailureType, Outcome, Scope
from push.quarantine import (
    RELEASABLE,
    TRANSITIONS,
    Event,
    QuarantinePolicy,
    QuarantineState,
    QuarantineStatus,
    apply_event,
    cleanup_event,
    decide,
    event_for,
    may_change,
    may_change_valid,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
V, W, Q, D = (
    QuarantineStatus.VALID,
    QuarantineStatus.WITH_ERRORS,
    QuarantineStatus.QUARANTINE,
    QuarantineStatus.DENYLISTED,
)


def outcome(
    failure_type: FailureType | None,
    reason: FailureReason = FailureReason.REFUSED,
    *,
    scope: Scope = Scope.TOKEN,
    provider_timestamp: datetime | None = None,
    text: str = "boom",
) -> Outcome:
    return Outcome(
        failure_type=failure_type,
        failure_reason=FailureReason.UNDEFINED if failure_type is None else reason,
        retry=False,
        scope=scope,
        rule="test",
        error_text="" if failure_type is None else text,
        provider_timestamp=provider_timestamp,
    )


OUTCOME_FOR_EVENT = {
    Event.HARD: outcome(FailureType.HARD, FailureReason.USER_UNKNOWN, text="Unregistered"),
    Event.SOFT: outcome(FailureType.SOFT, FailureReason.REFUSED, text="TooManyRequests"),
    Event.IGNORED: outcome(FailureType.IGNORED, FailureReason.ERROR_IGNORED),
    Event.SUCCESS: outcome(None),
}

# A starting state per status: valid has no history; with_errors has 2 recent errors.
START = {
    V: QuarantineState(),
    W: QuarantineState(
        status=W,
        error_count=2,
        failure_type=FailureType.SOFT,
        failure_reason=FailureReason.REFUSED,
        error_text="old",
        first_error_at=NOW - timedelta(days=2),
        last_error_at=NOW - timedelta(days=1),
    ),
    Q: QuarantineState(status=Q, error_count=1, failure_type=FailureType.HARD, last_error_at=NOW - timedelta(days=1)),
    D: QuarantineState(status=D),
}

# The expected table, written independently of push.quarantine: (status, count,
# entered_quarantine) after the event, or None for "no change".
EXPECTED: dict[tuple[QuarantineStatus, Event], tuple[QuarantineStatus, int, bool] | None] = {
    (V, Event.HARD): (Q, 1, True),
    (V, Event.SOFT): (W, 1, False),
    (V, Event.IGNORED): None,
    (V, Event.SUCCESS): None,
    (V, Event.RELEASE): None,
    (V, Event.CLEANUP): None,
    (V, Event.CLEANUP_MAILBOX_FULL): None,
    (W, Event.HARD): (Q, 3, True),
    (W, Event.SOFT): (W, 3, False),
    (W, Event.IGNORED): None,
    (W, Event.SUCCESS): (V, 0, False),
    (W, Event.RELEASE): (V, 0, False),
    (W, Event.CLEANUP): (V, 0, False),
    (W, Event.CLEANUP_MAILBOX_FULL): (V, 0, False),
    (Q, Event.HARD): None,
    (Q, Event.SOFT): None,
    (Q, Event.IGNORED): None,
    (Q, Event.SUCCESS): None,
    (Q, Event.RELEASE): (V, 0, False),
    (Q, Event.CLEANUP): None,
    (Q, Event.CLEANUP_MAILBOX_FULL): None,
    (D, Event.HARD): None,
    (D, Event.SOFT): None,
    (D, Event.IGNORED): None,
    (D, Event.SUCCESS): None,
    (D, Event.RELEASE): (V, 0, False),
    (D, Event.CLEANUP): None,
    (D, Event.CLEANUP_MAILBOX_FULL): None,
}


def test_table_lists_every_status_event_pair() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in QuarantineStatus for e in Event}
    assert set(EXPECTED) == set(TRANSITIONS)


@pytest.mark.parametrize(("status", "event"), list(EXPECTED), ids=lambda x: getattr(x, "value", x))
def test_transition_row(status: QuarantineStatus, event: Event) -> None:
    start = START[status]
    if event in OUTCOME_FOR_EVENT:
        result = decide(start, OUTCOME_FOR_EVENT[event], now=NOW)
    else:
        result = apply_event(start, event, now=NOW)
    expected = EXPECTED[(status, event)]
    if expected is None:
        assert result.state is None and not result.entered_quarantine
        return
    new_status, count, entered = expected
    assert result.state is not None
    assert (result.state.status, result.state.error_count, result.entered_quarantine) == (new_status, count, entered)
    if event in (Event.HARD, Event.SOFT):
        sent = OUTCOME_FOR_EVENT[event]
        assert result.state.last_error_at == NOW
        assert (result.state.failure_type, result.state.failure_reason, result.state.error_text) == (
            sent.failure_type,
            sent.failure_reason,
            sent.error_text,
        )


def test_undefined_failures_are_ignored_like_ignored_ones() -> None:
    assert event_for(outcome(FailureType.UNDEFINED, FailureReason.UNREACHABLE)) is Event.IGNORED
    for status, start in START.items():
        assert decide(start, outcome(FailureType.UNDEFINED), now=NOW).state is None, status


def test_no_row_and_success_writes_nothing() -> None:
    assert decide(None, outcome(None), now=NOW).state is None
    assert decide(None, outcome(FailureType.IGNORED), now=NOW).state is None


def test_no_row_hard_failure_quarantines() -> None:
    result = decide(None, OUTCOME_FOR_EVENT[Event.HARD], now=NOW)
    assert result.state is not None and result.state.status is Q and result.entered_quarantine
    assert result.state.first_error_at == NOW


def test_soft_threshold_quarantines_on_the_fifth_error() -> None:
    state: QuarantineState | None = None
    entered = []
    for i in range(6):
        now = NOW + timedelta(hours=i)
        result = decide(state, OUTCOME_FOR_EVENT[Event.SOFT], now=now)
        if result.state is not None:
            state = result.state
        entered.append(result.entered_quarantine)
    assert state is not None and state.status is Q and state.error_count == 5
    assert entered == [False, False, False, False, True, False]
    assert state.first_error_at == NOW


def test_threshold_is_configurable() -> None:
    policy = QuarantinePolicy(threshold=2)
    first = decide(None, OUTCOME_FOR_EVENT[Event.SOFT], now=NOW, policy=policy).state
    second = decide(first, OUTCOME_FOR_EVENT[Event.SOFT], now=NOW, policy=policy)
    assert first is not None and first.status is W
    assert second.state is not None and second.state.status is Q and second.entered_quarantine


def test_counter_restarts_at_one_after_ten_quiet_days() -> None:
    start = replace(START[W], error_count=4, last_error_at=NOW - timedelta(days=10, seconds=1))
    result = decide(start, OUTCOME_FOR_EVENT[Event.SOFT], now=NOW)
    assert result.state is not None
    assert (result.state.status, result.state.error_count, result.state.first_error_at) == (W, 1, NOW)


def test_counter_keeps_counting_at_exactly_ten_days() -> None:
    start = replace(START[W], error_count=4, last_error_at=NOW - timedelta(days=10))
    result = decide(start, OUTCOME_FOR_EVENT[Event.SOFT], now=NOW)
    assert result.state is not None and result.state.status is Q and result.state.error_count == 5


def test_reset_window_is_configurable() -> None:
    start = replace(START[W], error_count=4, last_error_at=NOW - timedelta(days=3))
    result = decide(start, OUTCOME_FOR_EVENT[Event.SOFT], now=NOW, policy=QuarantinePolicy(reset_after=timedelta(days=2)))
    assert result.state is not None and result.state.error_count == 1


@pytest.mark.parametrize("scope", [Scope.PROVIDER, Scope.MESSAGE])
@pytest.mark.parametrize("event", list(OUTCOME_FOR_EVENT))
@pytest.mark.parametrize("status", list(START))
def test_non_token_scope_never_changes_anything(scope: Scope, event: Event, status: QuarantineStatus) -> None:
    result = decide(START[status], OUTCOME_FOR_EVENT[event].with_(scope=scope), now=NOW)
    assert result.state is None and not result.entered_quarantine and result.event is None


@pytest.mark.parametrize("scope", list(Scope))
@pytest.mark.parametrize("event", list(OUTCOME_FOR_EVENT))
def test_may_change_is_false_only_where_decide_changes_nothing(scope: Scope, event: Event) -> None:
    # The pipeline skips the quarantine lookup when may_change is False: that must never hide a change.
    out = OUTCOME_FOR_EVENT[event].with_(scope=scope)
    changes = [decide(START[s], out, now=NOW).state is not None for s in START]
    changes.append(decide(None, out, now=NOW).state is not None)
    if not may_change(out):
        assert not any(changes)
    assert may_change(out) == (scope is Scope.TOKEN and event is not Event.IGNORED)


@pytest.mark.parametrize("scope", list(Scope))
@pytest.mark.parametrize("event", list(OUTCOME_FOR_EVENT))
def test_may_change_valid_is_false_only_where_a_valid_entry_stays_as_it_is(scope: Scope, event: Event) -> None:
    # The pipeline skips the lookup for tokens analysis saw valid (or without an entry) on this answer.
    out = OUTCOME_FOR_EVENT[event].with_(scope=scope)
    if not may_change_valid(out):
        assert decide(START[QuarantineStatus.VALID], out, now=NOW).state is None
        assert decide(None, out, now=NOW).state is None
    assert may_change(out) or not may_change_valid(out)
    assert may_change_valid(out) == (scope is Scope.TOKEN and event in (Event.HARD, Event.SOFT))


def test_apns_410_older_than_registration_is_ignored() -> None:
    registered = NOW - timedelta(hours=1)
    stale = OUTCOME_FOR_EVENT[Event.HARD].with_(provider_timestamp=registered - timedelta(seconds=1))
    fresh = OUTCOME_FOR_EVENT[Event.HARD].with_(provider_timestamp=registered + timedelta(seconds=1))
    assert decide(None, stale, now=NOW, registered_at=registered).state is None
    assert decide(START[W], stale, now=NOW, registered_at=registered).state is None
    result = decide(None, fresh, now=NOW, registered_at=registered)
    assert result.state is not None and result.state.status is Q
    assert result.state.provider_timestamp == fresh.provider_timestamp
    # Unknown registration time: the 410 counts.
    assert decide(None, stale, now=NOW).entered_quarantine


def test_cleanup_event_windows() -> None:
    soft = replace(START[W], last_error_at=NOW - timedelta(days=10, seconds=1))
    assert cleanup_event(soft, now=NOW) is Event.CLEANUP
    assert cleanup_event(replace(soft, last_error_at=NOW - timedelta(days=10)), now=NOW) is None
    full = replace(soft, failure_reason=FailureReason.MAILBOX_FULL, last_error_at=NOW - timedelta(days=29))
    assert cleanup_event(full, now=NOW) is None
    full = replace(full, last_error_at=NOW - timedelta(days=30, seconds=1))
    assert cleanup_event(full, now=NOW) is Event.CLEANUP_MAILBOX_FULL
    assert cleanup_event(QuarantineState(), now=NOW) is None


def test_releasable_statuses_come_from_the_table() -> None:
    assert RELEASABLE == {W, Q, D}


def test_policy_validates() -> None:
    with pytest.raises(ValueError):
        QuarantinePolicy(threshold=0)
    with pytest.raises(ValueError):
        QuarantinePolicy(reset_after=timedelta(0))


_outcomes = st.sampled_from(
    [
        OUTCOME_FOR_EVENT[Event.HARD],
        OUTCOME_FOR_EVENT[Event.SOFT],
        OUTCOME_FOR_EVENT[Event.IGNORED],
        OUTCOME_FOR_EVENT[Event.SUCCESS],
        outcome(FailureType.UNDEFINED),
        OUTCOME_FOR_EVENT[Event.HARD].with_(scope=Scope.MESSAGE),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(_outcomes, st.integers(min_value=0, max_value=15 * 24)), max_size=30),
    start=st.sampled_from(list(START)),
)
def test_outcomes_never_leave_quarantine_and_counts_stay_bounded(
    steps: list[tuple[Outcome, int]], start: QuarantineStatus
) -> None:
    state: QuarantineState | None = START[start] if start is not V else None
    now = NOW
    entered = 0
    for sent, hours_later in steps:
        now += timedelta(hours=hours_later)
        before = state.status if state else V
        result = decide(state, sent, now=now)
        entered += result.entered_quarantine
        if result.state is not None:
            state = result.state
        after = state.status if state else V
        if before in (Q, D):
            assert after is before
        if after is W:
            assert 1 <= state.error_count < QuarantinePolicy().threshold  # type: ignore[union-attr]
    assert entered <= 1
