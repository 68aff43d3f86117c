"""Clocks are passed in, so tests move time instead of sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kw: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kw)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC; a naive value is taken to already be UTC (what SQLite hands back, and
    always UTC because the tables only ever write UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def utc(dt: datetime | None) -> datetime | None:
    """``as_utc`` that lets ``None`` through (naive datetimes are taken as UTC)."""
    return None if dt is None else as_utc(dt)
