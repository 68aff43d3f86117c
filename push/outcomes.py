"""Outcome values: what one send attempt ended as.

These are plain, frozen values with no I/O. A provider saying "no" is an
``Outcome``, never an exception; exceptions are reserved for our own faults
(see ``push.errors``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class FailureType(str, enum.Enum):
    """Seed 004 failure types, plus ``undefined`` (seed 003, iOS "connection lost").

    ``undefined`` never moves a quarantine counter. Success has no failure type.
    """

    HARD = "hard"
    SOFT = "soft"
    IGNORED = "ignored"
    UNDEFINED = "undefined"


class FailureReason(enum.IntEnum):
    """Seed 004 failure reasons with their technical values."""

    UNDEFINED = 0
    USER_UNKNOWN = 1
    INVALID_DOMAIN = 2
    UNREACHABLE = 3
    ACCOUNT_DISABLED = 4
    MAILBOX_FULL = 5
    NOT_CONNECTED = 6
    ADDRESS_NOT_SPECIFIED = 7
    DENYLISTED = 8
    QUARANTINED = 9
    DUPLICATE = 10
    EXCLUDED_BY_SQL_RULE = 11
    EXCLUDED_AFTER_ARBITRATION = 12
    POOR_QUALITY = 14
    NOT_QUALIFIED = 15
    NOT_ELIGIBLE_FOR_OFFERS = 16
    TARGET_SIZE_LIMITED = 17
    REFUSED = 20
    ERROR_IGNORED = 25
    CONTROL_GROUP = 127

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class Scope(str, enum.Enum):
    """Whom an outcome is about; only ``token`` outcomes move quarantine counters.

    ``message`` is our own request being malformed (payload too big, bad header):
    the device is fine, so its counter must not move either.
    """

    TOKEN = "token"
    PROVIDER = "provider"
    MESSAGE = "message"


class Action(str, enum.Enum):
    """What the client should do right away, before recording the outcome."""

    NONE = "none"
    REFRESH_AUTH = "refresh_auth"  # mint a new JWT / OAuth token and resend once
    RECONNECT = "reconnect"  # drop this connection; the next send opens a new one


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict for one notification send."""

    failure_type: FailureType | None
    failure_reason: FailureReason
    retry: bool
    scope: Scope
    rule: str
    error_text: str = ""
    raw_error_text: str = ""
    provider_status: int | None = None
    provider_reason: str | None = None
    retry_after: float | None = None
    provider_timestamp: datetime | None = None
    provider_id: str | None = None
    action: Action = Action.NONE
    # Why the request provably never reached the provider, if it did not: "connect" (no connection
    # or stream could be had) or "bounced" (refused or cut by GOAWAY before processing, more often
    # than the transport resends). Such a request may be sent again without risk of a duplicate,
    # and costs no attempt. Empty: it was answered, or may have been processed.
    unsent: str = ""

    @property
    def ok(self) -> bool:
        return self.failure_type is None

    def with_(self, **changes: object) -> "Outcome":
        return replace(self, **changes)  # type: ignore[arg-type]
