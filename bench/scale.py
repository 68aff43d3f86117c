"""One delivery sent by 1 and by 2 ``push-feedback worker`` processes (Celery on RabbitMQ, Postgres ledger).

    .venv/bin/python -m bench.scale                 # N=20,000, workers 1 then 2
    .venv/bin/python -m bench.scale -n 50000 --workers 1,2,3 --broker redis://127.0.0.1:6379/0

For each worker count: a throwaway Postgres database, the delivery prepared (not timed: analysis runs in
the producer), the workers started and warmed up on a small delivery of their own (connections, JWT,
OAuth token), then the clock runs from enqueueing the shards to the last ``pending`` row gone. Reported:
combined msgs/s, the ratio to one worker, and CPU per notification of the workers (from /proc, all
threads) and of the Postgres backends serving that database. Prints a Markdown table and writes
``bench/results/scale.json``. Nothing asserts timings: the machine may be shared (see "other CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.cli import BackendCpu, Postgres, busy_cpu_seconds
from bench.env import APNS_TOPIC, FCM_APP, BenchEnv, make_env
from bench.server import FakeServerProcess, NginxServer, find_nginx
from bench.workload import token

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = ROOT / "bench" / "results" / "scale.json"


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    fields = raw[raw.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def worker_env(env: BenchEnv, db_url: str, broker: str, queue: str, concurrency: int) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
    out.update({
        "PYTHONPATH": str(ROOT), "PUSH_DATABASE_URL": db_url, "PUSH_BROKER_URL": broker, "PUSH_QUEUE": queue,
        "PUSH_APNS_BASE_URL": env.url, "PUSH_APNS_KEY_FILE": env.apns_key_file, "PUSH_APNS_KEY_ID": env.apns_key_id,
        "PUSH_APNS_TEAM_ID": env.apns_team_id, "PUSH_FCM_BASE_URL": env.url,
        "PUSH_FCM_CREDENTIALS_FILE": env.service_account_file, "PUSH_CA_FILE": env.ca_file,
        "PUSH_CONCURRENCY": str(concurrency), "PUSH_CHUNK_SIZE": "1000",
    })
    return out


def notifications(n: int, tag: str) -> list[Any]:
    from push import Notification

    return [Notification(token=token("apns" if i % 2 else "fcm", i), platform="apns" if i % 2 else "fcm",
                         app=APNS_TOPIC if i % 2 else FCM_APP, title=tag, body="bench") for i in range(n)]


def wait_done(engine: Any, delivery: str, timeout: float) -> None:
    from tables import shards as sq

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as c:
            if sq.pending_count(c, delivery) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"delivery {delivery} not sent within {timeout:g}s")


def run(env: BenchEnv, pg: Postgres, workers: int, n: int, shard_size: int, broker: str, concurrency: int,
        logdir: Path) -> dict[str, Any]:
    from push import PushConfig
    from push.celery_app import enqueue, make_app
    from push.shards import prepare
    from tables.engine import make_engine
    from tables.migrate import upgrade

    with pg.database() as (url, dbname):
        queue = f"pf-bench-{uuid.uuid4().hex[:8]}"
        penv = worker_env(env, url, broker, queue, concurrency)
        config = PushConfig.from_env(penv)
        engine = make_engine(url)
        upgrade(engine)
        warm = prepare(notifications(300 * workers, "warm"), config, "warm", shard_size=300, engine=engine)
        items = notifications(n, "main")
        s0 = pg_counters(engine)
        t_prep = time.monotonic()
        main = prepare(items, config, "main", shard_size=shard_size, engine=engine)
        t_prep = time.monotonic() - t_prep
        s1 = pg_counters(engine)
        procs = []
        for i in range(workers):
            log = (logdir / f"worker-{workers}-{i}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-c", "from push.cli import main; main()", "worker",
                                           "--name", f"bench{i}@%h", "--loglevel", "WARNING"], cwd=ROOT, env=penv,
                                          stdout=log, stderr=subprocess.STDOUT))
        app = make_app(config)
        try:
            enqueue(app, warm, warm.shards)
            wait_done(engine, "warm", 120)
            backends = BackendCpu(dbname)
            pg0, w0 = backends.snapshot(), [proc_cpu(p.pid) for p in procs]
            busy0, t0 = busy_cpu_seconds(), time.monotonic()
            enqueue(app, main, main.shards)
            wait_done(engine, "main", 600)
            elapsed = time.monotonic() - t0
            busy = busy_cpu_seconds() - busy0
            w_cpu = sum(proc_cpu(p.pid) for p in procs) - sum(w0)
            pg1 = backends.snapshot()
            pg_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
            s2 = pg_counters(engine)
        finally:
            app.close()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(60)
            engine.dispose()
    return {"workers": workers, "n": n, "shards": len(main.shards), "seconds": round(elapsed, 2),
            "msgs_per_s": round(n / elapsed), "worker_cpu_us_per_msg": round(w_cpu / n * 1e6),
            "pg_cpu_us_per_msg": round(pg_cpu / n * 1e6),
            "other_cpu_s": round(max(0.0, busy - w_cpu - pg_cpu), 1),
            "prepare_s": round(t_prep, 2), "prepare_msgs_per_s": round(n / t_prep),
            "prepare_rows_per_msg": per_msg(s0, s1, n, "rows"), "send_rows_per_msg": per_msg(s1, s2, n, "rows"),
            "prepare_wal_bytes_per_msg": per_msg(s0, s1, n, "wal"), "send_wal_bytes_per_msg": per_msg(s1, s2, n, "wal")}


def pg_counters(engine: Any) -> dict[str, float]:
    """Rows inserted + updated + deleted in this database (its statistics, flushed about once a second:
    read after a pause) and the cluster's WAL position (shared with anything else on the server: an
    upper bound for this run)."""
    import sqlalchemy as sa

    time.sleep(1.5)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                                 "FROM pg_stat_user_tables")).scalar_one()
        wal = c.execute(sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")).scalar_one()
    return {"rows": float(rows), "wal": float(wal)}


def per_msg(a: dict[str, float], b: dict[str, float], n: int, key: str) -> float:
    return round((b[key] - a[key]) / n, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2,3")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    ap.add_argument("--pg-admin-url", default=os.environ.get("PUSH_TEST_PG_ADMIN_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--server", choices=("auto", "nginx", "fake"), default="auto")
    args = ap.parse_args(argv)
    pg = Postgres(args.pg_admin_url)
    if pg.error:
        raise SystemExit(f"PostgreSQL is needed: {pg.error}")
    work = Path(tempfile.mkdtemp(prefix="pf-bench-scale-"))
    env = make_env(work)
    found = find_nginx() if args.server != "fake" else None
    server = NginxServer(env, *found) if found else FakeServerProcess(env)
    server.start()
    rows = []
    try:
        for k in (int(x) for x in args.workers.split(",")):
            rows.append(run(env, pg, k, args.n, args.shard_size, args.broker, args.concurrency, work))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop()
    base = rows[0]["msgs_per_s"]
    print(f"\nserver: {server.description}; {os.cpu_count()} cores; N={args.n}, shards of {args.shard_size}\n")
    print("| workers | msgs/s | ratio | worker CPU µs/msg | PG CPU µs/msg | other CPU s | rows/msg (prepare + send) "
          "| WAL B/msg (prepare + send, upper bound) | prepare msgs/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['msgs_per_s']} | {r['msgs_per_s'] / base:.2f}× | {r['worker_cpu_us_per_msg']} "
              f"| {r['pg_cpu_us_per_msg']} | {r['other_cpu_s']} | {r['prepare_rows_per_msg']} + "
              f"{r['send_rows_per_msg']} | {r['prepare_wal_bytes_per_msg']:.0f} + {r['send_wal_bytes_per_msg']:.0f} "
              f"| {r['prepare_msgs_per_s']} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"server": server.description, "cores": os.cpu_count(), "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
