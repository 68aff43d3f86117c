"""What a delivery was started with, and closing one an operator gives up on.

A resume matches notifications to ``delivery_log`` rows by position, so resuming
with a different input would silently mix two audiences. The delivery row keeps
a fingerprint of its first notifications (up to 100, whatever the chunk size)
and the count when the caller knows it; a resume whose input differs is refused
unless forced.

``abandon`` closes an unfinished delivery: rows still ``pending`` become
``excluded`` and rows waiting for a retry become ``failed`` (keeping the
failure they had), each with the reason, so nothing is left in limbo.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from push import jsoncodec
from push.errors import ValidationError
from push.outcomes import FailureReason, FailureType
from tables.models import DELIV, DLOG, LogStatus

ABANDON_REASON_MAX = 500


# What identifies an input: who gets what. Not the expiration, which callers often compute from
# the current time, so the same input handed in again after a crash would look different.
_FINGERPRINTED = ("token", "platform", "app", "profile_id", "title", "body", "data", "payload", "collapse_id",
                  "push_type")


FINGERPRINT_COUNT = 100  # leading notifications fingerprinted, whatever the chunk size


def fingerprint(chunk: Sequence[tuple[int, Any]], count: int = FINGERPRINT_COUNT) -> str:
    """``"<n>:<SHA-256>"`` of the first ``n`` (at most ``count``) notifications of a chunk (recipient and
    content, in order), so a resume with another chunk size computes the same value."""
    h = hashlib.sha256()
    head = chunk[:count]
    for seq, n in head:
        h.update(f"{seq}\0".encode())
        fields = {k: getattr(n, k) for k in _FINGERPRINTED}
        fields["data"], fields["payload"] = dict(n.data), dict(n.payload) if n.payload is not None else None
        h.update(jsoncodec.dumps(fields, sort_keys=True))
    return f"{len(head)}:{h.hexdigest()[:56]}"


def _same_input(stored: str, chunk: Sequence[tuple[int, Any]]) -> bool:
    count, _, _ = stored.partition(":")
    return count.isdigit() and fingerprint(chunk, int(count)) == stored


def check_input(conn: Connection, delivery_id: str, first: Sequence[tuple[int, Any]], count: int | None, *,
                resumed: bool, force: bool = False) -> None:
    """Store the input's fingerprint on a new delivery; refuse a resume whose input differs.

    Deliveries written before fingerprints existed take the new one without a check.
    """
    row = conn.execute(sa.select(DELIV.c.input_fingerprint, DELIV.c.input_count, DELIV.c.abandoned_at)
                       .where(DELIV.c.id == delivery_id)).one()
    if resumed and row.abandoned_at is not None:
        raise ValidationError("delivery", f"delivery {delivery_id!r} was abandoned on "
                              f"{row.abandoned_at:%Y-%m-%d %H:%M}; send under a new delivery id")
    if resumed and row.input_fingerprint is not None and not force:
        if not _same_input(row.input_fingerprint, first):
            raise ValidationError("delivery", f"delivery {delivery_id!r} was started with different input "
                                  "(its first chunk differs); use a new delivery id, or resume it anyway "
                                  "with --force (force=True in Python): rows already recorded keep their "
                                  "outcome, the rest are matched by position")
        if count is not None and row.input_count is not None and count != row.input_count:
            raise ValidationError("delivery", f"delivery {delivery_id!r} was started with {row.input_count} "
                                  f"notifications, this input has {count}; use a new delivery id, or resume "
                                  "it anyway with --force (force=True in Python)")
    values: dict[str, Any] = {"input_fingerprint": fingerprint(first)}
    if count is not None:
        values["input_count"] = count
    conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id).values(**values))


@dataclass(frozen=True)
class Abandoned:
    delivery_id: str
    excluded: int  # rows that were pending (never sent, or in doubt)
    failed: int  # rows that were waiting for a retry


def abandon(conn: Connection, delivery_id: str, *, reason: str, by: str, now: datetime) -> Abandoned:
    """Close an unfinished delivery: no row stays ``pending`` or ``retry_pending``."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("reason", "say why the delivery is abandoned")
    if len(reason) > ABANDON_REASON_MAX:
        raise ValidationError("reason", f"is {len(reason)} characters, limit {ABANDON_REASON_MAX}",
                              limit=ABANDON_REASON_MAX)
    row = conn.execute(sa.select(DELIV.c.id).where(DELIV.c.id == delivery_id)).first()
    if row is None:
        raise ValidationError("delivery", f"unknown delivery id {delivery_id!r}")
    text = f"delivery abandoned by {by}: {reason}"
    mine = DLOG.c.delivery_id == delivery_id
    # Pending rows never got an outcome: excluded and ignored (the operator's decision, not the device's).
    excluded = conn.execute(sa.update(DLOG).where(mine, DLOG.c.status == LogStatus.PENDING.value).values(
        status=LogStatus.EXCLUDED.value, failure_type=FailureType.IGNORED.value,
        failure_reason=int(FailureReason.UNDEFINED), error_text=text, next_retry_at=None, updated_at=now)).rowcount
    # Rows waiting for a retry keep the failure they had; they just get no more attempts.
    failed = conn.execute(sa.update(DLOG).where(mine, DLOG.c.status == LogStatus.RETRY_PENDING.value).values(
        status=LogStatus.FAILED.value, next_retry_at=None, updated_at=now,
        error_text=sa.func.coalesce(DLOG.c.error_text + "; ", "") + text)).rowcount
    conn.execute(sa.update(DELIV).where(DELIV.c.id == delivery_id).values(
        abandoned_at=now, abandoned_reason=f"{by}: {reason}", finished_at=sa.func.coalesce(DELIV.c.finished_at, now)))
    return Abandoned(delivery_id, int(excluded or 0), int(failed or 0))
