"""What one measured subprocess runs, and what it reports back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Lines a worker prints on stdout; the parent samples the server's CPU at the markers.
START_MARK = "@bench-start"
STOP_MARK = "@bench-stop"
RESULT_MARK = "@bench-result "

KINDS = ("send_batch", "client", "aioapns", "aioapns_jh2", "fa_async", "fa_sync", "minimal_h2", "minimal_jh2", "httpx")
# Kinds whose libraries read the trust store from the environment (they are pointed at the bench CA).
ENV_TRUST_KINDS = frozenset({"fa_async", "fa_sync"})


@dataclass(frozen=True)
class RunSpec:
    kind: str
    provider: str  # "apns" | "fcm"
    n: int
    concurrency: int = 100
    warmup: int = 1000
    dead: float = 0.0  # share of dead tokens (410 Unregistered / 404 UNREGISTERED)
    db: str | None = None  # send_batch: "sqlite" | "postgres"
    db_url: str | None = None  # postgres: the throwaway database; sqlite: made by the worker
    generator: bool = False  # send_batch: feed a lazy generator instead of a prebuilt list
    profile: str | None = None  # write a cProfile of the timed part to this path
    metrics: bool = True  # False: Prometheus recording off (push.metrics.set_enabled)
    # "bench": `concurrency` in flight for everyone (loopback cases); "default": each client's documented
    # defaults; "best": its best settings (latency profile; see bench/README.md for what each means).
    settings: str = "bench"
    # "jsonl": the timed part starts from JSON lines (parsed and validated on the clock, as
    # `push-feedback send` reads them); "objects": inputs built before the clock starts.
    input: str = "jsonl"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass
class RunResult:
    n: int
    wall_s: float
    cpu_s: float  # the client process, all threads, timed part only
    maxrss_kb: int  # peak RSS of the whole client process
    outcomes: dict[str, int] = field(default_factory=dict)
    expected_failed: int = 0
    server_cpu_s: float = 0.0  # filled in by the parent
    db_cpu_s: float = 0.0  # PostgreSQL backends serving this run (parent, from /proc)
    over_limit: int = 0  # latency server: streams this process opened beyond the announced limit (parent)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(**d)
