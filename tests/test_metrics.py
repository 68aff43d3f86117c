"""Prometheus metrics: scraped over real HTTP from a running scheduler after a send_batch against the fake
servers, and checked against the delivery's own delivery_log rows; host registries; the docs they feed."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from jobs.common import JobResult
from jobs.runner import JOBS
from jobs.scheduler import run_scheduler
from push import Notification, PushConfig, metrics, send_batch
from push.docs import render_metrics, readme_with_metrics
from push.health import HealthServer
from push.outcomes import FailureReason
from tables.models import DeliveryLog
from tests.test_e2e_pipeline import config

REPO = Path(__file__).resolve().parents[1]
WAIT = 20.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def by(samples: Samples, name: str, keys: tuple[str, ...], **labels: str) -> Counter[tuple[str, ...]]:
    want = set(labels.items())
    out: Counter[tuple[str, ...]] = Counter()
    for (n, lab), v in samples.items():
        if n == name and want <= lab and v:
            d = dict(lab)
            out[tuple(d[k] for k in keys)] += v
    return out


def diff(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


class RunningScheduler:
    """run_scheduler on a thread, serving /metrics on a free port of 127.0.0.1."""

    def __init__(self, cfg: PushConfig, engine: Any) -> None:
        self.stop = threading.Event()
        self.ran: set[str] = set()
        self.all_ran = threading.Event()
        self.listening = threading.Event()
        self.port = 0

        def on_result(result: JobResult) -> None:
            self.ran.add(result.job)
            if self.ran == set(JOBS):
                self.all_ran.set()

        def on_listening(server: HealthServer) -> None:
            self.port = server.port
            self.listening.set()

        self.rc: dict[str, int] = {}
        self.thread = threading.Thread(target=lambda: self.rc.update(rc=run_scheduler(
            cfg.with_(metrics_port=0, metrics_host="127.0.0.1"), engine=engine, stop_event=self.stop,
            on_result=on_result, on_listening=on_listening)), daemon=True)

    def __enter__(self) -> "RunningScheduler":
        self.thread.start()
        assert self.listening.wait(WAIT), "the scheduler never served its port"
        assert self.all_ran.wait(WAIT), f"the start-up runs did not all finish: {self.ran}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive() and self.rc.get("rc") == 0


def test_scraped_counters_equal_the_delivery_log(db, fake_server, apns_key, service_account):
    """The must-show: a real scrape after a real delivery agrees exactly with delivery_log."""
    engine, db_url = db
    fake_server.goaway_after = 150
    run = uuid.uuid4().hex[:8]  # an app label of this test's own: earlier tests' counts cannot mix in
    ios, android = f"com.example.metrics.{run}", f"android.{run}"
    cfg = config(fake_server, apns_key, service_account, db_url, optout_interval=86400, retry_interval=86400)

    def notifications():
        for i in range(300):
            yield Notification(token=ok_apns_token(i), platform="apns", app=ios, title="t", body="b")
            yield Notification(token=ok_fcm_token(i), platform="fcm", app=android, title="t", body="b")
        for name in ("unregistered", "bad_device_token", "service_unavailable", "rst_refused", "goaway"):
            yield Notification(token=apns_token(name, 2), platform="apns", app=ios, title="t")
        for name in ("unregistered", "invalid_token", "quota_exceeded", "unavailable", "internal"):
            yield Notification(token=fcm_token(name, 2), platform="fcm", app=android, title="t")
        yield Notification(token=None, platform="fcm", app=android, title="t")
        yield Notification(token=ok_apns_token(0), platform="apns", app=ios, title="duplicate")

    with RunningScheduler(cfg, engine) as sched:
        before = scrape(sched.port)
        send_batch(notifications(), cfg, f"metrics-{run}")
        after = scrape(sched.port)

    t = DeliveryLog.__table__
    with engine.connect() as c:
        rows = c.execute(sa.select(t.c.platform, t.c.app, t.c.status, t.c.failure_type, t.c.failure_reason,
                                   sa.func.count()).where(t.c.delivery_id == f"metrics-{run}")
                         .group_by(t.c.platform, t.c.app, t.c.status, t.c.failure_type, t.c.failure_reason)).all()
    log_notes: Counter[tuple[str, ...]] = Counter()
    log_fails: Counter[tuple[str, ...]] = Counter()
    log_excl: Counter[tuple[str, ...]] = Counter()
    for platform, app, status, ftype, reason, n in rows:
        log_notes[(platform, app, status)] += n
        label = FailureReason(reason).label if reason is not None else None
        if status in ("failed", "retry_pending"):
            log_fails[(platform, ftype, label)] += n
        elif status == "excluded":
            log_excl[(platform, label)] += n
    assert sum(log_notes.values()) == 612 and log_excl and log_fails

    notes = Counter({k: v for k, v in by(after, "push_notifications_total", ("provider", "app", "status")).items()
                     if k[1] in (ios, android)})
    assert notes == log_notes
    fails = diff(by(after, "push_failures_total", ("provider", "failure_type", "failure_reason")),
                 by(before, "push_failures_total", ("provider", "failure_type", "failure_reason")))
    assert fails == log_fails
    excl = diff(by(after, "push_exclusions_total", ("provider", "reason"), source="analysis"),
                by(before, "push_exclusions_total", ("provider", "reason"), source="analysis"))
    assert excl == log_excl
    sent_path = sum(n for (_, _, status), n in log_notes.items() if status != "excluded")
    assert (total(after, "push_outcome_latency_seconds_count")
            - total(before, "push_outcome_latency_seconds_count")) == sent_path
    for provider in ("apns", "fcm"):
        assert total(after, "push_provider_latency_seconds_count", provider=provider) > \
            total(before, "push_provider_latency_seconds_count", provider=provider)
        assert total(after, "push_connections_opened_total", provider=provider) > \
            total(before, "push_connections_opened_total", provider=provider)
        # The delivery's clients are closed: their connections and stream budget are gone from the gauges.
        for gauge in ("push_connections_open", "push_stream_budget", "push_notifications_in_flight"):
            assert total(after, gauge, provider=provider) == total(before, gauge, provider=provider), gauge
    assert total(after, "push_goaways_total", provider="apns") > total(before, "push_goaways_total", provider="apns")
    assert total(after, "push_resends_total") > total(before, "push_resends_total")
    assert total(after, "push_auth_refreshes_total", provider="fcm", result="ok") >= \
        total(before, "push_auth_refreshes_total", provider="fcm", result="ok")
    # The scheduler's own start-up runs, and their gauges.
    for job in JOBS:
        assert total(before, "push_job_runs_total", job=job, result="ok") >= 1
        assert total(before, "push_job_last_success_timestamp_seconds", job=job) > 0
    assert ("push_retry_backlog", frozenset({("state", "due")})) in before
    assert total(after, "process_resident_memory_bytes") > 0


def test_no_label_is_a_token_delivery_id_or_error_text(db, fake_server, apns_key, service_account):
    engine, db_url = db
    cfg = config(fake_server, apns_key, service_account, db_url)
    sends = [("apns", "com.example.app", apns_token("bad_device_token", 5)),
             ("fcm", "android", fcm_token("unavailable", 5)), ("apns", "com.example.app", ok_apns_token(5))]
    tokens = [tok for _, _, tok in sends]
    delivery = f"labels-{uuid.uuid4().hex[:8]}"
    send_batch([Notification(token=tok, platform=p, app=app, title="t") for p, app, tok in sends], cfg, delivery)
    text = generate_latest(metrics.REGISTRY).decode()
    values = {v for family in text_string_to_metric_families(text) for s in family.samples for v in s.labels.values()}
    assert not any(tok in v or v in tok for tok in tokens for v in values if len(v) > 12)
    assert delivery not in values
    assert not any(" " in v and len(v) > 40 for v in values), "an error text became a label"


def test_a_host_registry_gets_the_library_metrics():
    host = CollectorRegistry()
    PushConfig(metrics_registry=host)  # a config alone does not register anything ...
    metrics.register_on(host)  # ... the library does when it runs with it (or when asked)
    metrics.register_on(host)  # idempotent
    metrics.for_provider("apns").goaways.inc()
    text = generate_latest(host).decode()
    assert 'push_goaways_total{provider="apns"}' in text
    assert "process_" not in text  # the host keeps its own process metrics; ours never collide with them


def test_metrics_can_be_turned_off_for_a_process():
    before = metrics.NOTIFICATIONS.labels("apns", "off-test", "sent")._value.get()
    metrics.set_enabled(False)
    try:
        n = Notification(token=ok_apns_token(1), platform="apns", app="off-test", title="t")
        from push.classify import classify
        metrics.DeliveryMetrics().outcomes([(None, n, 1, classify("apns", status=200))], ["sent"])
    finally:
        metrics.set_enabled(True)
    assert metrics.NOTIFICATIONS.labels("apns", "off-test", "sent")._value.get() == before


def test_health_endpoints_answer_and_readyz_reports_a_failing_check():
    checks = [("database", True, ""), ("jobs", False, "last run failed: retry")]
    server = HealthServer("127.0.0.1", 0, lambda: checks)
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz", timeout=5)
        assert err.value.code == 503
        assert err.value.read().decode() == "database: ok\njobs: failing: last run failed: retry\n"
        checks[1] = ("jobs", True, "")
        with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert err.value.code == 404
    finally:
        server.close()


def test_readme_metrics_table_is_generated_from_the_code():
    readme = (REPO / "README.md").read_text()
    assert readme_with_metrics(readme) == readme, "README metrics table is stale: run python -m push.docs"
    table = render_metrics()
    for spec in metrics.SPECS:
        assert f"`{spec.name}`" in table


def test_grafana_dashboard_uses_only_metrics_that_exist():
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    names = {spec.name for spec in metrics.SPECS}
    histogram_parts = {f"{spec.name}_{s}" for spec in metrics.SPECS if spec.kind == "histogram"
                       for s in ("bucket", "sum", "count")}
    import re
    used = {m for e in exprs for m in re.findall(r"\bpush_[a-z_]+", e)}
    assert used <= names | histogram_parts, used - names - histogram_parts
    # Every metric shows somewhere on the dashboard.
    base = {re.sub(r"_(bucket|sum|count)$", "", u) if u in histogram_parts else u for u in used}
    assert names - base == set(), names - base
