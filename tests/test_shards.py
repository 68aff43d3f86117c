"""push.shards in one process: prepare, then send shard by shard — on SQLite and Postgres, real fake servers.

What workers on many hosts add (brokers, kills, redeliveries) is in tests/scale/.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push import Notification, read_report, send_batch
from push.clock import SystemClock
from push.errors import ConfigError, ValidationError
from push.shards import (ClientPool, Shard, prepare, require_shared_ledger, send_shard, shard_lock_name, shards,
                         unfinished_shards)
from tables import shards as sq
from tables.engine import make_engine
from tables.locks import named_lock
from tables.migrate import upgrade
from tables.models import DELIV, DLOG, QUAR
from tests.faults.helpers import APP, FCM_APP, assert_ledger, make_config


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine"), request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_engine"), request.getfixturevalue("_pg_session_url")


def mixed(n: int) -> list[Notification]:
    """Dead, soft-error, transient and ok tokens on both platforms, a duplicate, one without a token."""
    out = []
    for i in range(n):
        kind = i % 10
        if kind == 1:
            out.append(Notification(token=apns_token("unregistered", i), platform="apns", app=APP, title="t", body="b"))
        elif kind == 2:
            out.append(Notification(token=apns_token("device_token_not_for_topic", i), platform="apns", app=APP,
                                    title="t", body="b"))
        elif kind == 3:
            out.append(Notification(token=apns_token("internal_server_error", i), platform="apns", app=APP,
                                    title="t", body="b"))
        elif kind == 4:
            out.append(Notification(token=fcm_token("unregistered", i), platform="fcm", app=FCM_APP, title="t",
                                    body="b"))
        elif kind == 5:
            out.append(Notification(token=fcm_token("internal", i), platform="fcm", app=FCM_APP, title="t", body="b"))
        elif kind in (6, 7):
            out.append(Notification(token=ok_fcm_token(i), platform="fcm", app=FCM_APP, title="t", body="b"))
        else:
            out.append(Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t", body="b"))
    out.append(Notification(token=ok_apns_token(0), platform="apns", app=APP, title="t", body="b"))  # duplicate
    out.append(Notification(token=None, platform="fcm", app=FCM_APP, title="t", body="b"))  # no address
    return out


def outcome_of(engine, delivery: str) -> dict:
    """What the report compares: counts per status / type / reason, and the quarantine entries."""
    rep = read_report(engine, delivery).as_dict()
    for k in ("delivery_id", "resumed", "stopped", "stop_signal", "unsent_resends", "resent_in_doubt"):
        rep.pop(k)
    with engine.connect() as c:
        quarantine = sorted(tuple(r) for r in c.execute(sa.select(QUAR.c.platform, QUAR.c.token, QUAR.c.status,
                                                                  QUAR.c.error_count)))
    return {"report": rep, "quarantine": quarantine}


def send_all(delivery: str, cfg, engine, stop=None):
    async def run():
        pool = ClientPool(cfg)
        try:
            return [await send_shard(delivery, s, cfg, engine=engine, clients=pool, stop=stop)
                    for s in shards(engine, delivery)]
        finally:
            await pool.aclose()
    return asyncio.run(run())


def test_prepare_then_shards_equals_send_batch(db, fake_server, apns_key, service_account, tmp_path):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, chunk_size=150)
    items = mixed(1000)
    prep = prepare(items, cfg, "sharded", shard_size=130, engine=engine)
    assert (prep.count, prep.shard_size, len(prep.shards)) == (1002, 130, 8)
    assert prep.shards[-1] == Shard(7, 910, 1001)
    assert prep.report.excluded == 2 and prep.report.pending == 1000 and not fake_server.requests
    results = send_all("sharded", cfg, engine)
    assert [r.finished_delivery for r in results] == [False] * 7 + [True]
    assert sum(r.sent for r in results) == 1000 and not any(r.busy or r.stopped for r in results)
    assert_ledger(engine, "sharded", len(items), fake_server.accepted)
    with engine.connect() as c:
        row = c.execute(sa.select(DELIV).where(DELIV.c.id == "sharded")).one()
    assert row.finished_at is not None and row.sent == read_report(engine, "sharded").sent
    sharded = outcome_of(engine, "sharded")

    fake_server.reset()
    baseline = make_engine(f"sqlite:///{tmp_path}/baseline.db")
    upgrade(baseline)
    send_batch(items, cfg.with_(database_url=str(baseline.url)), "sharded", engine=baseline)
    assert outcome_of(baseline, "sharded") == sharded
    assert Counter(sharded["report"]["failed_by_type_reason"]).total() > 0 and sharded["quarantine"]
    # A shard sent again finds nothing pending and sends nothing.
    again = send_all("sharded", cfg, engine)
    assert sum(r.sent for r in again) == 0 and unfinished_shards(engine, "sharded") == []


def test_a_shard_whose_lease_is_held_is_not_touched(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    prepare([Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t", body="b") for i in range(50)],
            cfg, "held", shard_size=25, engine=engine)
    first, second = shards(engine, "held")
    with named_lock(engine, shard_lock_name("held", 0), SystemClock()) as lease:
        assert lease is not None
        busy = asyncio.run(send_shard("held", first, cfg, engine=engine))
        other = asyncio.run(send_shard("held", second, cfg, engine=engine))
    assert busy.busy and busy.sent == 0 and other.sent == 25 and not other.finished_delivery
    assert len(fake_server.requests) == 25
    assert [s.index for s in unfinished_shards(engine, "held")] == [0]
    done = asyncio.run(send_shard("held", first, cfg, engine=engine))
    assert done.sent == 25 and done.finished_delivery
    assert_ledger(engine, "held", 50, fake_server.accepted)


def test_claims_of_a_dead_worker_are_recorded_interrupted_never_resent(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    prepare([Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t", body="b") for i in range(40)],
            cfg, "dead", shard_size=40, engine=engine)
    now = SystemClock().now()
    with engine.begin() as conn:  # a worker claimed seqs 3..7, then died before their outcomes
        conn.execute(sa.update(DLOG).where(DLOG.c.delivery_id == "dead", DLOG.c.seq.between(3, 7))
                     .values(attempts=1, claimed_by="dead-worker", updated_at=now - timedelta(seconds=5)))
    res = asyncio.run(send_shard("dead", shards(engine, "dead")[0], cfg, engine=engine))
    assert (res.interrupted, res.sent, res.finished_delivery) == (5, 35, True)
    rows = {r.seq: r for r in store_rows(engine, "dead")}
    assert all(rows[s].status == "failed" and "interrupted" in rows[s].error_text for s in range(3, 8))
    assert len(fake_server.requests) == 35


def store_rows(engine, delivery):
    with engine.connect() as c:
        return list(c.execute(sa.select(DLOG).where(DLOG.c.delivery_id == delivery)))


def test_a_drained_shard_keeps_the_rest_pending_for_the_next_worker(db, fake_server, apns_key, service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, concurrency=10)
    fake_server.slow_delay = 0.1  # 300 answers, 10 at a time: 3 s, long enough to stop half way
    prepare([Notification(token=apns_token("slow", i), platform="apns", app=APP, title="t", body="b")
             for i in range(300)], cfg, "drain", shard_size=300, engine=engine)

    class AfterFifty:  # a drain asked for once the server has seen 50 sends
        def is_set(self):
            return len(fake_server.requests) >= 50

    res = asyncio.run(send_shard("drain", shards(engine, "drain")[0], cfg, engine=engine, stop=AfterFifty()))
    assert res.stopped and not res.finished_delivery and 0 < res.sent < 300
    with engine.connect() as c:
        left = sq.progress(c, "drain", 300)[0]
    assert left.in_flight == 0 and left.waiting == 300 - res.sent
    res2 = asyncio.run(send_shard("drain", shards(engine, "drain")[0], cfg, engine=engine))
    assert res2.sent == 300 - res.sent and res2.finished_delivery
    assert_ledger(engine, "drain", 300, fake_server.accepted)


def test_prepare_is_idempotent_and_send_batch_refuses_a_prepared_delivery(db, fake_server, apns_key,
                                                                          service_account):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url)
    items = [Notification(token=ok_apns_token(i), platform="apns", app=APP, title="t", body="b") for i in range(30)]
    first = prepare(items, cfg, "twice", shard_size=10, engine=engine)
    again = prepare(items, cfg, "twice", engine=engine)
    assert not first.already_prepared and again.already_prepared and again.shards == first.shards
    with pytest.raises(ValidationError, match="shard size 10") as e:
        prepare(items, cfg, "twice", shard_size=20, engine=engine)
    assert e.value.field == "shard_size"
    with pytest.raises(ValidationError, match="prepared for workers"):
        send_batch(items, cfg, "twice", engine=engine)
    with pytest.raises(ValidationError, match="shard_size"):
        prepare(items, cfg, "other", shard_size=0, engine=engine)
    assert not fake_server.requests


def test_a_multi_worker_delivery_on_sqlite_is_refused_in_one_line(sqlite_engine, pg_engine):
    with pytest.raises(ConfigError) as e:
        require_shared_ledger(sqlite_engine)
    assert e.value.setting == "PUSH_DATABASE_URL" and "needs PostgreSQL" in str(e.value)
    assert "\n" not in str(e.value)
    require_shared_ledger(pg_engine)


def test_the_readme_example_for_another_engine_is_valid_python_on_this_api():
    import ast
    import inspect
    from pathlib import Path

    import push.shards

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### The engine-agnostic API"):]
    code = section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]
    tree = ast.parse(code)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "push.shards"
                for a in node.names}
    assert imported <= set(dir(push.shards)), imported - set(dir(push.shards))
    params = inspect.signature(push.shards.send_shard).parameters
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "send_shard")
    assert {k.arg for k in call.keywords} <= set(params)
