"""send_batch logic on SQLite and Postgres, with an injected clock and senders answering golden responses."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from jobs.retry import run_retries
from push.clock import FakeClock, utc
from push.config import PushConfig
from push.errors import ValidationError
from push.notification import Notification
from push.pipeline import asend_batch, read_report
from tables import store
from tables.models import Denylist, DeliveryLog, ExclusionLog, Quarantine, AppSubscription
from tests.pipeline_helpers import ScriptedSender

APP = "com.example.app"


def N(token, platform="apns", **kw):
    return Notification(token=token, platform=platform, app=APP, title="hi", body="there", **kw)


@pytest.fixture
def clock():
    return FakeClock(datetime(2025, 6, 1, tzinfo=timezone.utc))


@pytest.fixture
def cfg():
    return PushConfig(concurrency=8, chunk_size=25)


def senders():
    return {"apns": ScriptedSender("apns"), "fcm": ScriptedSender("fcm")}


def run(notifs, cfg, engine, clock, clients, delivery=None):
    return asyncio.run(asend_batch(notifs, cfg, delivery, engine=engine, clock=clock, clients=clients))


def logs(engine, delivery_id):
    t = DeliveryLog.__table__
    with engine.connect() as c:
        return {r.seq: r for r in c.execute(sa.select(t).where(t.c.delivery_id == delivery_id))}


def quarantine_rows(engine):
    t = Quarantine.__table__
    with engine.connect() as c:
        return {r.token: r for r in c.execute(sa.select(t))}


def assert_report_matches_table(engine, rep):
    t = DeliveryLog.__table__
    with engine.connect() as c:
        counts = dict(c.execute(sa.select(t.c.status, sa.func.count()).where(t.c.delivery_id == rep.delivery_id)
                                .group_by(t.c.status)).all())
    assert counts.get("sent", 0) == rep.sent
    assert counts.get("retry_pending", 0) == rep.retry_pending
    assert counts.get("excluded", 0) == rep.excluded_total
    assert counts.get("failed", 0) == rep.failed_total
    assert counts.get("pending", 0) == 0 == rep.pending
    assert sum(counts.values()) == rep.total


def test_every_notification_ends_in_exactly_one_row(engine, cfg, clock):
    notifs = [N(ok_apns_token(i)) for i in range(40)] + [N(ok_fcm_token(i), "fcm") for i in range(40)]
    notifs += [N(apns_token("unregistered", 1)), N(fcm_token("unregistered", 1), "fcm"), N(None), N(""),
               N(ok_apns_token(0)), N(apns_token("internal_server_error", 2)), N(fcm_token("quota_exceeded", 3), "fcm")]
    rep = run(iter(notifs), cfg, engine, clock, senders(), "mixed-1")
    rows = logs(engine, "mixed-1")
    assert sorted(rows) == list(range(len(notifs)))
    assert rep.total == len(notifs)
    assert rep.sent == 80
    assert rep.excluded_by_reason == {"address not specified": 2, "duplicate": 1}
    assert rep.failed_by_type_reason["hard / user unknown"] == 2
    assert rep.retry_pending == 2  # quota exceeded (the V2 table) and APNs 500 (choice 3) are retried
    assert rows[len(notifs) - 1].next_retry_at is not None
    assert_report_matches_table(engine, rep)


def test_analysis_exclusions_each_reason(engine, cfg, clock):
    disabled, quarantined, denied, ok = ok_apns_token(1), ok_apns_token(2), ok_apns_token(3), ok_apns_token(4)
    with engine.begin() as c:
        store.register_token(c, app=APP, platform="apns", token=disabled, now=clock.now())
        c.execute(sa.update(AppSubscription.__table__).where(AppSubscription.__table__.c.token == disabled)
                  .values(disabled=True, disabled_reason=1))
        c.execute(sa.insert(Quarantine.__table__).values(platform="apns", app=APP, token=quarantined,
                  status="quarantine", error_count=1, updated_at=clock.now()))
        store.register_token(c, app=APP, platform="apns", token=denied, profile_id="p-9", now=clock.now())
        c.execute(sa.insert(Denylist.__table__).values(profile_id="p-9", channel="apns", created_at=clock.now()))
    big = N(ok_apns_token(5), data={"blob": "x" * 5000})
    notifs = [N(disabled), N(quarantined), N(denied, profile_id="p-9"), big, N(None), N(ok), N(ok)]
    rep = run(notifs, cfg, engine, clock, senders(), "excl")
    rows = logs(engine, "excl")
    reasons = [rows[i].failure_reason for i in range(7)]
    assert reasons == [1, 9, 8, 20, 7, None, 10]
    assert [rows[i].status for i in range(7)] == ["excluded"] * 5 + ["sent", "excluded"]
    assert rep.quarantined_at_analysis == 1
    t = ExclusionLog.__table__
    with engine.connect() as c:
        ex = c.execute(sa.select(t.c.failure_reason, t.c.source).where(t.c.delivery_id == "excl")).all()
    assert sorted(r for r, _ in ex) == [1, 7, 8, 9, 10, 20] and {s for _, s in ex} == {"analysis"}
    assert_report_matches_table(engine, rep)


def test_hard_failure_quarantines_and_next_delivery_excludes(engine, cfg, clock):
    dead = apns_token("unregistered", 7)
    with engine.begin() as c:
        store.register_token(c, app=APP, platform="apns", token=dead, now=clock.now() - timedelta(days=400))
    rep = run([N(dead)], cfg, engine, clock, senders(), "h1")
    assert rep.quarantined_after_delivery == 1
    q = quarantine_rows(engine)[dead]
    assert q.status == "quarantine" and q.failure_type == "hard" and q.failure_reason == 1
    assert utc(q.provider_timestamp).year == 2025
    s2 = senders()
    rep2 = run([N(dead)], cfg, engine, clock, s2, "h2")
    assert rep2.excluded_by_reason == {"quarantined": 1} and s2["apns"].sent[dead] == 0


def test_410_older_than_registration_does_not_quarantine(engine, cfg, clock):
    tok = apns_token("unregistered_old", 1)  # timestamp 2020-01-01, registered 2025
    rep = run([N(tok)], cfg, engine, clock, senders(), "r410")
    assert rep.failed_by_type_reason == {"hard / user unknown": 1}
    assert tok not in quarantine_rows(engine) or quarantine_rows(engine)[tok].status != "quarantine"


def test_soft_errors_reach_threshold_and_provider_errors_never_count(engine, cfg, clock):
    soft = apns_token("bad_device_token", 1)
    five03 = apns_token("service_unavailable", 1)
    fcm_busy = fcm_token("unavailable", 1)
    for i in range(5):
        run([N(soft), N(five03), N(fcm_busy, "fcm")], cfg, engine, clock, senders(), f"s{i}")
        clock.advance(hours=1)
        q = quarantine_rows(engine)
        assert q[soft].error_count == i + 1
        assert q[soft].status == ("quarantine" if i == 4 else "with_errors")
        assert five03 not in q and fcm_busy not in q


def test_soft_counter_restarts_after_ten_quiet_days(engine, cfg, clock):
    soft = apns_token("bad_device_token", 2)
    for i in range(3):
        run([N(soft)], cfg, engine, clock, senders(), f"a{i}")
    clock.advance(days=11)
    run([N(soft)], cfg, engine, clock, senders(), "a-late")
    assert quarantine_rows(engine)[soft].error_count == 1


def test_success_returns_with_errors_to_valid(engine, cfg, clock):
    tok = ok_apns_token(77)
    soft = ScriptedSender("apns")
    from push.classify import classify
    soft.override[tok] = classify("apns", status=400, body=b'{"reason":"BadDeviceToken"}')
    run([N(tok)], cfg, engine, clock, {"apns": soft}, "v1")
    assert quarantine_rows(engine)[tok].status == "with_errors"
    run([N(tok)], cfg, engine, clock, senders(), "v2")
    q = quarantine_rows(engine)[tok]
    assert q.status == "valid" and q.error_count == 0


def test_retry_after_schedules_and_retry_job_sends(engine, cfg, clock):
    tok = fcm_token("quota_exceeded", 9)
    rep = run([N(tok, "fcm")], cfg, engine, clock, senders(), "rt")
    row = logs(engine, "rt")[0]
    assert rep.retry_pending == 1 and row.attempts == 1
    # Retry-After 30 s is below the 1-minute first backoff, so the backoff wins
    assert utc(row.next_retry_at) == clock.now() + timedelta(seconds=60)
    s = ScriptedSender("fcm")
    res = asyncio.run(run_retries(engine, cfg, clock, clients={"fcm": s}))
    assert res.examined == 0 and sum(s.sent.values()) == 0  # not due yet
    clock.advance(seconds=61)
    res = asyncio.run(run_retries(engine, cfg, clock, clients={"fcm": s}))
    assert res.examined == 1 and res.rescheduled == 1
    row = logs(engine, "rt")[0]
    assert row.attempts == 2 and utc(row.next_retry_at) == clock.now() + timedelta(seconds=120)
    from push.classify import classify
    ok = ScriptedSender("fcm", {tok: classify("fcm", status=200, body=b'{"name":"projects/p/messages/1"}')})
    clock.advance(seconds=121)
    asyncio.run(run_retries(engine, cfg, clock, clients={"fcm": ok}))
    row = logs(engine, "rt")[0]
    assert row.status == "sent" and row.attempts == 3 and row.provider_id == "projects/p/messages/1"
    assert read_report(engine, "rt").sent == 1


def test_retries_stop_after_max_attempts_and_at_expiry(engine, clock):
    cfg = PushConfig(retry_max_attempts=2, concurrency=4, chunk_size=10)
    tok = fcm_token("unavailable", 4)
    run([N(tok, "fcm")], cfg, engine, clock, senders(), "mx")
    clock.advance(hours=1)
    asyncio.run(run_retries(engine, cfg, clock, clients=senders()))
    row = logs(engine, "mx")[0]
    assert row.status == "failed" and row.attempts == 2
    tok2 = fcm_token("unavailable", 5)
    cfg2 = PushConfig(validity_seconds=3600, concurrency=4, chunk_size=10)
    run([N(tok2, "fcm")], cfg2, engine, clock, senders(), "ex")
    clock.advance(hours=2)
    asyncio.run(run_retries(engine, cfg2, clock, clients=senders()))
    assert logs(engine, "ex")[0].status == "failed"


class Crash(BaseException):
    pass


class CrashingSender(ScriptedSender):
    def __init__(self, provider, after):
        super().__init__(provider)
        self.after = after

    async def send(self, n, **kw):
        if sum(self.sent.values()) >= self.after:
            raise Crash()
        await asyncio.sleep(0)
        return await super().send(n, **kw)


def test_resume_after_crash_never_double_sends(engine, clock):
    cfg = PushConfig(concurrency=5, chunk_size=20)
    tokens = [ok_apns_token(i) for i in range(100)]
    crashing = CrashingSender("apns", after=37)
    with pytest.raises(Crash):
        run((N(t) for t in tokens), cfg, engine, clock, {"apns": crashing}, "crash-1")
    first = crashing.sent
    second = ScriptedSender("apns")
    rep = run((N(t) for t in tokens), cfg, engine, clock, {"apns": second}, "crash-1")
    assert rep.resumed
    both = first + second.sent
    assert max(both.values()) == 1, "a notification was sent twice"
    rows = logs(engine, "crash-1")
    assert sorted(rows) == list(range(100))
    assert all(r.status in ("sent", "failed") for r in rows.values())
    interrupted = [r for r in rows.values() if r.status == "failed"]
    assert all(r.error_text and "interrupted" in r.error_text for r in interrupted)
    assert 0 < len(interrupted) <= cfg.concurrency
    assert rep.sent + len(interrupted) == 100
    assert_report_matches_table(engine, rep)
    # a third run changes nothing and sends nothing
    third = ScriptedSender("apns")
    run((N(t) for t in tokens), cfg, engine, clock, {"apns": third}, "crash-1")
    assert sum(third.sent.values()) == 0


def test_generator_is_consumed_lazily(engine, clock):
    """A generator is read a chunk at a time (plus the one analysed ahead), not drained up front: when
    the first send goes out, at most two chunks have been read."""
    cfg = PushConfig(concurrency=5, chunk_size=10)
    consumed: list[int] = []
    read_at_first_send: list[int] = []

    class Watching(ScriptedSender):
        async def send(self, n, **kw):
            if not read_at_first_send:
                read_at_first_send.append(len(consumed))
            return await super().send(n, **kw)

    def gen():
        for i in range(100):
            consumed.append(i)
            yield N(ok_fcm_token(i), "fcm")
    rep = run(gen(), cfg, engine, clock, {"fcm": Watching("fcm")}, "gen")
    assert rep.sent == 100 and len(consumed) == 100
    assert read_at_first_send and read_at_first_send[0] <= 2 * cfg.chunk_size, read_at_first_send


def test_bad_items_name_the_field(engine, cfg, clock):
    with pytest.raises(ValidationError, match="platform"):
        run([{"token": "ab" * 32, "platform": "wns", "app": APP}], cfg, engine, clock, senders())
    with pytest.raises(ValidationError, match="delivery"):
        run([], cfg, engine, clock, senders(), "x" * 65)
    with pytest.raises(ValidationError, match="notifications"):
        run([42], cfg, engine, clock, senders())


def test_dict_notifications_are_accepted(engine, cfg, clock):
    rep = run([{"token": ok_apns_token(1), "platform": "apns", "app": APP, "title": "t"}], cfg, engine, clock,
              senders(), "dicts")
    assert rep.sent == 1


def test_failures_feed_qualification_rules(engine, cfg, clock):
    run([N(apns_token("bad_device_token", i)) for i in range(3)], cfg, engine, clock, senders(), "rules")
    with engine.connect() as c:
        rules = store.load_qualification_rules(c, provider="apns")
    rule = rules[("apns", "APNs 400 BadDeviceToken")]
    assert rule.occurrences == 3 and rule.first_text == "APNs 400 BadDeviceToken"


def test_provider_and_ignored_outcomes_skip_the_quarantine_lookup(engine, cfg, clock, monkeypatch):
    """Provider-scoped and ignored/undefined outcomes never reach the quarantine lookup, nor do successes
    to tokens analysis saw valid; token failures do, and so does a success to a token with errors."""
    seen = []
    real = store.apply_quarantine

    def spy(conn, outcomes_by_key, **kw):
        seen.append(set(outcomes_by_key))
        return real(conn, outcomes_by_key, **kw)

    monkeypatch.setattr(store, "apply_quarantine", spy)
    busy = [apns_token("service_unavailable", i) for i in range(3)] + [fcm_token("unavailable", 1)]
    run([N(t) for t in busy[:3]] + [N(busy[3], "fcm")], cfg, engine, clock, senders(), "busy")
    assert seen == [] and quarantine_rows(engine) == {}
    soft = apns_token("bad_device_token", 3)
    run([N(busy[0]), N(soft), N(ok_apns_token(5))], cfg, engine, clock, senders(), "mixed")
    assert set().union(*seen) == {("apns", APP, soft)}
    assert quarantine_rows(engine)[soft].status == "with_errors"
    seen.clear()
    from push.classify import classify
    recovered = ScriptedSender("apns", {soft: classify("apns", status=200, headers={"apns-id": "x"})})
    run([N(soft), N(ok_apns_token(6))], cfg, engine, clock, {"apns": recovered}, "recovered")
    assert set().union(*seen) == {("apns", APP, soft)}
    assert quarantine_rows(engine)[soft].status == "valid"


def test_retries_carry_the_apns_id_of_the_first_send(engine, cfg, clock):
    class Recording(ScriptedSender):
        def __init__(self):
            super().__init__("apns")
            self.ids = []

        async def send(self, n, **kw):
            self.ids.append(kw.get("apns_id"))
            return await super().send(n, **kw)

    tok = apns_token("no_response", 4)  # a timeout: retried
    first = Recording()
    run([N(ok_apns_token(1)), N(tok)], cfg, engine, clock, {"apns": first}, "ids")
    assert logs(engine, "ids")[1].status == "retry_pending"
    clock.advance(hours=1)
    again = Recording()
    asyncio.run(run_retries(engine, cfg, clock, clients={"apns": again}))
    assert again.ids == [first.ids[1]] and first.ids[1] != first.ids[0]


class WaitForNextChunkSender(ScriptedSender):
    """Holds its first send until the next chunk's rows are in the database."""

    def __init__(self, engine, delivery: str, first_seq_of_next_chunk: int):
        super().__init__("apns")
        self.engine, self.delivery, self.next_seq = engine, delivery, first_seq_of_next_chunk
        self.saw_next_chunk = False

    async def send(self, n, **kw):
        if not self.sent:
            for _ in range(500):
                if any(seq >= self.next_seq for seq in logs(self.engine, self.delivery)):
                    self.saw_next_chunk = True
                    break
                await asyncio.sleep(0.01)
        return await super().send(n, **kw)


def test_next_chunk_is_analysed_while_the_current_one_is_sent(engine, clock):
    # Concurrency below the chunk size: the sender loop is stuck in the first chunk while the first
    # send is held, so the second chunk's rows can only appear if it is analysed ahead.
    cfg = PushConfig(concurrency=2, chunk_size=10)
    sender = WaitForNextChunkSender(engine, "ahead-1", 10)
    rep = run((N(ok_apns_token(i)) for i in range(25)), cfg, engine, clock, {"apns": sender}, "ahead-1")
    assert sender.saw_next_chunk
    assert rep.sent == 25 and sum(sender.sent.values()) == 25
    assert sorted(logs(engine, "ahead-1")) == list(range(25))


def test_outcome_values_line_up_with_the_outcome_update_columns():
    from push.pipeline import OUTCOME_COLUMNS

    assert ("delivery_id", "seq", "claimed_by", *OUTCOME_COLUMNS, "updated_at") == store.OutcomeUpdate._fields
    assert ("id", "claimed_by", *OUTCOME_COLUMNS, "updated_at") == store.RetryOutcomeUpdate._fields
