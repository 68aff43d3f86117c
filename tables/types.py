"""Column types and time helpers shared by the storage layer.

Every timestamp is timezone-aware UTC in Python. PostgreSQL stores it as
``timestamptz``; SQLite has no time zone support, so there we store naive UTC
text and re-attach UTC on the way out. ``UTCDateTime`` does both, so callers
never see a naive datetime coming back from the database.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from push.clock import as_utc  # noqa: F401 - the one rule (aware UTC, naive taken as UTC), kept with the clock


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def require_aware(value: datetime, name: str = "datetime") -> datetime:
    """Reject naive datetimes at the boundary: their zone is a guess we won't make."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value!r})")
    return value.astimezone(timezone.utc)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware-UTC datetime on every backend (``timestamptz`` / naive-UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime, got {type(value).__name__}")
        aware = require_aware(value)
        # SQLite's DATETIME formatter silently drops the offset; give it UTC wall time.
        return aware.replace(tzinfo=None) if dialect.name == "sqlite" else aware

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)
