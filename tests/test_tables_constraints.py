"""The schema itself enforces the contract: unique keys, allowed values, foreign keys."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from tables.models import (
    AppSubscription,
    Delivery,
    DeliveryLog,
    Denylist,
    ExclusionLog,
    JobLock,
    JobRun,
    QualificationRuleRow,
    Quarantine,
)

NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)


def t(model: Any) -> sa.Table:
    return model.__table__  # type: ignore[no-any-return]


SUB = {"app": "a", "platform": "apns", "token": "tok", "registered_at": NOW}
LOG = {"delivery_id": "d1", "seq": 0, "token": "tok", "platform": "apns", "app": "a"}
EXCL = {"token": "tok", "platform": "apns", "app": "a", "failure_reason": 9}


def insert(engine: Engine, model: Any, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(t(model)).values(**values))


@pytest.fixture
def parents(engine: Engine) -> Engine:
    insert(engine, Delivery, id="d1")
    insert(engine, AppSubscription, **SUB)
    return engine


@pytest.mark.parametrize(
    ("model", "first", "duplicate", "allowed"),
    [
        (AppSubscription, {**SUB, "token": "x"}, {**SUB, "token": "x", "profile_id": "p"}, {**SUB, "token": "x", "app": "b"}),
        (Quarantine, {"platform": "apns", "app": "a", "token": "x"}, {"platform": "apns", "app": "a", "token": "x"},
         {"platform": "fcm", "app": "a", "token": "x"}),
        (Denylist, {"profile_id": "p", "channel": "apns"}, {"profile_id": "p", "channel": "apns"},
         {"profile_id": "p", "channel": "fcm"}),
        (DeliveryLog, LOG, {**LOG, "token": "other"}, {**LOG, "seq": 1}),
        (ExclusionLog, {**EXCL, "delivery_id": "d1", "source": "analysis"},
         {**EXCL, "delivery_id": "d1", "source": "analysis", "failure_reason": 8},
         {**EXCL, "delivery_id": "d1", "source": "analysis", "token": "tok2"}),
        (ExclusionLog, {**EXCL, "subscription_id": 1, "event_at": NOW, "source": "opt_out_job"},
         {**EXCL, "subscription_id": 1, "event_at": NOW, "source": "opt_out_job", "token": "tok2"},
         {**EXCL, "subscription_id": 1, "event_at": datetime(2025, 3, 2, tzinfo=timezone.utc), "source": "opt_out_job"}),
        (QualificationRuleRow, {"provider": "fcm", "normalized_text": "X", "first_text": "x"},
         {"provider": "fcm", "normalized_text": "X", "first_text": "y"},
         {"provider": "apns", "normalized_text": "X", "first_text": "x"}),
        (JobLock, {"job": "opt_out", "holder": "h1", "acquired_at": NOW, "expires_at": NOW},
         {"job": "opt_out", "holder": "h2", "acquired_at": NOW, "expires_at": NOW},
         {"job": "cleanup", "holder": "h2", "acquired_at": NOW, "expires_at": NOW}),
    ],
    ids=["subscription", "quarantine", "denylist", "delivery_log", "exclusion_analysis", "exclusion_job",
         "qualification_rule", "job_lock"],
)
def test_unique_keys(parents: Engine, model: Any, first: dict, duplicate: dict, allowed: dict) -> None:
    insert(parents, model, **first)
    with pytest.raises(sa.exc.IntegrityError):
        insert(parents, model, **duplicate)
    insert(parents, model, **allowed)


def test_nulls_do_not_collide_in_exclusion_keys(parents: Engine) -> None:
    # Job rows have no delivery and analysis rows no event, so each unique key
    # only binds the rows it is meant for (NULLs are distinct on both backends).
    same = {**EXCL, "token": "same"}
    insert(parents, ExclusionLog, **same, delivery_id="d1", source="analysis")
    insert(parents, ExclusionLog, **same, subscription_id=1, event_at=NOW, source="opt_out_job")
    insert(parents, ExclusionLog, **same, subscription_id=None, event_at=NOW, source="opt_out_job")
    insert(parents, ExclusionLog, **same, subscription_id=None, event_at=NOW, source="opt_out_job")
    with parents.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t(ExclusionLog))).scalar_one() == 4


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (Quarantine, {"platform": "apns", "app": "a", "token": "x", "status": "jail"}),
        (Quarantine, {"platform": "apns", "app": "a", "token": "x", "failure_type": "HARD"}),
        (DeliveryLog, {**LOG, "status": "delivered"}),
        (ExclusionLog, {**EXCL, "source": "manual"}),
        (QualificationRuleRow, {"provider": "fcm", "normalized_text": "X", "first_text": "x", "status": "todo"}),
        (QualificationRuleRow, {"provider": "fcm", "normalized_text": "X", "first_text": "x", "occurrences": 100_001}),
        (JobRun, {"job": "j", "started_at": NOW, "status": "done"}),
    ],
    ids=["quarantine-status", "quarantine-failure-type", "log-status", "exclusion-source", "rule-status",
         "rule-occurrences", "job-status"],
)
def test_check_constraints(parents: Engine, model: Any, values: dict) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        insert(parents, model, **values)


def test_foreign_keys(engine: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        insert(engine, DeliveryLog, **{**LOG, "delivery_id": "missing"})
    insert(engine, Delivery, id="d1")
    insert(engine, AppSubscription, **SUB)
    insert(engine, DeliveryLog, **LOG)
    insert(engine, ExclusionLog, **EXCL, subscription_id=1, event_at=NOW, source="opt_out_job")
    with engine.begin() as conn:
        conn.execute(sa.delete(t(AppSubscription)))
        conn.execute(sa.delete(t(Delivery)))
        assert conn.execute(sa.select(sa.func.count()).select_from(t(DeliveryLog))).scalar_one() == 0  # cascade
        assert conn.execute(sa.select(t(ExclusionLog).c.subscription_id)).scalar_one() is None  # set null


def test_server_defaults_for_raw_sql_users(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO quarantine (platform, app, token) VALUES ('fcm', 'a', 'x')"))
        conn.execute(sa.text("INSERT INTO delivery (id) VALUES ('d')"))
        row = conn.execute(sa.select(t(Quarantine))).mappings().one()
        assert (row["status"], row["error_count"]) == ("valid", 0)
        assert row["updated_at"].tzinfo == timezone.utc
        assert conn.execute(sa.select(t(Delivery).c.sent)).scalar_one() == 0
