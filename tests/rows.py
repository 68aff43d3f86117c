"""Rows written straight into the tables, for tests that start from a given state."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tables.models import QUAR


def insert_quarantine(engine: Engine, token: str, *, status: str, at: datetime, platform: str = "apns",
                      app: str = "com.example.app", error_count: int = 1, failure_type: str = "hard",
                      failure_reason: int = 1, provider_timestamp: datetime | None = None) -> None:
    """A quarantine entry whose only error (first, last and latest change) happened ``at``."""
    with engine.begin() as conn:
        conn.execute(sa.insert(QUAR).values(
            platform=platform, app=app, token=token, status=status, error_count=error_count,
            failure_type=failure_type, failure_reason=failure_reason, provider_timestamp=provider_timestamp,
            first_error_at=at, last_error_at=at, updated_at=at))
