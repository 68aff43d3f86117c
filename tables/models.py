"""SQLModel tables. Table and column names are a public contract: users query them.

Conventions:

* Every timestamp column is ``UTCDateTime``: aware UTC in Python, ``timestamptz``
  on PostgreSQL, naive-UTC text on SQLite (see ``tables.types``).
* Status columns are short strings guarded by CHECK constraints, so raw SQL
  users cannot write a value the code does not understand.
* ``failure_reason`` columns hold the integer of ``push.outcomes.FailureReason``;
  ``failure_type`` columns hold the string of ``push.outcomes.FailureType``.
* Constraint and index names are explicit so the migration matches exactly.

The migration in ``tables/migrations/versions`` is written by hand from these
classes; ``tests/test_tables_migrations.py`` checks that the two agree.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from push.outcomes import FailureType
from push.qualification import MAX_OCCURRENCES, RuleStatus
from push.quarantine import QuarantineStatus
from tables.types import UTCDateTime, utc_now


class Platform(str, enum.Enum):
    """Known platforms; the column is free text so a new provider needs no migration."""

    APNS = "apns"
    FCM = "fcm"


class LogStatus(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    EXCLUDED = "excluded"
    RETRY_PENDING = "retry_pending"


class ExclusionSource(str, enum.Enum):
    ANALYSIS = "analysis"
    OPT_OUT_JOB = "opt_out_job"


class JobStatus(str, enum.Enum):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"


def _in(column: str, values: type[enum.Enum], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def _ts(*, nullable: bool = False, server_now: bool = False) -> Any:
    """A UTC timestamp field. Required timestamps default to now in Python, and
    (for created/updated) in SQL too, so raw-SQL inserts get sane values."""
    kwargs: dict[str, Any] = {"server_default": sa.text("CURRENT_TIMESTAMP")} if server_now else {}
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True)
    return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False, sa_column_kwargs=kwargs)


def _int(default: int = 0) -> Any:
    return Field(default=default, nullable=False, sa_column_kwargs={"server_default": str(default)})


def _status(default: enum.Enum) -> Any:
    return Field(
        default=default.value, max_length=16, nullable=False, sa_column_kwargs={"server_default": default.value}
    )


# Large, append-heavy tables use BIGINT on PostgreSQL; SQLite needs INTEGER for rowid aliasing.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

def _failure_type_check(table: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in FailureType)
    return sa.CheckConstraint(f"failure_type IS NULL OR failure_type IN ({allowed})", name=f"ck_{table}_failure_type")


class AppSubscription(SQLModel, table=True):
    """A device token registered for an app, optionally linked to a profile."""

    __tablename__ = "app_subscription"
    __table_args__ = (
        sa.UniqueConstraint("platform", "app", "token", name="uq_app_subscription_platform_app_token"),
        sa.Index("ix_app_subscription_profile_id", "profile_id"),
        # The opt-out job and reports look for recently disabled subscriptions.
        sa.Index("ix_app_subscription_disabled_at", "disabled_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    app: str = Field(max_length=255)
    platform: str = Field(max_length=32)
    token: str = Field(max_length=1024)
    profile_id: str | None = Field(default=None, max_length=255)
    disabled: bool = Field(default=False, nullable=False, sa_column_kwargs={"server_default": sa.false()})
    disabled_at: datetime | None = _ts(nullable=True)
    disabled_reason: int | None = Field(default=None)
    registered_at: datetime = _ts()
    created_at: datetime = _ts(server_now=True)
    updated_at: datetime = _ts(server_now=True)


class Quarantine(SQLModel, table=True):
    """Quarantine state of one (platform, app, token); see ``push.quarantine``."""

    __tablename__ = "quarantine"
    __table_args__ = (
        sa.UniqueConstraint("platform", "app", "token", name="uq_quarantine_platform_app_token"),
        # Bulk release and the opt-out job filter by status and modification time.
        sa.Index("ix_quarantine_status_updated_at", "status", "updated_at"),
        _in("status", QuarantineStatus, "ck_quarantine_status"),
        _failure_type_check("quarantine"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    app: str = Field(max_length=255)
    token: str = Field(max_length=1024)
    status: str = _status(QuarantineStatus.VALID)
    error_count: int = _int()
    failure_type: str | None = Field(default=None, max_length=16)
    failure_reason: int | None = Field(default=None)
    error_text: str | None = Field(default=None, sa_type=sa.Text)
    provider_timestamp: datetime | None = _ts(nullable=True)
    first_error_at: datetime | None = _ts(nullable=True)
    last_error_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts(server_now=True)


class Denylist(SQLModel, table=True):
    """A profile that must not be contacted on a channel (opt-out)."""

    __tablename__ = "denylist"
    __table_args__ = (sa.UniqueConstraint("profile_id", "channel", name="uq_denylist_profile_id_channel"),)

    id: int | None = Field(default=None, primary_key=True)
    profile_id: str = Field(max_length=255)
    channel: str = Field(max_length=32)
    created_at: datetime = _ts(server_now=True)
    reason: str | None = Field(default=None, sa_type=sa.Text)


def new_delivery_id() -> str:
    return uuid.uuid4().hex


class Delivery(SQLModel, table=True):
    """One send run, with its summary counters."""

    __tablename__ = "delivery"

    id: str = Field(default_factory=new_delivery_id, primary_key=True, max_length=64)
    label: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts(server_now=True)
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    to_deliver: int = _int()
    excluded: int = _int()
    sent: int = _int()
    failed: int = _int()
    retry_pending: int = _int()
    quarantined_at_analysis: int = _int()
    quarantined_after_delivery: int = _int()
    resent_in_doubt: int = _int()  # retries of sends that may already have been delivered
    # Migration 0003 (see tables.delivery_input): what the input was, and whether an operator closed it.
    input_fingerprint: str | None = Field(default=None, max_length=64)
    input_count: int | None = Field(default=None)
    abandoned_at: datetime | None = _ts(nullable=True)
    abandoned_reason: str | None = Field(default=None, sa_type=sa.Text)
    # Migration 0004 (see push.shards): a delivery prepared for many workers, and its shard layout.
    shard_size: int | None = Field(default=None)
    prepared_count: int | None = Field(default=None)
    prepared_at: datetime | None = _ts(nullable=True)


class DeliveryLog(SQLModel, table=True):
    """One notification of a delivery; ``(delivery_id, seq)`` makes resume idempotent."""

    __tablename__ = "delivery_log"
    __table_args__ = (
        sa.UniqueConstraint("delivery_id", "seq", name="uq_delivery_log_delivery_id_seq"),
        # The retry job: WHERE status = 'retry_pending' AND next_retry_at <= now.
        sa.Index("ix_delivery_log_status_next_retry_at", "status", "next_retry_at"),
        sa.Index("ix_delivery_log_platform_app_token", "platform", "app", "token"),
        _in("status", LogStatus, "ck_delivery_log_status"),
        _failure_type_check("delivery_log"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    delivery_id: str = Field(
        max_length=64,
        sa_column_args=[sa.ForeignKey("delivery.id", name="fk_delivery_log_delivery_id", ondelete="CASCADE")],
    )
    seq: int
    token: str = Field(max_length=1024)
    platform: str = Field(max_length=32)
    app: str = Field(max_length=255)
    profile_id: str | None = Field(default=None, max_length=255)
    status: str = _status(LogStatus.PENDING)
    failure_type: str | None = Field(default=None, max_length=16)
    failure_reason: int | None = Field(default=None)
    error_text: str | None = Field(default=None, sa_type=sa.Text)
    provider_status: int | None = Field(default=None)
    provider_reason: str | None = Field(default=None, max_length=255)
    provider_id: str | None = Field(default=None, max_length=255)
    attempts: int = _int()
    next_retry_at: datetime | None = _ts(nullable=True)
    expires_at: datetime | None = _ts(nullable=True)
    payload: str | None = Field(default=None, sa_type=sa.Text)  # JSON text, re-sent by the retry job
    # The runner that won this row (compare-and-set) just before sending it; only it writes the outcome.
    claimed_by: str | None = Field(default=None, max_length=32)
    created_at: datetime = _ts(server_now=True)
    updated_at: datetime = _ts(server_now=True)


class ExclusionLog(SQLModel, table=True):
    """A token left out of a delivery (analysis) or disabled by the opt-out job.

    Idempotency: analysis rows are unique per (delivery_id, platform, app, token);
    opt-out job rows are unique per (source, subscription_id, event_at), where
    ``event_at`` is the subscription's ``disabled_at`` for the disable event being
    recorded. A re-run of the job sees the same disabled_at and writes nothing;
    a later disable of the same subscription is a new event and is recorded.
    NULLs are distinct in both backends, so each constraint only binds the rows
    it is meant for.
    """

    __tablename__ = "exclusion_log"
    __table_args__ = (
        sa.UniqueConstraint(
            "delivery_id", "platform", "app", "token", name="uq_exclusion_log_delivery_id_platform_app_token"
        ),
        sa.UniqueConstraint(
            "source", "subscription_id", "event_at", name="uq_exclusion_log_source_subscription_id_event_at"
        ),
        sa.Index("ix_exclusion_log_platform_app_token", "platform", "app", "token"),
        sa.Index("ix_exclusion_log_created_at", "created_at"),
        _in("source", ExclusionSource, "ck_exclusion_log_source"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    delivery_id: str | None = Field(
        default=None,
        max_length=64,
        sa_column_args=[sa.ForeignKey("delivery.id", name="fk_exclusion_log_delivery_id", ondelete="CASCADE")],
    )
    subscription_id: int | None = Field(
        default=None,
        sa_column_args=[
            sa.ForeignKey("app_subscription.id", name="fk_exclusion_log_subscription_id", ondelete="SET NULL")
        ],
    )
    token: str = Field(max_length=1024)
    platform: str = Field(max_length=32)
    app: str = Field(max_length=255)
    failure_reason: int
    reason_text: str | None = Field(default=None, sa_type=sa.Text)
    source: str = Field(max_length=16)
    event_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts(server_now=True)


class QualificationRuleRow(SQLModel, table=True):
    """Provider error texts grouped by normalized form (seed 004 "delivery log qualification")."""

    __tablename__ = "qualification_rule"
    __table_args__ = (
        sa.UniqueConstraint("provider", "normalized_text", name="uq_qualification_rule_provider_normalized_text"),
        sa.Index("ix_qualification_rule_status", "status"),
        sa.CheckConstraint(
            f"occurrences >= 0 AND occurrences <= {MAX_OCCURRENCES}", name="ck_qualification_rule_occurrences"
        ),
        _in("status", RuleStatus, "ck_qualification_rule_status"),
        _failure_type_check("qualification_rule"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    normalized_text: str = Field(max_length=1024)
    first_text: str = Field(sa_type=sa.Text)
    occurrences: int = _int(1)
    status: str = _status(RuleStatus.TO_QUALIFY)
    failure_type: str | None = Field(default=None, max_length=16)
    failure_reason: int | None = Field(default=None)
    created_at: datetime = _ts(server_now=True)
    updated_at: datetime = _ts(server_now=True)


class QuarantineReleaseLog(SQLModel, table=True):
    """Audit trail of manual / bulk releases."""

    __tablename__ = "quarantine_release_log"
    __table_args__ = (sa.Index("ix_quarantine_release_log_platform_app_token", "platform", "app", "token"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    token: str = Field(max_length=1024)
    platform: str = Field(max_length=32)
    app: str = Field(max_length=255)
    previous_status: str = Field(max_length=16)
    released_by: str = Field(sa_type=sa.Text)  # the criteria used, human readable
    created_at: datetime = _ts(server_now=True)


class JobRun(SQLModel, table=True):
    """One run of a background job; ``watermark`` is how far an incremental job got."""

    __tablename__ = "job_run"
    __table_args__ = (
        sa.Index("ix_job_run_job_started_at", "job", "started_at"),
        _in("status", JobStatus, "ck_job_run_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    rows_examined: int = _int()
    rows_changed: int = _int()
    status: str = _status(JobStatus.RUNNING)
    error: str | None = Field(default=None, sa_type=sa.Text)
    watermark: datetime | None = _ts(nullable=True)


class JobLock(SQLModel, table=True):
    """Single-runner lock for jobs on SQLite (PostgreSQL can use advisory locks)."""

    __tablename__ = "job_lock"

    job: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=255)
    acquired_at: datetime = _ts()
    expires_at: datetime = _ts()


ALL_TABLES: tuple[type[SQLModel], ...] = (
    AppSubscription,
    Quarantine,
    Denylist,
    Delivery,
    DeliveryLog,
    ExclusionLog,
    QualificationRuleRow,
    QuarantineReleaseLog,
    JobRun,
    JobLock,
)
TABLE_NAMES: frozenset[str] = frozenset(m.__tablename__ for m in ALL_TABLES)  # type: ignore[misc]

# The Core tables behind the models, for the SQL that bypasses the ORM (bulk statements, raw SQL).
SUBS: sa.Table = AppSubscription.__table__  # type: ignore[attr-defined]
QUAR: sa.Table = Quarantine.__table__  # type: ignore[attr-defined]
DENY: sa.Table = Denylist.__table__  # type: ignore[attr-defined]
DELIV: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
DLOG: sa.Table = DeliveryLog.__table__  # type: ignore[attr-defined]
EXCL: sa.Table = ExclusionLog.__table__  # type: ignore[attr-defined]
RULE: sa.Table = QualificationRuleRow.__table__  # type: ignore[attr-defined]
RELOG: sa.Table = QuarantineReleaseLog.__table__  # type: ignore[attr-defined]
RUNS: sa.Table = JobRun.__table__  # type: ignore[attr-defined]
LOCKS: sa.Table = JobLock.__table__  # type: ignore[attr-defined]
