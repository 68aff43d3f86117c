"""The database goes away mid-batch: the batch stops with a clear StorageError, and a resume with the
same delivery id completes with exactly one row per notification and no double send."""

from __future__ import annotations

import sqlite3
from collections import Counter

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from fixtures.scenarios import ok_apns_token, ok_fcm_token
from push.errors import StorageError
from tables.engine import make_engine
from tables.migrate import upgrade
from tests.db_plugin import _create_database, _drop_database, _libpq_url
from tests.faults.helpers import apns_id, apns_n, assert_ledger, fault, fcm_n, log_rows, make_config, run_batch

COUNT = 600
KILL_AT = 150  # sends before the database goes away


def notifications():
    return [apns_n(ok_apns_token(i)) if i % 3 else fcm_n(ok_fcm_token(i)) for i in range(COUNT)]


def check_clear_storage_error(exc: BaseException) -> None:
    assert type(exc) is StorageError, type(exc)
    msg = str(exc)
    assert msg.startswith("database error during delivery:") and "\n" not in msg, msg
    assert "Traceback" not in msg and len(msg) < 400


def check_resume(engine, fake_server, delivery, accepted_before, requests_before, pending_before):
    rows = assert_ledger(engine, delivery, COUNT, fake_server.accepted)
    again = [r for r in fake_server.requests[requests_before:]
             if r.provider == "apns" and accepted_before.get(r.headers.get("apns-id"), 0)]
    assert not again, "a notification accepted before the failure was sent again on resume"
    fcm_before = {k.rsplit(":", 1)[0] for k in accepted_before if ":APA91b" in k}
    assert not [r for r in fake_server.requests[requests_before:] if r.provider == "fcm" and r.token in fcm_before]
    # In flight when the database went away: its answer, if one came and was kept (push.unwritten),
    # else recorded 'interrupted'; never resent (documented policy).
    for seq, attempts in pending_before.items():
        r = rows[seq]
        if attempts > 0 and r.status == "sent":
            assert r.platform == "fcm" or accepted_before.get(apns_id(delivery, seq)) == 1, seq
        elif attempts > 0:
            assert r.status == "failed" and "interrupted" in r.error_text, (seq, r.status, r.error_text)
        else:  # never launched: it was not sent before, so it is sent now
            assert r.status == "sent"
            if r.platform == "apns":
                assert not accepted_before.get(apns_id(delivery, seq))
    return rows


def snapshot(engine, delivery):
    return {r.seq: r.attempts for r in log_rows(engine, delivery) if r.status == "pending"}


@pytest.mark.parametrize("refuse", [True, False], ids=["terminated+refused", "terminated"])
def test_postgres_connections_killed_mid_batch(refuse, fake_server, apns_key, service_account, pg_admin_url):
    url = _create_database(pg_admin_url, "_kill")
    engine = make_engine(url)
    upgrade(engine)
    name = make_url(url).database
    admin = psycopg.connect(_libpq_url(pg_admin_url), autocommit=True)
    killed: list[int] = []

    def allow(on: bool) -> None:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if on else "false")))

    def hook(calls, n):  # calls counts per provider client: fire once, at the first to get there
        if calls == KILL_AT and not killed:
            if refuse:
                allow(False)
            pids = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", [name]).fetchall()
            killed.append(len(pids))

    try:
        cfg = make_config(fake_server, apns_key, service_account, url, concurrency=20, chunk_size=100)
        error = None
        try:
            run_batch(notifications(), cfg, "pgkill-1", hook=hook)
        except StorageError as exc:
            error = exc
        fault("PostgreSQL backends terminated mid-batch")
        assert killed and killed[0] >= 1, "the pipeline's connections were terminated"
        if refuse:
            assert error is not None, "the database stayed unavailable: the batch must stop"
        if error is not None:  # killed inside a transaction (or refused): a clear error
            check_clear_storage_error(error)
        # else: the kill hit idle pooled connections only, and pool_pre_ping replaced them
        allow(True)  # the database is back
        pending_before = snapshot(engine, "pgkill-1")
        accepted_before = Counter(fake_server.accepted)
        requests_before = len(fake_server.requests)
        rep = run_batch(notifications(), cfg, "pgkill-1")
        assert rep.resumed and rep.pending == 0
        check_resume(engine, fake_server, "pgkill-1", accepted_before, requests_before, pending_before)
    finally:
        try:
            allow(True)
        finally:
            admin.close()
            engine.dispose()
            _drop_database(pg_admin_url, url)


def test_sqlite_locked_by_another_writer_mid_batch(fake_server, apns_key, service_account, sqlite_engine,
                                                   sqlite_url, monkeypatch):
    monkeypatch.setattr("tables.engine.SQLITE_BUSY_TIMEOUT_MS", 300)  # the pipeline's engine waits 0.3 s, not 5
    path = make_url(sqlite_url).database
    locker = sqlite3.connect(path, isolation_level=None, timeout=5)

    locked: list[bool] = []

    def hook(calls, n):
        if calls == KILL_AT and not locked:
            locked.append(True)
            locker.execute("BEGIN IMMEDIATE")  # holds the write lock well beyond the busy timeout
            locker.execute("UPDATE delivery SET label = label")

    try:
        cfg = make_config(fake_server, apns_key, service_account, sqlite_url, concurrency=20, chunk_size=100)
        with pytest.raises(StorageError) as ei:
            run_batch(notifications(), cfg, "sqlock-1", hook=hook)
        fault("SQLite write lock held beyond the busy timeout")
        check_clear_storage_error(ei.value)
        assert "locked" in str(ei.value)
        locker.execute("ROLLBACK")  # the database is back
        pending_before = snapshot(sqlite_engine, "sqlock-1")
        assert pending_before, "the batch stopped part-way"
        accepted_before = Counter(fake_server.accepted)
        requests_before = len(fake_server.requests)
        rep = run_batch(notifications(), cfg, "sqlock-1")
        assert rep.resumed and rep.pending == 0
        check_resume(sqlite_engine, fake_server, "sqlock-1", accepted_before, requests_before, pending_before)
    finally:
        locker.close()


def test_outcome_writer_connections_terminated_lose_no_answer(fake_server, apns_key, service_account, pg_admin_url):
    """The pipeline's connections are terminated, over and over, while answers come in (the delivery's
    lease session is spared: losing it stops a run on purpose). Every answer is still written: each
    token answered 410 / UNREGISTERED is quarantined, and the report counts what the server accepted."""
    from fixtures.scenarios import apns_token, fcm_token

    url = _create_database(pg_admin_url, "_writer")
    engine = make_engine(url)
    upgrade(engine)
    name = make_url(url).database
    admin = psycopg.connect(_libpq_url(pg_admin_url), autocommit=True)
    kills: list[int] = []

    def hook(calls, n):
        if calls % 60 == 0 and len(kills) < 8:
            pids = admin.execute(
                "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.datname = %s "
                "AND a.pid <> pg_backend_pid() AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid "
                "AND l.locktype = 'advisory')", [name]).fetchall()
            kills.append(len(pids))

    notifs = []
    for i in range(COUNT):
        if i % 10 == 3:
            notifs.append(apns_n(apns_token("unregistered", i)))
        elif i % 10 == 7:
            notifs.append(fcm_n(fcm_token("unregistered", i)))
        else:
            notifs.append(apns_n(ok_apns_token(i)) if i % 3 else fcm_n(ok_fcm_token(i)))
    try:
        cfg = make_config(fake_server, apns_key, service_account, url, concurrency=20, chunk_size=100)
        rep = run_batch(notifs, cfg, "writer-1", hook=hook)
        fault("PostgreSQL outcome-writer connections terminated", sum(kills))
        assert sum(kills) >= 3, kills
        rows = assert_ledger(engine, "writer-1", COUNT, fake_server.accepted)
        dead = {n.token for n in notifs if "scn_unregistered" in (n.token or "") or (n.token or "").startswith("ffff")}
        with engine.connect() as c:
            quarantined = {r[0] for r in c.exec_driver_sql("SELECT token FROM quarantine WHERE status = 'quarantine'")}
        assert dead <= quarantined, f"{len(dead - quarantined)} tokens answered 410/UNREGISTERED not quarantined"
        assert rep.sent == sum(r.status == "sent" for r in rows.values()) == COUNT - len(dead)
    finally:
        admin.close()
        engine.dispose()
        _drop_database(pg_admin_url, url)


def test_answers_the_database_could_not_take_are_written_by_the_resume(fake_server, apns_key, service_account,
                                                                       pg_admin_url, monkeypatch, tmp_path):
    """The database refuses connections for longer than the outcome write retries: the batch stops, but
    the answers that came meanwhile are kept on disk; the resume writes them first (a 410 among them
    still quarantines its token), so the report counts every notification the server accepted."""
    from fixtures.scenarios import apns_token

    import push.pipeline

    monkeypatch.setattr(push.pipeline, "OUTCOME_WRITE_ATTEMPTS", 2)  # give up after 0.05 s, not 15 s
    url = _create_database(pg_admin_url, "_kept")
    engine = make_engine(url)
    upgrade(engine)
    name = make_url(url).database
    admin = psycopg.connect(_libpq_url(pg_admin_url), autocommit=True)
    refused: list[int] = []

    def hook(calls, n):
        if calls == KILL_AT and not refused:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            refused.append(len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                             "WHERE datname = %s AND pid <> pg_backend_pid()", [name]).fetchall()))

    notifs = [apns_n(apns_token("unregistered", i)) if i % 5 == 2 else apns_n(ok_apns_token(i)) for i in range(COUNT)]
    try:
        cfg = make_config(fake_server, apns_key, service_account, url, concurrency=20, chunk_size=100,
                          unwritten_dir=str(tmp_path))
        with pytest.raises(StorageError):
            run_batch(notifs, cfg, "kept-1", hook=hook)
        fault("PostgreSQL refusing connections beyond the outcome write retries")
        kept = list(tmp_path.glob("*.jsonl"))
        assert kept and kept[0].read_text().count("\n") >= 1, "the answers that came were kept"
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        accepted_before = Counter(fake_server.accepted)
        rep = run_batch(notifs, cfg, "kept-1")
        assert not list(tmp_path.glob("*.jsonl")), "the resume wrote the kept answers and removed the file"
        rows = assert_ledger(engine, "kept-1", COUNT, fake_server.accepted)
        assert not [r for r in rows.values() if r.error_text and "interrupted" in r.error_text and r.platform == "apns"
                    and accepted_before.get(apns_id("kept-1", r.seq))], "an accepted send recorded as interrupted"
        accepted = sum(1 for k in fake_server.accepted if k.count("-") == 4)  # APNs acceptances, by apns-id
        assert rep.sent == accepted, (rep.sent, accepted, Counter((r.status, (r.error_text or "")[:40]) for r in rows.values()))
        dead = {n.token for n in notifs if n.token.startswith("ffff")}
        with engine.connect() as c:
            quarantined = {r[0] for r in c.exec_driver_sql("SELECT token FROM quarantine WHERE status = 'quarantine'")}
        assert dead <= quarantined, f"{len(dead - quarantined)} tokens answered 410 were not quarantined"
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        admin.close()
        engine.dispose()
        _drop_database(pg_admin_url, url)
