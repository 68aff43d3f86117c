"""Quarantine state machine for device tokens (seed 003). Pure: no I/O, no clock.

This is the ONE place that says how a token's quarantine status moves. The
rules are data (``TRANSITIONS``, keyed by ``(status, event)``); ``decide`` and
``apply_event`` only read them. Storage (``tables.store``) loads rows, calls
``decide`` and writes the result back.

Rules, in short:

* hard failure                 -> ``quarantine`` at once
* soft failure                 -> ``with_errors``, error_count + 1; reaching
                                  ``policy.threshold`` -> ``quarantine``. The
                                  counter restarts at 1 when the previous error
                                  is older than ``policy.reset_after`` (10 days).
* ignored / undefined failure  -> no change
* success                      -> ``with_errors`` back to ``valid`` (count 0)
* manual release               -> anything non-valid back to ``valid`` (count 0)
* cleanup                      -> ``with_errors`` back to ``valid`` once the last
                                  error is older than 10 days (30 for mailbox full)
* ``quarantine`` / ``denylisted`` are only ever left by a manual release.

Two guards run before the table: an outcome whose scope is not ``token`` never
changes anything (our payload or the provider was at fault, not the device),
and an APNs 410 whose timestamp predates the token's latest registration is
stale (the app was reinstalled / re-registered since) and is ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from push.outcomes import FailureReason, FailureType, Outcome, Scope


class QuarantineStatus(str, enum.Enum):
    VALID = "valid"
    WITH_ERRORS = "with_errors"
    QUARANTINE = "quarantine"
    DENYLISTED = "denylisted"


class Event(str, enum.Enum):
    HARD = "hard"
    SOFT = "soft"
    IGNORED = "ignored"  # ignored *and* undefined failures: never move a counter
    SUCCESS = "success"
    RELEASE = "release"  # manual / bulk release by an operator
    CLEANUP = "cleanup"  # last error older than reset_after (10 days)
    CLEANUP_MAILBOX_FULL = "cleanup_mailbox_full"  # mailbox full older than 30 days


class Counter(enum.Enum):
    KEEP = "keep"
    INCREMENT = "increment"  # +1, or restart at 1 when the last error is stale
    RESET = "reset"  # back to 0


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table. ``status=None`` means "status unchanged"."""

    status: QuarantineStatus | None
    counter: Counter = Counter.KEEP
    escalate: bool = False  # after incrementing, count >= threshold -> quarantine

    @property
    def is_noop(self) -> bool:
        return self.status is None and self.counter is Counter.KEEP


NO_CHANGE = Rule(None)

_V, _W, _Q, _D = (
    QuarantineStatus.VALID,
    QuarantineStatus.WITH_ERRORS,
    QuarantineStatus.QUARANTINE,
    QuarantineStatus.DENYLISTED,
)
_TO_VALID = Rule(_V, Counter.RESET)

# Every (status, event) pair is listed, so a missing row is a bug the tests catch
# rather than a silent default.
TRANSITIONS: dict[tuple[QuarantineStatus, Event], Rule] = {
    (_V, Event.HARD): Rule(_Q, Counter.INCREMENT),
    (_V, Event.SOFT): Rule(_W, Counter.INCREMENT, escalate=True),
    (_V, Event.IGNORED): NO_CHANGE,
    (_V, Event.SUCCESS): NO_CHANGE,
    (_V, Event.RELEASE): NO_CHANGE,
    (_V, Event.CLEANUP): NO_CHANGE,
    (_V, Event.CLEANUP_MAILBOX_FULL): NO_CHANGE,
    (_W, Event.HARD): Rule(_Q, Counter.INCREMENT),
    (_W, Event.SOFT): Rule(_W, Counter.INCREMENT, escalate=True),
    (_W, Event.IGNORED): NO_CHANGE,
    (_W, Event.SUCCESS): _TO_VALID,
    (_W, Event.RELEASE): _TO_VALID,
    (_W, Event.CLEANUP): _TO_VALID,
    (_W, Event.CLEANUP_MAILBOX_FULL): _TO_VALID,
    # Seed 003: quarantine and denylisted are never removed automatically,
    # "even if they receive an email" - only an operator releases them.
    (_Q, Event.HARD): NO_CHANGE,
    (_Q, Event.SOFT): NO_CHANGE,
    (_Q, Event.IGNORED): NO_CHANGE,
    (_Q, Event.SUCCESS): NO_CHANGE,
    (_Q, Event.RELEASE): _TO_VALID,
    (_Q, Event.CLEANUP): NO_CHANGE,
    (_Q, Event.CLEANUP_MAILBOX_FULL): NO_CHANGE,
    (_D, Event.HARD): NO_CHANGE,
    (_D, Event.SOFT): NO_CHANGE,
    (_D, Event.IGNORED): NO_CHANGE,
    (_D, Event.SUCCESS): NO_CHANGE,
    (_D, Event.RELEASE): _TO_VALID,
    (_D, Event.CLEANUP): NO_CHANGE,
    (_D, Event.CLEANUP_MAILBOX_FULL): NO_CHANGE,
}

# Statuses a manual release acts on, derived from the table so they cannot drift.
RELEASABLE: frozenset[QuarantineStatus] = frozenset(
    status for (status, event), rule in TRANSITIONS.items() if event is Event.RELEASE and not rule.is_noop
)


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    threshold: int = 5  # soft errors in a row (within reset_after) before quarantine
    reset_after: timedelta = timedelta(days=10)
    mailbox_full_reset_after: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.reset_after <= timedelta(0) or self.mailbox_full_reset_after <= timedelta(0):
            raise ValueError("reset windows must be positive")

    @classmethod
    def from_config(cls, config: Any) -> "QuarantinePolicy":
        """The policy a ``PushConfig`` sets (``PUSH_QUARANTINE_*``, ``PUSH_MAILBOX_FULL_RELEASE_DAYS``)."""
        return cls(threshold=config.quarantine_threshold, reset_after=timedelta(days=config.quarantine_reset_days),
                   mailbox_full_reset_after=timedelta(days=config.mailbox_full_release_days))


@dataclass(frozen=True, slots=True)
class QuarantineState:
    """What the ``quarantine`` table holds for one (platform, app, token)."""

    status: QuarantineStatus = QuarantineStatus.VALID
    error_count: int = 0
    failure_type: FailureType | None = None
    failure_reason: FailureReason | None = None
    error_text: str | None = None
    provider_timestamp: datetime | None = None
    first_error_at: datetime | None = None  # first error of the current streak
    last_error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """``state`` is the new state to write, or None when nothing changes."""

    state: QuarantineState | None
    entered_quarantine: bool
    event: Event | None  # None when a guard (scope, stale 410) stopped the outcome

    @property
    def changed(self) -> bool:
        return self.state is not None


_FAILURE_EVENTS: dict[FailureType, Event] = {
    FailureType.HARD: Event.HARD,
    FailureType.SOFT: Event.SOFT,
    FailureType.IGNORED: Event.IGNORED,
    FailureType.UNDEFINED: Event.IGNORED,
}


def event_for(outcome: Outcome) -> Event:
    return Event.SUCCESS if outcome.failure_type is None else _FAILURE_EVENTS[outcome.failure_type]


# Events that change no entry whatever its status (ignored / undefined failures). Derived from the
# table so it cannot drift.
_INERT_EVENTS = frozenset(e for e in Event if all(TRANSITIONS[(s, e)].is_noop for s in QuarantineStatus))


def may_change(outcome: Outcome) -> bool:
    """False when ``decide`` leaves every entry as it is for this outcome, whatever the entry's
    state: callers can skip looking the entry up."""
    return outcome.scope is Scope.TOKEN and event_for(outcome) not in _INERT_EVENTS


def may_change_valid(outcome: Outcome) -> bool:
    """``may_change`` for a token that had no entry, or a ``valid`` one, when its delivery was
    analysed: False when ``decide`` leaves such an entry as it is (a success, for one).

    An entry another writer has changed since (a failure in a concurrent delivery) is treated as
    changed after this outcome: the two are concurrent, and that order is as true as the other.
    """
    return outcome.scope is Scope.TOKEN and not TRANSITIONS[(QuarantineStatus.VALID, event_for(outcome))].is_noop


def decide(
    current: QuarantineState | None,
    outcome: Outcome,
    *,
    now: datetime,
    registered_at: datetime | None = None,
    policy: QuarantinePolicy = QuarantinePolicy(),
) -> Transition:
    """The quarantine effect of one send ``outcome`` on a token in state ``current``.

    ``current=None`` means the token has no quarantine row yet (it is valid).
    ``registered_at`` is the subscription's last registration, for the APNs 410 rule.
    """
    if outcome.scope is not Scope.TOKEN:
        return Transition(None, False, None)
    if (
        outcome.provider_timestamp is not None
        and registered_at is not None
        and outcome.provider_timestamp < registered_at
    ):
        return Transition(None, False, None)
    return apply_event(current, event_for(outcome), now=now, policy=policy, outcome=outcome)


def cleanup_event(
    state: QuarantineState, *, now: datetime, policy: QuarantinePolicy = QuarantinePolicy()
) -> Event | None:
    """Which cleanup event (if any) is due for ``state`` at ``now``.

    Mailbox-full errors get the longer window; everything else the 10-day one.
    """
    if state.last_error_at is None:
        return None
    age = now - state.last_error_at
    if state.failure_reason is FailureReason.MAILBOX_FULL:
        return Event.CLEANUP_MAILBOX_FULL if age > policy.mailbox_full_reset_after else None
    return Event.CLEANUP if age > policy.reset_after else None


def apply_event(
    current: QuarantineState | None,
    event: Event,
    *,
    now: datetime,
    policy: QuarantinePolicy = QuarantinePolicy(),
    outcome: Outcome | None = None,
) -> Transition:
    """Look ``event`` up in ``TRANSITIONS`` and build the resulting state."""
    before = current or QuarantineState()
    rule = TRANSITIONS[(before.status, event)]
    if rule.is_noop:
        return Transition(None, False, event)

    after = before
    if rule.counter is Counter.INCREMENT:
        after = _record_error(before, outcome, now=now, policy=policy)
    elif rule.counter is Counter.RESET:
        # Keep the last error fields as history; only status and counter reset.
        after = replace(before, error_count=0)

    status = rule.status or before.status
    if rule.escalate and after.error_count >= policy.threshold:
        status = QuarantineStatus.QUARANTINE
    after = replace(after, status=status)
    if after == before:
        return Transition(None, False, event)
    entered = status is QuarantineStatus.QUARANTINE and before.status is not QuarantineStatus.QUARANTINE
    return Transition(after, entered, event)


def _record_error(
    before: QuarantineState, outcome: Outcome | None, *, now: datetime, policy: QuarantinePolicy
) -> QuarantineState:
    stale = before.last_error_at is None or now - before.last_error_at > policy.reset_after
    fresh_streak = stale or before.error_count == 0
    return replace(
        before,
        error_count=1 if fresh_streak else before.error_count + 1,
        first_error_at=now if fresh_streak or before.first_error_at is None else before.first_error_at,
        last_error_at=now,
        failure_type=outcome.failure_type if outcome else before.failure_type,
        failure_reason=outcome.failure_reason if outcome else before.failure_reason,
        error_text=outcome.error_text if outcome else before.error_text,
        provider_timestamp=outcome.provider_timestamp if outcome else before.provider_timestamp,
    )
