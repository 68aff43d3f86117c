"""Set-based data functions the delivery pipeline and jobs call.

Every function takes an open ``Connection`` (or a ``Session``; its connection is
used) and works inside the caller's transaction: nothing here commits. Use
``with engine.begin() as conn: ...``.

The per-chunk statements of a delivery are pre-built SQL run through
``tables.raw`` (one ``unnest`` statement per batch on PostgreSQL, an
``executemany`` on SQLite); reads are a few ``IN`` queries per chunk of keys.
Keys are ``(platform, app, token)`` tuples. Lists of bound parameters are
chunked below the dialect's limit (SQLite: 999 on old builds, 32766 on newer ones).

Times are aware UTC. ``now`` is injectable everywhere (tests, replays) and
defaults to the current time.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from push import jsoncodec, metrics
from push.errors import ValidationError
from push.outcomes import FailureReason, FailureType, Outcome
from push.qualification import MAX_OCCURRENCES, QualificationRule, RuleStatus
from push.quarantine import (
    RELEASABLE,
    TRANSITIONS,
    Counter,
    Event,
    QuarantinePolicy,
    QuarantineState,
    QuarantineStatus,
    apply_event,
    cleanup_event,
    decide,
)
from tables import raw
from tables.models import (
    DENY,
    DLOG,
    EXCL,
    QUAR,
    RELOG,
    RULE,
    SUBS,
    ExclusionSource,
    LogStatus,
)
from tables.types import require_aware, utc_now

Key = tuple[str, str, str]  # (platform, app, token)
DB = Connection | Session

ROW_BATCH = 1_000  # rows per executemany call: bounds memory, not correctness
NORMALIZED_TEXT_MAX = 1_024  # qualification_rule.normalized_text column length



# --------------------------------------------------------------------------- helpers


def _conn(db: DB) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update/nothing``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported dialect {conn.dialect.name}")


def _max_params(conn: Connection) -> int:
    # SQLAlchemy already knows the driver's bound-parameter ceiling (999 on old SQLite).
    return int(getattr(conn.dialect, "insertmanyvalues_max_parameters", 999))


def _v(value: Any) -> Any:
    """Enum -> its value; psycopg would otherwise dump some enums by *name*."""
    return value.value if isinstance(value, enum.Enum) else value


def _now(now: datetime | None) -> datetime:
    return utc_now() if now is None else require_aware(now, "now")


def _group_tokens(keys: Iterable[Key]) -> dict[tuple[str, str], list[str]]:
    """Keys grouped by (platform, app): ``platform = ? AND app = ? AND token IN (...)``
    uses the (platform, app, token) unique index on both backends, and costs one
    bound parameter per key instead of three."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    # Key order: statements that lock these rows (FOR UPDATE, upserts) take them in one global
    # order, so two writers on overlapping keys wait for each other instead of deadlocking.
    for platform, app, token in sorted(dict.fromkeys(keys)):
        groups[(platform, app)].append(token)
    return groups


def select_by_keys(
    conn: Connection, table: sa.Table, names: Sequence[str], keys: Iterable[Key], *, lock: bool = False,
    computed: Sequence[str] = (), where: str = "", params: Sequence[Any] = (), tail: str = "",
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``table`` (aliased ``t``) for ``keys``: the ``names`` columns, then ``computed``
    SQL expressions, as tuples with the columns' result processing applied.

    ``where`` adds conditions (driver placeholders, values in ``params``) and ``tail`` a
    clause after them (``GROUP BY ...``).
    """
    columns: list[sa.Column[Any] | None] = [table.c[n] for n in names]
    columns += [None] * len(computed)
    select = ", ".join([f"t.{n}" for n in names] + list(computed))
    mark = raw.marker(conn)
    extra = f" AND {where}" if where else ""
    for (platform, app), tokens in _group_tokens(keys).items():
        for chunk in raw.chunks(tokens, _max_params(conn) - 2 - len(params)):
            sql = (f"SELECT {select} FROM {table.name} AS t WHERE t.platform = {mark} AND t.app = {mark} "
                   f"AND {raw.one_of(conn, 't.token', table.c.token, len(chunk))}{extra}")
            if tail:
                sql += f" {tail}"
            if lock and raw.is_pg(conn):
                # Rows are locked in the order they are read: key order, as every writer takes them.
                sql += " ORDER BY t.token FOR UPDATE"  # SQLite: BEGIN IMMEDIATE already serializes writers
            found = conn.exec_driver_sql(sql, (platform, app, *raw.one_of_params(conn, chunk), *params)).fetchall()
            yield from raw.result_rows(conn, columns, found)


def _key_of(row: Mapping[str, Any]) -> Key:
    return (str(_v(row["platform"])), str(row["app"]), str(row["token"]))


# --------------------------------------------------------------------------- subscriptions


_SUB_COLUMNS = ("platform", "app", "token", "profile_id", "disabled", "registered_at", "created_at", "updated_at")


def upsert_subscriptions(conn: DB, rows: Iterable[Mapping[str, Any]], *, now: datetime | None = None) -> int:
    """Insert subscriptions that are new; for known ones only update ``profile_id``.

    Rows need ``app``, ``platform``, ``token`` and may carry ``profile_id``.
    New rows get ``registered_at = now``. Known tokens keep ``registered_at``
    and ``disabled`` untouched: an import is not a registration (see
    ``register_token``). A known token's ``profile_id`` changes only when a
    non-null one is given. Returns the number of rows inserted or changed.
    """
    c, ts = _conn(conn), _now(now)
    latest: dict[Key, tuple[Any, ...]] = {}
    for row in rows:  # last row wins: one statement must not touch a key twice
        key = _key_of(row)
        latest[key] = (*key, row.get("profile_id"), False, ts, ts, ts)
    if not latest:
        return 0
    new_profile = f"COALESCE(excluded.profile_id, {SUBS.name}.profile_id)"
    distinct = "IS DISTINCT FROM" if raw.is_pg(c) else "IS NOT"  # SQLite's spelling of the same
    tail = (f"ON CONFLICT (platform, app, token) DO UPDATE SET profile_id = {new_profile}, "
            f"updated_at = excluded.updated_at "
            f"WHERE {SUBS.name}.profile_id {distinct} {new_profile}")  # skip no-op writes
    # In key order: two deliveries upserting overlapping tokens lock them in the same order.
    return raw.insert_rows(c, SUBS, _SUB_COLUMNS, [latest[k] for k in sorted(latest)], tail=tail, batch=ROW_BATCH)


def register_token(
    conn: DB,
    *,
    app: str,
    platform: str,
    token: str,
    profile_id: str | None = None,
    now: datetime | None = None,
) -> int:
    """The app (re)registered ``token``: upsert it, bump ``registered_at``, return its id.

    Registering again also clears ``disabled`` (and its date/reason): the OS
    just handed this token to a live app install, so it is reachable again.
    The quarantine row is NOT touched - seed 003 says quarantine is only ever
    left by a manual release - but a later stale APNs 410 (timestamp before
    this registration) no longer counts against the token.
    """
    c, ts = _conn(conn), _now(now)
    ins = _insert(c, SUBS).values(
        platform=_v(platform),
        app=app,
        token=token,
        profile_id=profile_id,
        disabled=False,
        registered_at=ts,
        created_at=ts,
        updated_at=ts,
    )
    stmt = ins.on_conflict_do_update(
        index_elements=["platform", "app", "token"],
        set_={
            "profile_id": sa.func.coalesce(ins.excluded.profile_id, SUBS.c.profile_id),
            "registered_at": ins.excluded.registered_at,
            "updated_at": ins.excluded.updated_at,
            "disabled": False,
            "disabled_at": None,
            "disabled_reason": None,
        },
    ).returning(SUBS.c.id)
    return int(c.execute(stmt).scalar_one())


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True, slots=True)
class AnalysisState:
    """What delivery analysis needs to know about one (platform, app, token)."""

    subscription_id: int | None  # None: the token has no subscription row
    profile_id: str | None
    disabled: bool
    registered_at: datetime | None
    quarantine_status: QuarantineStatus | None  # None: no quarantine row (valid)
    denylisted: bool  # the subscription's profile is on the denylist for this platform


def load_analysis_state(conn: DB, keys: Iterable[Key]) -> dict[Key, AnalysisState]:
    """Subscription, quarantine and denylist facts for ``keys``, one entry per key.

    Two set-based queries per (platform, app) group and parameter-limit chunk:
    subscriptions (with their profile's denylist entry) and quarantine rows.
    """
    c = _conn(conn)
    wanted = list(dict.fromkeys(keys))
    subs: dict[Key, tuple[Any, ...]] = {}
    # A profile is denylisted per channel, and the channel is the subscription's platform.
    denied = f"EXISTS (SELECT 1 FROM {DENY.name} AS d WHERE d.profile_id = t.profile_id AND d.channel = t.platform)"
    for sub_id, platform, app, token, profile, disabled, registered_at, denylisted in select_by_keys(
        c, SUBS, ("id", "platform", "app", "token", "profile_id", "disabled", "registered_at"), wanted,
        computed=(denied,),
    ):
        subs[(platform, app, token)] = (sub_id, profile, bool(disabled), registered_at, bool(denylisted))
    quarantine: dict[Key, QuarantineStatus] = {
        (platform, app, token): QuarantineStatus(status)
        for platform, app, token, status in select_by_keys(c, QUAR, ("platform", "app", "token", "status"), wanted)
    }

    result: dict[Key, AnalysisState] = {}
    for key in wanted:
        sub = subs.get(key)
        if sub is None:
            result[key] = AnalysisState(None, None, False, None, quarantine.get(key), False)
        else:
            sub_id, profile, disabled, registered_at, denylisted = sub
            result[key] = AnalysisState(sub_id, profile, disabled, registered_at, quarantine.get(key),
                                        profile is not None and denylisted)
    return result


# --------------------------------------------------------------------------- delivery logs

class LogRow(NamedTuple):
    """One ``delivery_log`` row to insert, its values already in column form (status and failure
    type as their text values, ``payload`` as JSON text). The pipeline builds these directly;
    ``insert_delivery_logs`` builds them from mappings after checking each one."""

    delivery_id: str
    seq: int
    token: str
    platform: str
    app: str
    created_at: datetime
    updated_at: datetime
    profile_id: str | None = None
    status: str = LogStatus.PENDING.value
    failure_type: str | None = None
    failure_reason: int | None = None
    error_text: str | None = None
    provider_status: int | None = None
    provider_reason: str | None = None
    provider_id: str | None = None
    attempts: int = 0
    next_retry_at: datetime | None = None
    expires_at: datetime | None = None
    payload: str | None = None
    claimed_by: str | None = None


class OutcomeUpdate(NamedTuple):
    """A send's outcome for the ``delivery_log`` row ``(delivery_id, seq)``, in column form."""

    delivery_id: str
    seq: int
    claimed_by: str  # written only while this runner still holds the row's claim
    status: str
    failure_type: str | None
    failure_reason: int | None
    error_text: str | None
    provider_status: int | None
    provider_reason: str | None
    provider_id: str | None
    attempts: int
    next_retry_at: datetime | None
    updated_at: datetime


_LOG_REQUIRED = ("delivery_id", "seq", "token", "platform", "app")
_LOG_KEYS = frozenset({"id", "delivery_id", "seq"})
_LOG_STAMPS = ("created_at", "updated_at")
_LOG_OPTIONAL: dict[str, Any] = {
    name: LogRow._field_defaults[name] for name in LogRow._fields if name not in (*_LOG_REQUIRED, *_LOG_STAMPS)}
_LOG_UPDATABLE = frozenset(_LOG_OPTIONAL) | {"updated_at"}
_LOG_ALLOWED = frozenset(LogRow._fields)
_LOG_FIELDS = (*_LOG_REQUIRED, *_LOG_OPTIONAL)
_LOG_DEFAULTS = tuple(_LOG_OPTIONAL.items())
_OUTCOME_KEYS = ("delivery_id", "seq", "claimed_by")
_OUTCOME_COLUMNS = OutcomeUpdate._fields[len(_OUTCOME_KEYS):]
# Per column, the value types ``_log_value`` returns unchanged: a chunk's rows skip the call.
_NONE = type(None)
_LOG_AS_IS: dict[str, frozenset[type]] = {
    name: frozenset({str, _NONE} if name == "payload" else {int, _NONE} if name == "failure_reason"
                    else {str, int, float, bool, datetime, _NONE})
    for name in (*_LOG_FIELDS, "updated_at")
}


def _log_value(name: str, value: Any) -> Any:
    if name == "payload" and value is not None and not isinstance(value, str):
        # Canonical JSON so a resumed delivery stores byte-identical payloads.
        return jsoncodec.dumps_text(value, sort_keys=True)
    if name == "failure_reason" and value is not None:
        return int(value)
    return _v(value)


def _log_values(names: Sequence[str], values: Iterable[Any]) -> list[Any]:
    """``_log_value`` of each (name, value) pair."""
    return [v if type(v) in _LOG_AS_IS[n] else _log_value(n, v) for n, v in zip(names, values)]


def insert_delivery_logs(conn: DB, rows: Iterable[Mapping[str, Any]], *, now: datetime | None = None) -> int:
    """Insert log rows; rows whose (delivery_id, seq) exists are skipped (resume).

    Required keys: delivery_id, seq, token, platform, app. Optional: any other
    delivery_log column; ``payload`` may be a JSON-able mapping or JSON text.
    Returns how many rows were actually inserted.
    """
    ts = _now(now)
    prepared: list[LogRow] = []
    for row in rows:
        values = [row.get(k) for k in _LOG_REQUIRED]
        if None in values:
            raise ValidationError(_LOG_REQUIRED[values.index(None)], "required for a delivery_log row")
        unknown = row.keys() - _LOG_ALLOWED
        if unknown:
            raise ValidationError(sorted(unknown)[0], "not a delivery_log column")
        values += [row.get(k, default) for k, default in _LOG_DEFAULTS]
        fields = dict(zip(_LOG_FIELDS, _log_values(_LOG_FIELDS, values)))
        prepared.append(LogRow(**fields, created_at=row.get("created_at", ts), updated_at=row.get("updated_at", ts)))
    return insert_log_rows(conn, prepared)


def insert_log_rows(conn: DB, rows: Sequence[LogRow]) -> int:
    """``insert_delivery_logs`` for rows already built and checked by the caller: the pipeline's
    per-chunk insert, without a mapping per row."""
    return raw.insert_rows(_conn(conn), DLOG, LogRow._fields, rows, tail="ON CONFLICT (delivery_id, seq) DO NOTHING",
                           batch=ROW_BATCH)


def update_log_outcomes(conn: DB, rows: Sequence[OutcomeUpdate]) -> int:
    """Write send outcomes, already in column form; the number of rows updated."""
    return raw.update_rows(_conn(conn), DLOG, _OUTCOME_KEYS, _OUTCOME_COLUMNS, rows, batch=ROW_BATCH)


class RetryOutcomeUpdate(NamedTuple):
    """A retry's outcome for the ``delivery_log`` row ``id``, in column form."""

    id: int
    claimed_by: str  # written only while this runner still holds the row's claim
    status: str
    failure_type: str | None
    failure_reason: int | None
    error_text: str | None
    provider_status: int | None
    provider_reason: str | None
    provider_id: str | None
    attempts: int
    next_retry_at: datetime | None
    updated_at: datetime


def update_retry_outcomes(conn: DB, rows: Sequence[RetryOutcomeUpdate]) -> int:
    """Write retry outcomes, already in column form; the number of rows updated."""
    return raw.update_rows(_conn(conn), DLOG, ("id", "claimed_by"), RetryOutcomeUpdate._fields[2:], rows,
                           batch=ROW_BATCH)


def existing_log_status(conn: DB, delivery_id: str, seq_range: range) -> dict[int, LogStatus]:
    """``seq -> status`` for the rows of ``delivery_id`` already written in ``seq_range``."""
    from tables.delivery import log_states  # lazy: tables.delivery imports this module

    if not seq_range:
        return {}
    rows = log_states(_conn(conn), delivery_id, min(seq_range), max(seq_range))
    return {seq: LogStatus(status) for seq, (status, _, _) in rows.items() if seq in seq_range}


def update_delivery_logs(conn: DB, updates: Iterable[Mapping[str, Any]], *, now: datetime | None = None) -> int:
    """Bulk-update log rows identified by ``id`` or by ``(delivery_id, seq)``.

    Each mapping holds the identifying key(s) plus the columns to set (any
    delivery_log column except the keys). ``updated_at`` defaults to ``now``.
    Updates with the same shape go out together (one statement per batch on
    PostgreSQL, one executemany on SQLite). Returns rows updated.
    """
    c, ts = _conn(conn), _now(now)
    # (key columns, updated columns) -> rows of key values then new values, in that column order
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
    for update in updates:
        by_id = update.get("id") is not None
        if not by_id and (update.get("delivery_id") is None or update.get("seq") is None):
            raise ValidationError("id", "each update needs 'id' or both 'delivery_id' and 'seq'")
        names = tuple(sorted(update.keys() - _LOG_KEYS | {"updated_at"}))
        bad = set(names) - _LOG_UPDATABLE
        if bad:
            raise ValidationError(sorted(bad)[0], "not an updatable delivery_log column")
        keys = (update["id"],) if by_id else (update["delivery_id"], update["seq"])
        values = _log_values(names, [update.get("updated_at", ts) if n == "updated_at" else update[n] for n in names])
        groups[(("id",) if by_id else ("delivery_id", "seq"), names)].append((*keys, *values))
    return sum(raw.update_rows(c, DLOG, key_cols, names, params, batch=ROW_BATCH)
               for (key_cols, names), params in groups.items())


# --------------------------------------------------------------------------- exclusions


_EXCL_COLUMNS = ("delivery_id", "subscription_id", "token", "platform", "app", "failure_reason", "reason_text",
                 "source", "event_at", "created_at")


def insert_exclusions(conn: DB, rows: Iterable[Mapping[str, Any]], *, now: datetime | None = None) -> int:
    """Record excluded tokens; duplicates are skipped, so re-runs are harmless.

    Required: token, platform, app, failure_reason, source. ``source="analysis"``
    rows need ``delivery_id`` (unique per delivery and token); ``source=
    "opt_out_job"`` rows need ``subscription_id`` and ``event_at`` (the
    subscription's ``disabled_at``: unique per subscription and disable event).
    Returns how many rows were inserted.
    """
    c, ts = _conn(conn), _now(now)
    prepared: list[tuple[Any, ...]] = []
    for row in rows:
        source = ExclusionSource(_v(row["source"]))
        if source is ExclusionSource.ANALYSIS and row.get("delivery_id") is None:
            raise ValidationError("delivery_id", "required for source='analysis' exclusions")
        job_keys = (row.get("subscription_id"), row.get("event_at"))
        if source is ExclusionSource.OPT_OUT_JOB and None in job_keys:
            raise ValidationError("event_at", "opt_out_job exclusions need subscription_id and event_at (disabled_at)")
        prepared.append((
            row.get("delivery_id"),
            row.get("subscription_id"),
            row["token"],
            _v(row["platform"]),
            row["app"],
            int(row["failure_reason"]),
            row.get("reason_text"),
            source.value,
            row.get("event_at"),
            row.get("created_at", ts),
        ))
    # No conflict target: either unique constraint (analysis or job) may apply. Sorted by key, so
    # concurrent writers of the same exclusions wait on unique entries in one order.
    prepared.sort(key=lambda r: (r[3], r[4], r[2], r[0] or "", r[1] or 0))
    return raw.insert_rows(c, EXCL, _EXCL_COLUMNS, prepared, tail="ON CONFLICT DO NOTHING", batch=ROW_BATCH)


# --------------------------------------------------------------------------- quarantine

_STATE_COLUMNS = (
    "status",
    "error_count",
    "failure_type",
    "failure_reason",
    "error_text",
    "provider_timestamp",
    "first_error_at",
    "last_error_at",
)


_STATE_ROW = ("platform", "app", "token", *_STATE_COLUMNS, "updated_at")


def _state_from_row(values: Sequence[Any]) -> QuarantineState:
    """A state from the ``_STATE_COLUMNS`` values of a row, in that order."""
    row = dict(zip(_STATE_COLUMNS, values))
    return QuarantineState(
        status=QuarantineStatus(row["status"]),
        error_count=row["error_count"],
        failure_type=FailureType(row["failure_type"]) if row["failure_type"] is not None else None,
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] is not None else None,
        error_text=row["error_text"],
        provider_timestamp=row["provider_timestamp"],
        first_error_at=row["first_error_at"],
        last_error_at=row["last_error_at"],
    )


def _state_row(key: Key, state: QuarantineState, now: datetime) -> tuple[Any, ...]:
    """The ``_STATE_ROW`` values that store ``state`` for ``key``."""
    return (
        *key,
        state.status.value,
        state.error_count,
        _v(state.failure_type),
        int(state.failure_reason) if state.failure_reason is not None else None,
        state.error_text,
        state.provider_timestamp,
        state.first_error_at,
        state.last_error_at,
        now,
    )


def load_quarantine_states(conn: DB, keys: Iterable[Key], *, for_update: bool = False) -> dict[Key, QuarantineState]:
    """Current quarantine state of the keys that have a row."""
    found = select_by_keys(_conn(conn), QUAR, ("platform", "app", "token", *_STATE_COLUMNS), keys, lock=for_update)
    return {(r[0], r[1], r[2]): _state_from_row(r[3:]) for r in found}


def _write_states(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Store states of keys whose rows this transaction holds locked (or that it just inserted)."""
    sets = ", ".join(f"{name} = excluded.{name}" for name in (*_STATE_COLUMNS, "updated_at"))
    raw.insert_rows(conn, QUAR, _STATE_ROW, sorted(rows, key=lambda r: tuple(r[:3])),
                    tail=f"ON CONFLICT (platform, app, token) DO UPDATE SET {sets}", batch=ROW_BATCH)


def _insert_new_states(conn: Connection, rows: list[tuple[Any, ...]]) -> set[Key]:
    """Insert states of keys that had no row; the keys another writer inserted first are returned
    (their rows exist now and must be read, locked, and decided again)."""
    if not rows:
        return set()
    rows = sorted(rows, key=lambda r: tuple(r[:3]))
    if not raw.is_pg(conn):  # SQLite: BEGIN IMMEDIATE, no other writer can have inserted meanwhile
        raw.insert_rows(conn, QUAR, _STATE_ROW, rows, batch=ROW_BATCH)
        return set()
    lost: set[Key] = set()
    for part in raw.chunks(rows, ROW_BATCH):
        inserted = conn.execute(
            _insert(conn, QUAR).values([dict(zip(_STATE_ROW, r)) for r in part])
            .on_conflict_do_nothing(index_elements=["platform", "app", "token"])
            .returning(QUAR.c.platform, QUAR.c.app, QUAR.c.token)
        ).all()
        got = {(r[0], r[1], r[2]) for r in inserted}
        lost.update(key for key in (tuple(r[:3]) for r in part) if key not in got)  # type: ignore[misc]
    return lost


def apply_quarantine(
    conn: DB,
    outcomes_by_key: Mapping[Key, Outcome | Sequence[Outcome]],
    *,
    now: datetime | None = None,
    policy: QuarantinePolicy = QuarantinePolicy(),
    entered_keys: set[Key] | None = None,
) -> int:
    """Run ``push.quarantine.decide`` for each key's outcome(s) and write the changes.

    A key may map to several outcomes (e.g. attempts of one notification); they
    are applied in order. Subscriptions' ``registered_at`` is looked up for the
    APNs 410 rule. Returns how many keys newly entered ``quarantine``.

    Existing rows are locked (PostgreSQL ``FOR UPDATE``; SQLite's ``BEGIN
    IMMEDIATE`` serializes writers) so concurrent workers don't lose counts.
    """
    c, ts = _conn(conn), _now(now)
    keys = list(outcomes_by_key)
    if not keys:
        return 0
    states = load_quarantine_states(c, keys, for_update=True)
    needs_registration = [
        key
        for key, value in outcomes_by_key.items()
        if any(o.provider_timestamp is not None for o in ([value] if isinstance(value, Outcome) else value))
    ]
    registered: dict[Key, datetime] = {
        (platform, app, token): registered_at
        for platform, app, token, registered_at in select_by_keys(
            c, SUBS, ("platform", "app", "token", "registered_at"), needs_registration
        )
    }

    def run(keys: Iterable[Key]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], set[Key],
                                          dict[Key, list[tuple[Any, Any]]]]:
        changed: list[tuple[Any, ...]] = []
        new: list[tuple[Any, ...]] = []
        entered: set[Key] = set()
        moves: dict[Key, list[tuple[Any, Any]]] = {}  # (event, new status) for push_quarantine_transitions_total
        for key in keys:
            value = outcomes_by_key[key]
            state, dirty, newly = states.get(key), False, False
            for outcome in [value] if isinstance(value, Outcome) else value:
                step = decide(state, outcome, now=ts, registered_at=registered.get(key), policy=policy)
                if step.state is not None:
                    state, dirty = step.state, True
                    newly = newly or step.entered_quarantine
                    moves.setdefault(key, []).append((step.event, step.state.status))
            if dirty and state is not None:
                (changed if key in states else new).append(_state_row(key, state, ts))
                if newly:
                    entered.add(key)
        return changed, new, entered, moves

    changed, new, entered, moves = run(keys)
    _write_states(c, changed)
    # A key without a row cannot be locked: two writers can both decide from "no row". Insert
    # those without overwriting; a key someone else inserted meanwhile is read (now locked) and
    # decided again from what the other writer stored.
    raced = _insert_new_states(c, new)
    if raced:
        entered -= raced
        states.update(load_quarantine_states(c, raced, for_update=True))
        again, _, entered_again, moves_again = run(sorted(raced))
        _write_states(c, again)
        entered |= entered_again
        moves.update(moves_again)
        for key in raced - set(moves_again):
            moves.pop(key, None)
    metrics.quarantine_transitions([m for key_moves in moves.values() for m in key_moves])
    if entered_keys is not None:
        entered_keys.update(entered)
    return len(entered)


def cleanup_quarantine(
    conn: DB, *, now: datetime | None = None, policy: QuarantinePolicy = QuarantinePolicy(), dry_run: bool = False
) -> int:
    """The cleanup events: ``with_errors`` rows whose last error is older than
    ``policy.reset_after`` (``mailbox_full_reset_after`` for mailbox full) go
    back to ``valid``. Returns how many rows were (or, dry run, would be) reset.
    """
    c, ts = _conn(conn), _now(now)
    cutoff = ts - min(policy.reset_after, policy.mailbox_full_reset_after)
    cols = [QUAR.c.platform, QUAR.c.app, QUAR.c.token, *(QUAR.c[n] for n in _STATE_COLUMNS)]
    stmt = sa.select(*cols).where(
        QUAR.c.status == QuarantineStatus.WITH_ERRORS.value, QUAR.c.last_error_at < cutoff
    )
    if c.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    changed: list[tuple[Any, ...]] = []
    transitions: list[tuple[Any, Any]] = []
    for row in c.execute(stmt):
        state = _state_from_row(row[3:])
        event = cleanup_event(state, now=ts, policy=policy)
        step = apply_event(state, event, now=ts, policy=policy) if event is not None else None
        if step is not None and step.state is not None:
            changed.append(_state_row((row.platform, row.app, row.token), step.state, ts))
            transitions.append((event, step.state.status))
    if not dry_run:
        _write_states(c, changed)
        metrics.quarantine_transitions(transitions)
    return len(changed)


def release_quarantine(
    conn: DB,
    *,
    released_by: str,
    token: str | None = None,
    error_text_contains: str | None = None,
    app: str | None = None,
    platform: str | None = None,
    modified_since: datetime | None = None,
    modified_until: datetime | None = None,
    include_denylisted: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> int:
    """Manual / bulk release (seed 003 "bulk updates", e.g. after a provider outage).

    Criteria are ANDed; at least one is required so a slip cannot release the
    whole table. ``error_text_contains`` is a case-insensitive substring match
    (``%``/``_`` are literal); ``modified_since``/``modified_until`` bound
    ``updated_at`` inclusively. ``denylisted`` rows (spam complaints, STOP) are
    only released with ``include_denylisted=True``. Each released row is logged
    to ``quarantine_release_log`` with ``released_by`` and the criteria. All
    values travel as bound parameters. Returns the number (to be) released.
    """
    c, ts = _conn(conn), _now(now)
    if not released_by or not released_by.strip():
        raise ValidationError("released_by", "say who or what releases these tokens")
    criteria = {
        "token": token,
        "error_text_contains": error_text_contains,
        "app": app,
        "platform": _v(platform),
        "modified_since": modified_since,
        "modified_until": modified_until,
    }
    given = {k: v for k, v in criteria.items() if v is not None}
    if not given:
        raise ValidationError("criteria", "give at least one of token, error_text_contains, app, platform, modified_*")

    statuses = {s.value for s in RELEASABLE if include_denylisted or s is not QuarantineStatus.DENYLISTED}
    where: list[sa.ColumnElement[bool]] = [QUAR.c.status.in_(sorted(statuses))]
    if token is not None:
        where.append(QUAR.c.token == token)
    if app is not None:
        where.append(QUAR.c.app == app)
    if platform is not None:
        where.append(QUAR.c.platform == _v(platform))
    if error_text_contains is not None:
        where.append(QUAR.c.error_text.icontains(error_text_contains, autoescape=True))
    if modified_since is not None:
        where.append(QUAR.c.updated_at >= require_aware(modified_since, "modified_since"))
    if modified_until is not None:
        where.append(QUAR.c.updated_at <= require_aware(modified_until, "modified_until"))

    stmt = sa.select(QUAR.c.id, QUAR.c.platform, QUAR.c.app, QUAR.c.token, QUAR.c.status).where(*where)
    if c.dialect.name == "postgresql" and not dry_run:
        stmt = stmt.with_for_update()
    rows = c.execute(stmt).all()
    if dry_run or not rows:
        return len(rows)

    label = released_by.strip() + " | " + ", ".join(f"{k}={_describe(v)}" for k, v in given.items())
    raw.insert_rows(
        c,
        RELOG,
        ("token", "platform", "app", "previous_status", "released_by", "created_at"),
        [(r.token, r.platform, r.app, r.status, label, ts) for r in rows],
        batch=ROW_BATCH,
    )
    # The target status and counter come from the one transition table.
    by_status: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_status[r.status].append(r.id)
    for status, ids in by_status.items():
        rule = TRANSITIONS[(QuarantineStatus(status), Event.RELEASE)]
        values: dict[str, Any] = {"updated_at": ts}
        if rule.status is not None:
            values["status"] = rule.status.value
        if rule.counter is Counter.RESET:
            values["error_count"] = 0
        for chunk in raw.chunks(ids, _max_params(c) - len(values) - 1):
            c.execute(sa.update(QUAR).where(QUAR.c.id.in_(chunk)).values(values))
    return len(rows)


def _describe(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


# --------------------------------------------------------------------------- qualification rules


def bump_qualification_rules(
    conn: DB, items: Iterable[tuple[str, str, str]], *, now: datetime | None = None
) -> int:
    """Count occurrences of ``(provider, normalized_text, first_text)`` error texts.

    New rules start in ``to_qualify`` with the given ``first_text``; existing
    ones keep their first text, status and user qualification, and their
    occurrences grow, capped at 100,000 (seed 004). ``normalized_text`` longer
    than the column (1,024) is truncated. Returns the number of distinct rules
    touched.
    """
    c, ts = _conn(conn), _now(now)
    counts: dict[tuple[str, str], list[Any]] = {}
    for provider, normalized, first_text in items:
        key = (str(_v(provider)), normalized[:NORMALIZED_TEXT_MAX])
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [first_text, 1]
    if not counts:
        return 0
    # In key order: writers that bump the same rules lock their rows in the same order, so two of
    # them (concurrent outcome writes, or two deliveries) wait for each other instead of deadlocking.
    rows = [
        (provider, normalized, first_text, min(n, MAX_OCCURRENCES), RuleStatus.TO_QUALIFY.value, ts, ts)
        for (provider, normalized), (first_text, n) in sorted(counts.items())
    ]
    total = f"{RULE.name}.occurrences + excluded.occurrences"
    tail = (f"ON CONFLICT (provider, normalized_text) DO UPDATE SET "
            f"occurrences = CASE WHEN {total} > {MAX_OCCURRENCES} THEN {MAX_OCCURRENCES} ELSE {total} END, "
            f"updated_at = excluded.updated_at")
    raw.insert_rows(c, RULE, ("provider", "normalized_text", "first_text", "occurrences", "status", "created_at",
                              "updated_at"), rows, tail=tail, batch=ROW_BATCH)
    return len(rows)


def load_qualification_rules(conn: DB, *, provider: str | None = None) -> dict[tuple[str, str], QualificationRule]:
    """All rules (optionally of one provider) keyed by (provider, normalized_text),
    in the shape ``push.qualification.apply_rules`` takes."""
    c = _conn(conn)
    stmt = sa.select(RULE)
    if provider is not None:
        stmt = stmt.where(RULE.c.provider == _v(provider))
    return {
        (r.provider, r.normalized_text): QualificationRule(
            provider=r.provider,
            normalized_text=r.normalized_text,
            first_text=r.first_text,
            occurrences=r.occurrences,
            status=RuleStatus(r.status),
            failure_type=FailureType(r.failure_type) if r.failure_type is not None else None,
            failure_reason=FailureReason(r.failure_reason) if r.failure_reason is not None else None,
        )
        for r in c.execute(stmt)
    }
