"""Bounce qualification rules (seeds 000/002) applied to provider error texts.

Error texts are normalized so that every failure of one kind shares one rule:
variable parts (tokens, ids, numbers, dates) become ``#xxx#`` and addresses
become ``*``, as the seed describes. A rule keeps the first full text seen and
counts occurrences (capped at 100,000). A person can qualify a rule; a
qualified rule overrides the built-in table for that normalized text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Mapping

from push.outcomes import FailureReason, FailureType, Outcome

MAX_OCCURRENCES = 100_000
VAR = "#xxx#"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "*"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"), VAR),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), VAR),
    (re.compile(r"(projects|messages|topics)/[^\s/'\"]+"), r"\1/" + VAR),
    # device tokens and other long opaque ids: long runs of token characters with a digit
    (re.compile(r"\b(?=[\w:-]*\d)[\w:-]{24,}"), VAR),
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), VAR),
    (re.compile(r"\b\d{4,}\b"), VAR),
)


def normalize_error_text(text: str) -> str:
    """Replace the variable parts of an error text so similar errors group together."""
    out = " ".join(str(text).split())
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


class RuleStatus(str, enum.Enum):
    TO_QUALIFY = "to_qualify"
    KEEP = "keep"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class QualificationRule:
    provider: str
    normalized_text: str
    first_text: str
    occurrences: int = 1
    status: RuleStatus = RuleStatus.TO_QUALIFY
    failure_type: FailureType | None = None
    failure_reason: FailureReason | None = None

    @property
    def user_qualified(self) -> bool:
        return self.failure_type is not None or self.failure_reason is not None or self.status is RuleStatus.IGNORE

    def seen(self, times: int = 1) -> "QualificationRule":
        return QualificationRule(self.provider, self.normalized_text, self.first_text,
                                 min(MAX_OCCURRENCES, self.occurrences + times), self.status,
                                 self.failure_type, self.failure_reason)


def apply_rules(outcome: Outcome, provider: str, rules: Mapping[tuple[str, str], QualificationRule]) -> Outcome:
    """Return the outcome as a person qualified it, if a rule for its text says so.

    ``ignore`` means the error never leads to quarantine: it becomes an ignored
    failure. A rule with a type/reason replaces the table's values.
    """
    if outcome.ok or not outcome.error_text:
        return outcome
    rule = rules.get((provider, outcome.error_text))
    if rule is None or not rule.user_qualified:
        return outcome
    if rule.status is RuleStatus.IGNORE:
        return outcome.with_(failure_type=FailureType.IGNORED, rule=outcome.rule + "+rule:ignore")
    return outcome.with_(
        failure_type=rule.failure_type or outcome.failure_type,
        failure_reason=rule.failure_reason if rule.failure_reason is not None else outcome.failure_reason,
        rule=outcome.rule + "+rule",
    )
