"""Prometheus metrics: every counter, histogram and gauge push-feedback records.

All of them live on the library's own registry, ``REGISTRY``, not on
``prometheus_client``'s global one: importing push-feedback adds nothing to a
host's default ``/metrics`` unless asked, and two copies of the library (or a
test re-importing it) never fight over metric names. A host that already
exposes Prometheus passes its registry in and gets them on its own endpoint::

    PushConfig.from_env(metrics_registry=prometheus_client.REGISTRY)   # or
    push.metrics.register_on(prometheus_client.REGISTRY)

The processes push-feedback itself runs (``push-feedback scheduler``) serve
``REGISTRY`` on ``PUSH_METRICS_PORT`` (``push.health``).

Labels are bounded by construction: provider, app (the host's own set),
statuses, failure types and reasons, outcome-table reasons, job names. Never a
token, a delivery id or an error text. ``python -m push.docs`` renders ``SPECS``
into the README's metrics table.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from push.outcome_table import DEFAULT_TABLE
from push.outcomes import FailureReason

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOME_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
JOB_BUCKETS = (0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | histogram | gauge
    name: str  # as exposed (counters end in _total)
    labels: tuple[str, ...]
    doc: str
    buckets: tuple[float, ...] = ()


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("counter", "push_notifications_total", ("provider", "app", "status"),
               "Outcomes written to delivery_log: sent, failed, excluded, retry_pending. A retried notification "
               "counts once per recorded attempt."),
    MetricSpec("counter", "push_failures_total", ("provider", "failure_type", "failure_reason", "provider_reason"),
               "Failed attempts by failure type, failure reason (seed label) and provider reason (APNs reason / "
               "FCM error code known to the outcome table, else `other`)."),
    MetricSpec("counter", "push_exclusions_total", ("provider", "reason", "source"),
               "Notifications excluded before sending (source `analysis`) and subscriptions disabled by the "
               "opt-out job (`opt_out_job`), by failure reason."),
    MetricSpec("counter", "push_quarantine_transitions_total", ("event", "status"),
               "Quarantine entries changed, by event (hard, soft, success, cleanup, release, …) and new status."),
    MetricSpec("counter", "push_resends_total", ("provider", "cause"),
               "Requests the server provably did not process, resent at once: cause `goaway` (above "
               "last_stream_id), `refused_stream`, `unwritten` (connection closed before the bytes left)."),
    MetricSpec("counter", "push_connections_opened_total", ("provider",),
               "HTTP/2 connections that completed TLS and the server's SETTINGS."),
    MetricSpec("counter", "push_goaways_total", ("provider",), "GOAWAY frames received."),
    MetricSpec("counter", "push_connection_failures_total", ("provider",),
               "Connection attempts that failed (TCP, TLS, ALPN, GOAWAY during setup, timeout)."),
    MetricSpec("counter", "push_auth_refreshes_total", ("provider", "result"),
               "APNs provider-token (JWT) mints and FCM OAuth access-token fetches, `ok` or `failed`."),
    MetricSpec("counter", "push_job_runs_total", ("job", "result"), "Job runs by result: ok, error, skipped."),
    MetricSpec("histogram", "push_provider_latency_seconds", ("provider",),
               "Round trip of one request to the provider (sent to answer, or to the transport error).",
               LATENCY_BUCKETS),
    MetricSpec("histogram", "push_outcome_latency_seconds", ("provider",),
               "From the start of `send_batch` (or of a retry pass) to each sent notification's outcome being "
               "written.", OUTCOME_BUCKETS),
    MetricSpec("histogram", "push_job_duration_seconds", ("job",), "Wall-clock duration of recorded job runs.",
               JOB_BUCKETS),
    MetricSpec("gauge", "push_notifications_in_flight", ("provider",),
               "Notifications inside a provider client's send right now."),
    MetricSpec("gauge", "push_connections_open", ("provider",), "HTTP/2 connections open and set up."),
    MetricSpec("gauge", "push_stream_budget", ("provider",),
               "Sum of the servers' SETTINGS_MAX_CONCURRENT_STREAMS over the open connections."),
    MetricSpec("gauge", "push_retry_backlog", ("state",),
               "`retry_pending` rows due now (`due`) and not yet due (`scheduled`); refreshed by each retry run."),
    MetricSpec("gauge", "push_quarantine_entries", ("status",),
               "Quarantine entries by status; refreshed by the opt-out and cleanup jobs (no scan per scrape)."),
    MetricSpec("gauge", "push_job_last_success_timestamp_seconds", ("job",),
               "Start time (Unix seconds) of each job's last successful run."),
)

_KINDS = {"counter": Counter, "histogram": Histogram, "gauge": Gauge}


def _make(spec: MetricSpec) -> Any:
    name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
    kw: dict[str, Any] = {"buckets": spec.buckets} if spec.buckets else {}
    return _KINDS[spec.kind](name, spec.doc, spec.labels, registry=REGISTRY, **kw)


_M = {spec.name: _make(spec) for spec in SPECS}
NOTIFICATIONS = _M["push_notifications_total"]
FAILURES = _M["push_failures_total"]
EXCLUSIONS = _M["push_exclusions_total"]
QUARANTINE_TRANSITIONS = _M["push_quarantine_transitions_total"]
RESENDS = _M["push_resends_total"]
CONNECTIONS_OPENED = _M["push_connections_opened_total"]
GOAWAYS = _M["push_goaways_total"]
CONNECTION_FAILURES = _M["push_connection_failures_total"]
AUTH_REFRESHES = _M["push_auth_refreshes_total"]
JOB_RUNS = _M["push_job_runs_total"]
PROVIDER_LATENCY = _M["push_provider_latency_seconds"]
OUTCOME_LATENCY = _M["push_outcome_latency_seconds"]
JOB_DURATION = _M["push_job_duration_seconds"]
IN_FLIGHT = _M["push_notifications_in_flight"]
CONNECTIONS_OPEN = _M["push_connections_open"]
STREAM_BUDGET = _M["push_stream_budget"]
RETRY_BACKLOG = _M["push_retry_backlog"]
QUARANTINE_ENTRIES = _M["push_quarantine_entries"]
JOB_LAST_SUCCESS = _M["push_job_last_success_timestamp_seconds"]

# Provider reasons worth a label of their own: those the outcome table has a row for.
KNOWN_PROVIDER_REASONS = frozenset(part for r in DEFAULT_TABLE for part in r.key.split(":")[1:]
                                   if part and not part[0].isdigit() and part not in ("*", "token"))

_enabled = True


def set_enabled(on: bool) -> None:
    """Turn recording on or off for the whole process (the bench compares both; on by default)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


# --------------------------------------------------------------------------- host registries


class _Bridge(Collector):
    """Hands the library's metrics to a host registry at every scrape of it."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()

    def describe(self) -> Iterable[Any]:
        return REGISTRY.collect()


_bridged: "weakref.WeakSet[CollectorRegistry]" = weakref.WeakSet()


def register_on(registry: CollectorRegistry | None) -> None:
    """Expose the library's metrics on ``registry`` too (idempotent; None and ``REGISTRY`` are no-ops)."""
    if registry is None or registry is REGISTRY or registry in _bridged:
        return
    registry.register(_Bridge())
    _bridged.add(registry)


# --------------------------------------------------------------------------- label helpers


def provider_reason(reason: str | None) -> str:
    if not reason:
        return "none"
    return reason if reason in KNOWN_PROVIDER_REASONS else "other"


def reason_label(reason: int | None) -> str:
    try:
        return FailureReason(reason or 0).label
    except ValueError:
        return "other"


# --------------------------------------------------------------------------- deliveries


class DeliveryMetrics:
    """What one ``send_batch`` (or one retry pass) records; created when it starts."""

    def __init__(self, config: Any = None) -> None:
        register_on(getattr(config, "metrics_registry", None))
        self.started = time.monotonic()

    def outcomes(self, batch: Sequence[tuple[Any, ...]], statuses: Iterable[str]) -> None:
        """``batch``: ``(ref, notification, attempts, outcome)`` as written; ``statuses`` their rows' new status."""
        if not _enabled:
            return
        notes: Tally[tuple[str, str, str]] = Tally()
        fails: Tally[tuple[str, str, str, str]] = Tally()
        by_provider: Tally[str] = Tally()
        for (_, n, _, out), status in zip(batch, statuses):
            notes[(n.platform, n.app, status)] += 1
            by_provider[n.platform] += 1
            if out.failure_type is not None:
                fails[(n.platform, out.failure_type.value, out.failure_reason.label,
                       provider_reason(out.provider_reason))] += 1
        for key, count in notes.items():
            NOTIFICATIONS.labels(*key).inc(count)
        for fail, count in fails.items():
            FAILURES.labels(*fail).inc(count)
        age = time.monotonic() - self.started
        for provider, count in by_provider.items():
            hist = OUTCOME_LATENCY.labels(provider)
            for _ in range(count):
                hist.observe(age)

    def excluded(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Exclusion-log rows of the analysis, as written."""
        exclusions(rows)

    def expired(self, items: Iterable[tuple[Any, Any, str]]) -> None:
        """Retry rows past their validity, written ``failed``: ``(row, notification, why)``."""
        if not _enabled:
            return
        notes: Tally[tuple[str, str]] = Tally((n.platform, n.app) for _, n, _ in items)
        for (provider, app), count in notes.items():
            NOTIFICATIONS.labels(provider, app, "failed").inc(count)


def quarantine_transitions(changes: Iterable[tuple[Any, Any]]) -> None:
    """``(event, new status)`` of each quarantine entry written."""
    if not _enabled:
        return
    for (event, status), count in Tally((getattr(e, "value", e), getattr(s, "value", s))
                                        for e, s in changes).items():
        QUARANTINE_TRANSITIONS.labels(event, status).inc(count)


def exclusions(rows: Iterable[Mapping[str, Any]]) -> None:
    """Exclusion-log rows (``platform``, ``app``, ``failure_reason``, ``source``) as written: the analysis'
    exclusions also count as ``excluded`` notifications, the opt-out job's are subscriptions."""
    if not _enabled:
        return
    notes: Tally[tuple[str, str]] = Tally()
    why: Tally[tuple[str, str, str]] = Tally()
    for r in rows:
        source = r.get("source", "analysis")
        why[(r["platform"], reason_label(r["failure_reason"]), source)] += 1
        if source == "analysis":
            notes[(r["platform"], r["app"])] += 1
    for (provider, app), count in notes.items():
        NOTIFICATIONS.labels(provider, app, "excluded").inc(count)
    for key, count in why.items():
        EXCLUSIONS.labels(*key).inc(count)


# --------------------------------------------------------------------------- clients and transport


class ProviderMetrics:
    """Pre-bound children for one provider's client and transport (the send path is hot)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.latency = PROVIDER_LATENCY.labels(provider)
        self.in_flight = IN_FLIGHT.labels(provider)
        self.opened = CONNECTIONS_OPENED.labels(provider)
        self.goaways = GOAWAYS.labels(provider)
        self.failures = CONNECTION_FAILURES.labels(provider)
        self.open = CONNECTIONS_OPEN.labels(provider)
        self.budget = STREAM_BUDGET.labels(provider)
        self.resends = {cause: RESENDS.labels(provider, cause) for cause in ("goaway", "refused_stream", "unwritten")}
        self.auth_ok = AUTH_REFRESHES.labels(provider, "ok")
        self.auth_failed = AUTH_REFRESHES.labels(provider, "failed")

    def auth(self, ok: bool) -> None:
        if _enabled:
            (self.auth_ok if ok else self.auth_failed).inc()


_providers: dict[str, ProviderMetrics] = {}


def for_provider(provider: str | None) -> ProviderMetrics:
    name = provider or "unknown"
    m = _providers.get(name)
    if m is None:
        m = _providers[name] = ProviderMetrics(name)
    return m


# --------------------------------------------------------------------------- jobs


def job_finished(job: str, status: str, duration: float | None, started_at: Any = None) -> None:
    """A job run ended: ``ok``, ``error`` or ``skipped`` (a skipped run has no duration)."""
    if not _enabled:
        return
    JOB_RUNS.labels(job, status).inc()
    if duration is not None:
        JOB_DURATION.labels(job).observe(duration)
    if status == "ok" and started_at is not None:
        JOB_LAST_SUCCESS.labels(job).set(started_at.timestamp())


def job_last_success(job: str, started_at: Any) -> None:
    """Seed the gauge from ``job_run`` (at start-up), so a restart does not look like a job never ran."""
    if started_at is not None:
        JOB_LAST_SUCCESS.labels(job).set(started_at.timestamp())


def retry_backlog(due: int, scheduled: int) -> None:
    RETRY_BACKLOG.labels("due").set(due)
    RETRY_BACKLOG.labels("scheduled").set(scheduled)


QUARANTINE_STATUSES = ("valid", "with_errors", "quarantine", "denylisted")


def quarantine_entries(counts: Mapping[str, int]) -> None:
    for status in QUARANTINE_STATUSES:
        QUARANTINE_ENTRIES.labels(status).set(counts.get(status, 0))
