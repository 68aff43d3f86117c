"""A person qualifies a provider error text (seed: delivery log qualification)."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import Connection

from push.outcomes import FailureReason, FailureType
from push.qualification import normalize_error_text
from tables.models import RULE


def qualify_rule(conn: Connection, *, provider: str, text: str, status: str, failure_type: FailureType | None,
                 failure_reason: FailureReason | None, now: datetime | None = None) -> bool:
    """Set a rule's qualification, creating it if the text was never seen. Returns True if created."""
    now = now or datetime.now(timezone.utc)
    normalized = normalize_error_text(text)[:1024]
    values = {"status": status, "failure_type": failure_type.value if failure_type else None,
              "failure_reason": int(failure_reason) if failure_reason is not None else None, "updated_at": now}
    updated = conn.execute(sa.update(RULE).where(RULE.c.provider == provider, RULE.c.normalized_text == normalized)
                           .values(**values)).rowcount
    if updated:
        return False
    conn.execute(sa.insert(RULE).values(provider=provider, normalized_text=normalized, first_text=text,
                                        occurrences=0, created_at=now, **values))
    return True
