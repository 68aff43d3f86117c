"""Summaries, ratios and the three outputs: a rich table, latest.json and latest.md."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cases import BY_ID, CASES, LATENCIES_MS, RATIO_PEERS, TARGETS, Case
from bench.spec import RunResult


@dataclass
class CaseSummary:
    id: str
    label: str
    provider: str
    role: str
    n: int  # notifications per timed run
    runs: list[dict[str, Any]]
    rate_median: float
    rate_min: float
    rate_max: float
    cpu_us: float  # median CPU µs per notification (client process, all threads)
    db_cpu_us: float  # median CPU µs per notification of the PostgreSQL backends (0 for SQLite/none)
    rss_mb: float  # peak RSS over the repetitions
    server_cpu_share: float  # median share of one core the server used while this client ran
    foreign_cores: float  # median CPU (in cores) used by other processes on the machine meanwhile
    correct: bool  # every run got exactly the expected outcomes
    note: str = ""
    over_limit: int = 0  # most streams one run (warm-up included) opened beyond the server's announced limit


@dataclass
class MemoryRun:
    n: int
    rate: float
    cpu_us: float
    rss_mb: float
    correct: bool


@dataclass
class Report:
    date: str
    machine: dict[str, Any]
    server: str
    settings: dict[str, Any]
    cases: list[CaseSummary]
    memory: list[MemoryRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def case(self, case_id: str) -> CaseSummary | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def ratio(self, num: str, den: str) -> float | None:
        a, b = self.case(num), self.case(den)
        if a is None or b is None or not b.rate_median:
            return None
        return a.rate_median / b.rate_median

    def cost_ratio(self, num: str, den: str) -> float | None:
        """Client CPU plus PostgreSQL backend CPU per notification, ``num`` over ``den``."""
        a, b = self.case(num), self.case(den)
        if a is None or b is None or not (b.cpu_us + b.db_cpu_us):
            return None
        return (a.cpu_us + a.db_cpu_us) / (b.cpu_us + b.db_cpu_us)

    def targets(self) -> list[dict[str, Any]]:
        rows = []
        for t in TARGETS:
            value = (self.cost_ratio if t.cost else self.ratio)(t.numerator, t.denominator)
            met = None if value is None else (value <= t.minimum if t.cost else value >= t.minimum)
            rows.append({"target": t.label, "ratio": value, "minimum": t.minimum, "cost": t.cost, "met": met})
        if self.memory:
            big = max(self.memory, key=lambda m: m.n)
            rows.append({"target": f"peak RSS ≤ 150 MB for 1,000,000 notifications (largest run: {big.n:,})",
                         "ratio": big.rss_mb, "minimum": 150.0,
                         "met": big.rss_mb <= 150.0 if big.n >= 1_000_000 else None})
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = {c.id: {peer: self.ratio(c.id, peer) for peer, _ in RATIO_PEERS[c.provider]}
                          for c in self.cases if c.role == "project" and not is_latency(c.id)}
        data["targets"] = self.targets()
        return data


def summarize(case: Case, runs: list[RunResult], note: str = "") -> CaseSummary:
    rates = [r.rate for r in runs]
    shares = [r.server_cpu_s / r.wall_s for r in runs if r.wall_s]
    foreign = [float(r.note.split("=", 1)[1]) for r in runs if r.note.startswith("foreign_cores=")]
    return CaseSummary(
        id=case.id, label=case.label, provider=case.provider, role=case.role, n=runs[0].n if runs else 0,
        runs=[r.to_dict() for r in runs],
        rate_median=statistics.median(rates) if rates else 0.0,
        rate_min=min(rates, default=0.0), rate_max=max(rates, default=0.0),
        cpu_us=statistics.median(r.cpu_s / r.n * 1e6 for r in runs) if runs else 0.0,
        db_cpu_us=statistics.median(r.db_cpu_s / r.n * 1e6 for r in runs) if runs else 0.0,
        rss_mb=max((r.maxrss_kb / 1024 for r in runs), default=0.0),
        server_cpu_share=statistics.median(shares) if shares else 0.0,
        foreign_cores=statistics.median(foreign) if foreign else 0.0,
        correct=bool(runs) and all(is_correct(r) for r in runs), note=note,
        over_limit=max((r.over_limit for r in runs), default=0))


def is_latency(case_id: str) -> bool:
    case = BY_ID.get(case_id)
    return case is not None and case.latency_ms > 0


def latency_peer(case_id: str) -> str | None:
    """The peer at its defaults, same provider and latency, that a latency row is compared with."""
    case = BY_ID[case_id]
    peer = {"apns": "apns-aioapns", "fcm": "fcm-fa-async"}[case.provider]
    return f"{peer}-{case.latency_ms}ms-default"


def latency_loopback(case_id: str) -> str:
    """The loopback case of the same client (pinned, bench settings)."""
    case = BY_ID[case_id]
    if case.kind == "aioapns_jh2":
        return "apns-aioapns-jh2"
    return case_id.rsplit(f"-{case.latency_ms}ms-", 1)[0]


LATENCY_HEADERS = ["client · settings", "msgs/s median [min–max]", "CPU µs/msg", "server CPU",
                   "over-limit streams", "× peer at defaults", "× own loopback"]


def _latency_rows(report: Report, ms: int) -> list[tuple[CaseSummary, list[str]]]:
    out = []
    for c in report.cases:
        case = BY_ID.get(c.id)
        if case is None or case.latency_ms != ms:
            continue
        peer = latency_peer(c.id)
        label = c.label if c.n == report.settings["n"] else f"{c.label} (N={c.n:,})"
        if not c.correct:
            label += " ⚠ unexpected outcomes"
        out.append((c, [label, _rate(c), f"{c.cpu_us:,.0f}", f"{c.server_cpu_share:.0%}", f"{c.over_limit:,}",
                        "1.00×" if peer == c.id else _fmt_ratio(report.ratio(c.id, peer or "")),
                        _fmt_ratio(report.ratio(c.id, latency_loopback(c.id)))]))
    return out


def _target_cells(t: dict[str, Any]) -> tuple[str, str]:
    rss = "RSS" in t["target"]
    value = "–" if t["ratio"] is None else (f"{t['ratio']:.0f} MB" if rss else f"{t['ratio']:.2f}×")
    needed = f"≤ {t['minimum']:.0f} MB" if rss else (f"≤ {t['minimum']:.2f}×" if t.get("cost")
                                                     else f"≥ {t['minimum']:.2f}×")
    return value, needed


def is_correct(r: RunResult) -> bool:
    """All notifications answered, and exactly the dead ones failed."""
    o = r.outcomes
    if "sent" in o or "failed" in o:  # send_batch report
        return o.get("sent", 0) == r.n - r.expected_failed and o.get("failed", 0) == r.expected_failed \
            and sum(o.values()) == r.n
    return o.get("ok", 0) == r.n - r.expected_failed and sum(o.values()) == r.n


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _rate(c: CaseSummary) -> str:
    return f"{c.rate_median:,.0f} [{c.rate_min:,.0f}–{c.rate_max:,.0f}]"


def _headers(provider: str) -> list[str]:
    return ["client", "msgs/s median [min–max]", "CPU µs/msg", "PG µs/msg", "peak RSS MB", "server CPU",
            *[f"× {short}" for _, short in RATIO_PEERS[provider]]]


def _row(report: Report, c: CaseSummary) -> list[str]:
    ratios = [_fmt_ratio(report.ratio(c.id, peer)) if c.id != peer else "1.00×"
              for peer, _ in RATIO_PEERS[c.provider]]
    label = c.label if c.n == report.settings["n"] else f"{c.label} (N={c.n:,})"
    if not c.correct:
        label += " ⚠ unexpected outcomes"
    db = f"{c.db_cpu_us:,.0f}" if c.db_cpu_us else "–"
    return [label, _rate(c), f"{c.cpu_us:,.0f}", db, f"{c.rss_mb:,.0f}", f"{c.server_cpu_share:.0%}", *ratios]


def print_rich(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    for provider, title in (("apns", "APNs"), ("fcm", "FCM")):
        rows = [c for c in report.cases if c.provider == provider and not is_latency(c.id)]
        if not rows:
            continue
        table = Table(title=f"{title} · N={report.settings['n']:,} × {report.settings['reps']} · "
                            f"concurrency {report.settings['concurrency']}")
        for i, h in enumerate(_headers(provider)):
            table.add_column(h, justify="left" if i == 0 else "right")
        for c in rows:
            table.add_row(*_row(report, c), style="bold" if c.role == "project" else None)
        console.print(table)
    for ms in LATENCIES_MS:
        lat_rows = _latency_rows(report, ms)
        if not lat_rows:
            continue
        table = Table(title=f"Latency profile: {ms} ms per request (bench.latency_server)")
        for i, h in enumerate(LATENCY_HEADERS):
            table.add_column(h, justify="left" if i == 0 else "right")
        for c, cells in lat_rows:
            table.add_row(*cells, style="bold" if c.role == "project" else None)
        console.print(table)
    targets = Table(title="Targets (ratios from this run; reported, not asserted)")
    for h in ("target", "value", "needed", ""):
        targets.add_column(h)
    for t in report.targets():
        value, needed = _target_cells(t)
        mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "not run"}[t["met"]]
        targets.add_row(t["target"], value, needed, mark)
    console.print(targets)
    if report.memory:
        mem = Table(title="send_batch from a generator, SQLite (memory vs N)")
        for h in ("N", "msgs/s", "CPU µs/msg", "peak RSS MB"):
            mem.add_column(h, justify="right")
        for m in report.memory:
            mem.add_row(f"{m.n:,}", f"{m.rate:,.0f}", f"{m.cpu_us:,.0f}", f"{m.rss_mb:,.0f}"
                        + ("" if m.correct else " ⚠"))
        console.print(mem)
    for note in report.notes:
        console.print(f"• {note}")


def markdown(report: Report) -> str:
    m = report.machine
    out = [
        "# push-feedback benchmark", "",
        f"- date: {report.date}",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gb']:.0f} GiB; Python {m['python']} "
        f"({m['implementation']}); {m['platform']}",
        f"- server: {report.server}",
        f"- pinning: {report.settings['pinning']}",
        f"- workload: N={report.settings['n']:,} notifications × {report.settings['reps']} repetitions "
        f"(interleaved), concurrency {report.settings['concurrency']}, warm-up {report.settings['warmup']:,} "
        f"per process; every client in its own process",
        f"- load from other processes during the runs: median {report.settings['foreign_cores_median']:.2f} "
        f"cores, max {report.settings['foreign_cores_max']:.2f} (the machine is shared; see notes)",
        "",
    ]
    for provider, title in (("apns", "APNs"), ("fcm", "FCM")):
        rows = [c for c in report.cases if c.provider == provider and not is_latency(c.id)]
        if not rows:
            continue
        heads = _headers(provider)
        out += [f"## {title}", "", "| " + " | ".join(heads) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|"]
        for c in rows:
            cells = _row(report, c)
            if c.role == "project":
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    for ms in LATENCIES_MS:
        lat_rows = _latency_rows(report, ms)
        if not lat_rows:
            continue
        out += [f"## Latency profile: {ms} ms per request", "", "| " + " | ".join(LATENCY_HEADERS) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(LATENCY_HEADERS) - 1)) + "|"]
        for c, cells in lat_rows:
            if c.role == "project":
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Targets", "", "| target | value | needed | |", "|---|---:|---:|---|"]
    for t in report.targets():
        value, needed = _target_cells(t)
        out.append(f"| {t['target']} | {value} | {needed} | "
                   f"{ {True: 'met', False: '**missed**', None: 'not run'}[t['met']] } |")
    out.append("")
    if report.memory:
        out += ["## Memory: send_batch from a generator, SQLite", "",
                "| N | msgs/s | CPU µs/msg | peak RSS MB |", "|---:|---:|---:|---:|"]
        for mr in report.memory:
            out.append(f"| {mr.n:,} | {mr.rate:,.0f} | {mr.cpu_us:,.0f} | {mr.rss_mb:,.0f}"
                       f"{'' if mr.correct else ' ⚠'} |")
        out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(out)


def write(report: Report, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js, md = directory / "latest.json", directory / "latest.md"
    js.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    md.write_text(markdown(report))
    return js, md


def case_order() -> list[str]:
    return [c.id for c in CASES]


__all__ = ["BY_ID", "CaseSummary", "MemoryRun", "Report", "case_order", "markdown", "print_rich", "summarize",
           "write"]
