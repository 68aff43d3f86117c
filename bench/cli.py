"""``python -m bench``: start the fake server, run the matrix, print and write the results."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.cases import CASES, LAT, SLOW, Case
from bench.env import BenchEnv, make_env
from bench.grown import GROWN_ROWS, build_postgres, build_sqlite, copy_sqlite
from bench.report import MemoryRun, Report, is_correct, print_rich, summarize, write
from bench.server import (
    CLK_TCK,
    BenchServer,
    FakeServerProcess,
    LatencyServerProcess,
    NginxServer,
    find_nginx,
    have_taskset,
    install_nginx,
    pinned,
)
from bench.spec import ENV_TRUST_KINDS, RESULT_MARK, START_MARK, STOP_MARK, RunResult, RunSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CORE, CLIENT_CORE = 0, 1
RUN_TIMEOUT = 900.0
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

console = Console(width=None if sys.stdout.isatty() else 200)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("-n", type=int, default=20_000, help="notifications per measured run (default 20,000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of every case, interleaved (default 3)")
    p.add_argument("--concurrency", type=int, default=100, help="requests in flight (default 100)")
    p.add_argument("--warmup", type=int, default=500, help="notifications sent before timing, per process")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only cases whose id matches (repeatable), e.g. 'apns-*' or '*-sb-*'")
    p.add_argument("--all", action="store_true", help="also run the optional cases (Postgres with dead tokens)")
    p.add_argument("--full-peers", action="store_true",
                   help="run the slow peers (httpx, firebase-admin) on N too, not N/5 (adds several minutes)")
    p.add_argument("--big", action="store_true",
                   help="memory check at 100,000 and 1,000,000 notifications instead of 40,000 and 160,000")
    p.add_argument("--memory-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   metavar="N1,N2", help="explicit sizes for the memory check (0 to skip it)")
    p.add_argument("--server", choices=("auto", "nginx", "fake"), default="auto",
                   help="fake server: nginx (installed with apt-get if missing) or the Python FakePushServer")
    p.add_argument("--no-install", action="store_true", help="never run apt-get for nginx")
    p.add_argument("--pg-admin-url", default=os.environ.get("PUSH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    p.add_argument("--out", type=Path, default=None,
                   help="where latest.json / latest.md go (default bench/results/, with --quick bench/results/quick/)")
    p.add_argument("--grown-rows", type=int, default=None, metavar="ROWS",
                   help=f"rows already in the tables for the *-grown cases (default {GROWN_ROWS:,})")
    p.add_argument("--quick", action="store_true",
                   help="every case end to end in a few minutes: N=2,000, 1 repetition, warm-up 200, "
                        "grown tables of 20,000 rows, no memory check (numbers are not comparable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--profile", metavar="CASE", help="profile one case (py-spy if installed, else cProfile) and exit")
    args = p.parse_args(argv)
    if args.quick:
        explicit = set(argv if argv is not None else sys.argv[1:])
        if "-n" not in explicit:
            args.n = 2_000
        if "--reps" not in explicit:
            args.reps = 1
        if "--warmup" not in explicit:
            args.warmup = 200
        if args.memory_sizes is None:
            args.memory_sizes = [0]
        if args.grown_rows is None:
            args.grown_rows = 20_000
    if args.grown_rows is None:
        args.grown_rows = GROWN_ROWS
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    return args


# --------------------------------------------------------------------------- machine facts


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {"nproc": int(nproc) if nproc.isdigit() else os.cpu_count(), "cpu_model": model, "mem_gb": mem_gb,
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "loadavg_start": os.getloadavg()[0]}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


# --------------------------------------------------------------------------- PostgreSQL


class BackendCpu(threading.Thread):
    """CPU of the PostgreSQL backends serving one database, polled from /proc (their title names it)."""

    def __init__(self, database: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="pg-backend-cpu")
        self._needle = f" {database} ".encode()
        self._interval = interval
        self._seen: dict[int, float] = {}  # pid -> latest cumulative CPU seconds
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(self._interval)

    def poll(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if self._needle not in fh.read().replace(b"\0", b" ") + b" ":
                        continue
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            fields = raw[raw.rfind(b")") + 2:].split()
            with self._lock:
                self._seen[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK

    def snapshot(self) -> dict[int, float]:
        self.poll()
        with self._lock:
            return dict(self._seen)

    def stop(self) -> None:
        self._stop_event.set()


class Postgres:
    """Throwaway databases on the local server, one per run, dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.error: str | None = None
        try:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5):
                pass
        except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL runs"
            self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"

    @contextmanager
    def database(self, template: str | None = None) -> Iterator[tuple[str, str]]:
        """(SQLAlchemy URL, database name) of a new database (empty, or a copy of ``template``), dropped on exit."""
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        name = f"pfbench_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            admin.execute(create)
        try:
            yield make_url(self.admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False), name
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- one run


Sample = tuple[str, float, float, dict[int, float], float]  # line, server CPU, busy CPU, PG backends, time


def _read_lines(proc: subprocess.Popen[str], backends: BackendCpu | None, server: BenchServer) -> Iterator[Sample]:
    """The worker's stdout lines, each with the machine's counters sampled as it arrived."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if line in (START_MARK, STOP_MARK):
            yield (line, server.cpu_seconds(), busy_cpu_seconds(),
                   backends.snapshot() if backends is not None else {}, time.perf_counter())
        else:
            yield line, 0.0, 0.0, {}, 0.0


def run_worker(spec: RunSpec, env: BenchEnv, server: BenchServer, log: Path,
               backends: BackendCpu | None = None, pin: bool = True) -> RunResult:
    """Run one measured client in its own (pinned) process and sample the server around its timed part."""
    child_env = dict(os.environ)
    if spec.kind in ENV_TRUST_KINDS:
        # requests/httpx inside the peer read their trust store from these variables.
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            child_env[var] = env.ca_file
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.worker", spec.to_json(), env.to_json()]
    if pin:
        cmd = pinned(cmd, CLIENT_CORE)
    result: RunResult | None = None
    server0 = server1 = busy0 = busy1 = t0 = t1 = 0.0
    db0: dict[int, float] = {}
    db1: dict[int, float] = {}
    over0 = server.over_limit()
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=child_env)
        watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)  # a hung worker prints nothing: kill it
        watchdog.daemon = True
        watchdog.start()
        try:
            lines = list(_read_lines(proc, backends, server))
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait()
    for line, server_cpu, busy, db, t in lines:
        if line == START_MARK:
            server0, busy0, db0, t0 = server_cpu, busy, db, t
        elif line == STOP_MARK:
            server1, busy1, db1, t1 = server_cpu, busy, db, t
        elif line.startswith(RESULT_MARK):
            result = RunResult.from_dict(json.loads(line[len(RESULT_MARK):]))
    if rc != 0 or result is None:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{spec.kind}/{spec.provider} failed (exit {rc}"
                           f"{', killed after ' + str(RUN_TIMEOUT) + ' s' if rc == -9 else ''}); log {log}:\n{tail}")
    if over0 or isinstance(server, LatencyServerProcess):
        time.sleep(0.1)  # the server writes its count every 50 ms
    result.over_limit = server.over_limit() - over0
    result.server_cpu_s = server1 - server0
    result.db_cpu_s = sum(cpu - db0.get(pid, 0.0) for pid, cpu in db1.items())
    wall = t1 - t0
    other = (busy1 - busy0) - result.cpu_s - result.server_cpu_s - result.db_cpu_s
    result.note = f"foreign_cores={max(0.0, other) / wall if wall > 0 else 0.0:.3f}"
    return result


class Grown:
    """The grown-tables templates, built on first use and reused by every run that needs them."""

    def __init__(self, rows: int, workdir: Path, pg: Postgres | None) -> None:
        self.rows = rows
        self.workdir = workdir
        self.pg = pg
        self.sqlite: Path | None = None
        self.pg_name: str | None = None
        self._pg_cm: Any = None
        self.notes: list[str] = []

    def sqlite_copy(self, target: Path) -> str:
        if self.sqlite is None:
            path = self.workdir / "grown-template.db"
            took = build_sqlite(path, self.rows)
            self.sqlite = path
            self.notes.append(f"grown SQLite template: {self.rows:,} subscriptions + {self.rows:,} delivery_log rows "
                              f"built in {took:.1f} s ({path.stat().st_size / 2**20:,.0f} MiB), copied for each run")
            console.print(f"  {self.notes[-1]}")
        return copy_sqlite(self.sqlite, target)

    def pg_template(self) -> str:
        if self.pg_name is None:
            assert self.pg is not None
            self._pg_cm = self.pg.database()
            url, name = self._pg_cm.__enter__()
            took = build_postgres(url, self.rows)
            self.pg_name = name
            self.notes.append(f"grown Postgres template: {self.rows:,} subscriptions + {self.rows:,} delivery_log "
                              f"rows built in {took:.1f} s; each run gets CREATE DATABASE … TEMPLATE it")
            console.print(f"  {self.notes[-1]}")
        return self.pg_name

    def close(self) -> None:
        if self._pg_cm is not None:
            self._pg_cm.__exit__(None, None, None)
            self._pg_cm = None


Servers = dict[int, tuple[BenchServer, BenchEnv]]  # latency in ms (0: loopback nginx) -> server and its env


def run_case(case: Case, args: argparse.Namespace, servers: Servers, pg: Postgres | None, log: Path,
             grown: Grown | None = None, *, n: int | None = None, generator: bool = False) -> RunResult:
    server, env = servers[case.latency_ms]
    spec = RunSpec(kind=case.kind, provider=case.provider, n=n or case_n(case, args), concurrency=args.concurrency,
                   warmup=args.warmup, dead=case.dead, db=case.db, generator=generator, metrics=case.metrics,
                   settings=case.settings, input=case.input)
    if case.db == "postgres":
        assert pg is not None
        template = grown.pg_template() if case.grown and grown is not None else None
        with pg.database(template) as (url, name):
            backends = BackendCpu(name)
            backends.start()
            try:
                return run_worker(RunSpec(**{**spec.__dict__, "db_url": url}), env, server, log, backends,
                                  pin=case.pinned)
            finally:
                backends.stop()
    if case.db == "sqlite" and case.grown and grown is not None:
        target = Path(tempfile.mkdtemp(prefix="pf-bench-grown-", dir=grown.workdir)) / "bench.db"
        try:
            url = grown.sqlite_copy(target)
            return run_worker(RunSpec(**{**spec.__dict__, "db_url": url}), env, server, log, pin=case.pinned)
        finally:
            shutil.rmtree(target.parent, ignore_errors=True)
    return run_worker(spec, env, server, log, pin=case.pinned)


def run_profile(case: Case, args: argparse.Namespace, env: BenchEnv, server: BenchServer, pg: Postgres | None,
                workdir: Path) -> None:
    from bench.profile import profile

    spec = RunSpec(kind=case.kind, provider=case.provider, n=case_n(case, args), concurrency=args.concurrency,
                   warmup=args.warmup, dead=case.dead, db=case.db)
    if case.db == "postgres":
        assert pg is not None
        with pg.database() as (url, _name):
            profile(RunSpec(**{**spec.__dict__, "db_url": url}), env, workdir, ROOT, CLIENT_CORE, console)
    else:
        profile(spec, env, workdir, ROOT, CLIENT_CORE, console)


# --------------------------------------------------------------------------- main


def select(patterns: list[str], everything: bool) -> list[Case]:
    if not patterns:
        return [c for c in CASES if c.default or everything]
    return [c for c in CASES if any(fnmatch.fnmatch(c.id, p) for p in patterns)]


def case_n(case: Case, args: argparse.Namespace) -> int:
    n: int = args.n
    if case.latency_ms:  # bounded by in-flight / delay, not by CPU: scaled down even with --full-peers
        return max(1, round(n * LAT))
    return n if args.full_peers else max(1, round(n * case.n_scale))


def start_server(args: argparse.Namespace, env: BenchEnv, log: Path) -> tuple[BenchServer, list[str]]:
    notes: list[str] = []
    if args.server in ("auto", "nginx"):
        found = find_nginx()
        if found is None and not args.no_install:
            console.print("nginx or its njs module is missing: installing from Debian's packages …")
            install_nginx(log)
            found = find_nginx()
        if found is not None:
            server: BenchServer = NginxServer(env, *found, core=SERVER_CORE)
            server.start()
            return server, notes
        if args.server == "nginx":
            raise SystemExit("nginx (with libnginx-mod-http-js) is not available")
        notes.append("nginx could not be installed: FALLBACK to fixtures.server.FakePushServer in a subprocess; "
                     "it is pure Python and may itself be the bottleneck (see the server CPU column)")
    server = FakeServerProcess(env, core=SERVER_CORE)
    server.start()
    return server, notes


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: nginx stopped, databases dropped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    cases = select(args.only, args.all)
    if args.list:
        for c in CASES:
            extra = ("" if c.default else "  (optional: --all)") + (f"  (N×{c.n_scale:g})" if c.n_scale != 1 else "")
            console.print(f"{c.id:24} {c.label}{extra}")
        return 0
    if args.profile:
        cases = [c for c in CASES if c.id == args.profile and not c.latency_ms and not c.grown]
        if not cases:
            raise SystemExit(f"unknown case {args.profile!r}; see --list")
    if not cases:
        raise SystemExit(f"no case matches {args.only}")
    started = time.monotonic()
    facts = machine()
    workdir = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    log = workdir / "bench.log"
    env = make_env(workdir)
    server, notes = start_server(args, env, log)
    if server.__class__ is FakeServerProcess:
        env = BenchEnv(**{**env.__dict__, "server": "fake"})
    pg: Postgres | None = None
    if any(c.db == "postgres" for c in cases):
        pg = Postgres(args.pg_admin_url)
        if pg.error:
            notes.append(f"PostgreSQL unreachable at {args.pg_admin_url} ({pg.error}): Postgres cases skipped")
            cases = [c for c in cases if c.db != "postgres"]
            pg = None
    servers: Servers = {0: (server, env)}
    for ms in sorted({c.latency_ms for c in cases if c.latency_ms}):
        lat_env = make_env(workdir / f"latency-{ms}ms")
        lat = LatencyServerProcess(lat_env, ms, core=SERVER_CORE)
        lat.start()
        servers[ms] = (lat, lat_env)
        notes.append(f"latency profile at {ms} ms: {lat.description}. The delay is added in the server between "
                     "the request's last frame and the answer; it does not model TCP slow start, the TLS handshake's "
                     "and SETTINGS exchange's round trips, WINDOW_UPDATEs arriving a round trip late, jitter or loss")
    grown = Grown(args.grown_rows, workdir, pg) if any(c.grown for c in cases) else None
    pinning = (f"server on core {SERVER_CORE}, each client process on core {CLIENT_CORE} (taskset), "
               "except the *-unpinned cases (client free to use both cores)"
               if have_taskset() else "none (taskset missing or a single core)")
    console.print(f"[bold]push-feedback bench[/] · {server.description}\n"
                  f"  {len(cases)} cases × {args.reps} reps, N={args.n:,}, concurrency {args.concurrency}; "
                  f"pinning: {pinning}")
    if args.profile:
        try:
            run_profile(cases[0], args, env, server, pg, workdir)
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    runs: dict[str, list[RunResult]] = {c.id: [] for c in cases}
    failures: dict[str, str] = {}
    memory: list[MemoryRun] = []
    try:
        for rep in range(args.reps):
            for case in cases:
                if case.id in failures:
                    continue
                try:
                    r = run_case(case, args, servers, pg, log, grown)
                except RuntimeError as exc:
                    failures[case.id] = str(exc)
                    console.print(f"[red]{case.id} failed[/]: {str(exc)[:2000]}")
                    continue
                runs[case.id].append(r)
                flag = "" if is_correct(r) else f" [red]unexpected outcomes {r.outcomes}[/]"
                console.print(f"  rep {rep + 1}/{args.reps} {case.id:22} {r.rate:9,.0f} msgs/s  "
                              f"{r.cpu_s / r.n * 1e6:6,.0f} µs/msg  {r.maxrss_kb / 1024:5,.0f} MB  "
                              f"server {r.server_cpu_s / r.wall_s:4.0%}  other load {r.note.split('=')[1]}"
                              f"{flag}")
        sizes = args.memory_sizes if args.memory_sizes is not None else (
            [100_000, 1_000_000] if args.big else [40_000, 160_000])
        sizes = [s for s in sizes if s > 0]
        mem_case = next(c for c in CASES if c.id == "apns-sb-sqlite")
        for size in sizes:
            r = run_case(mem_case, args, servers, pg, log, n=size, generator=True)
            memory.append(MemoryRun(size, r.rate, r.cpu_s / r.n * 1e6, r.maxrss_kb / 1024, is_correct(r)))
            console.print(f"  memory N={size:>9,}  {r.rate:9,.0f} msgs/s  {r.maxrss_kb / 1024:5,.0f} MB peak RSS")
    finally:
        for srv, _env in servers.values():
            srv.stop()
        if grown is not None:
            grown.close()
            notes.extend(grown.notes)
    summaries = [summarize(c, runs[c.id], failures.get(c.id, "")[:300]) for c in cases if runs[c.id]]
    for cid, why in failures.items():
        notes.append(f"{cid} failed: {why.splitlines()[0][:300]}")
    for s in summaries:
        if not s.correct:
            notes.append(f"{s.id}: outcomes differ from the expected ones: {[r['outcomes'] for r in s.runs]}")
    foreign = [float(r.note.split("=")[1]) for rs in runs.values() for r in rs]
    if foreign and max(foreign) > 0.25:
        notes.append(f"other processes used up to {max(foreign):.2f} cores during some runs (median "
                     f"{statistics.median(foreign):.2f}): numbers from a shared machine are noisy; compare "
                     "ratios within one run")
    if memory:
        notes.append(f"memory check: send_batch APNs on SQLite from a lazy generator, every result taken back "
                     f"through on_result, at N = {', '.join(f'{m.n:,}' for m in memory)}")
    scaled = sorted({c.id for c in cases if c.n_scale != 1 and not c.latency_ms and not args.full_peers})
    if scaled:
        notes.append(f"slow peers ({', '.join(scaled)}) ran on N×{SLOW:g} notifications to keep the bench under "
                     "10 minutes (each run still lasts several seconds); --full-peers runs them on N")
    notes.append("inputs: every client starts from JSON lines (one per notification, as `push-feedback send` reads "
                 "them) and parses them on the clock into its own request objects: send_batch gets "
                 "Notification.from_dict(json.loads(line)) lazily, the client layer the same per send, aioapns "
                 "NotificationRequest, firebase-admin Message, the minimal and httpx clients their raw request; "
                 "apns-sb-sqlite-prebuilt builds the Notifications before the clock, as earlier runs of this bench did")
    if any(c.latency_ms for c in cases):
        notes.append("latency profile settings: `default` = each client's documented defaults (send_batch: "
                     "PushConfig's concurrency 500 over 2 connections; aioapns: its pool of 10 connections, 100 in "
                     "flight from the caller since aioapns bounds nothing itself; firebase-admin: one call of 500 "
                     "messages, its documented maximum, at a time; minimal client: 100 in flight); `best` = "
                     "send_batch concurrency 2,000; aioapns on jh2 with 1,000 in flight; send_each_async 4 calls "
                     "of 500 at once; minimal client 1,000 in flight. Latency runs use N×0.25 notifications "
                     "(also with --full-peers). \"over-limit streams\": streams a run (warm-up included) opened "
                     "beyond the MAX_CONCURRENT_STREAMS the server had announced; the server serves them anyway")
    notes.append("peers get their trust store from SSL_CERT_FILE/REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE set to the "
                 "bench CA in their process; aioapns is given an ssl_context with ALPN h2 and a protocol "
                 "subclass pointing at 127.0.0.1; firebase-admin's FCM_URL constant is overridden and the "
                 "same 100-connection requests adapter it mounts for fcm.googleapis.com is mounted for the "
                 "local origin; send_each / send_each_async get batches of `concurrency` messages")
    report = Report(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=facts,
        server=server.description,
        settings={"n": args.n, "reps": args.reps, "concurrency": args.concurrency, "warmup": args.warmup,
                  "pinning": pinning, "grown_rows": args.grown_rows, "quick": args.quick,
                  "duration_s": round(time.monotonic() - started, 1),
                  "foreign_cores_median": statistics.median(foreign) if foreign else 0.0,
                  "foreign_cores_max": max(foreign, default=0.0)},
        cases=summaries, memory=memory, notes=notes)
    print_rich(report, console)
    js, md = write(report, args.out)
    console.print(f"wrote {js} and {md} in {time.monotonic() - started:,.0f} s")
    if failures:
        console.print(f"workdir with the workers' log kept: {log}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0
