"""The measured matrix: which client, which provider, which database, how many dead tokens."""

from __future__ import annotations

from dataclasses import dataclass

# Peers at under ~1,500 msgs/s here take 15-30 s per 20,000: they run on N/5 by default (each run
# still lasts several seconds) so that the whole bench stays under 10 minutes.
SLOW = 0.2

# Latency-profile runs take N × LAT notifications: at 80 ms and 100 in flight the cap is 1,250 msgs/s.
LAT = 0.25
LATENCIES_MS = (20, 80)

# role: "project" rows are compared against "peer" and "ceiling" rows of the same provider.
PROJECT, PEER, CEILING = "project", "peer", "ceiling"


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    kind: str
    provider: str
    role: str
    db: str | None = None
    dead: float = 0.0
    n_scale: float = 1.0  # slow peers run on N × n_scale notifications (``--full-peers`` runs them on N)
    default: bool = True  # False: only with ``--all`` or a matching ``--only``
    metrics: bool = True  # False: push.metrics.set_enabled(False), the same run's baseline for the metrics cost
    pinned: bool = True  # False: the client process may run on any core (the server stays pinned)
    latency_ms: int = 0  # > 0: against bench.latency_server, answering each request after this delay
    settings: str = "bench"  # "bench" | "default" | "best" (RunSpec.settings)
    grown: bool = False  # send_batch on a database already holding GROWN_ROWS subscriptions and log rows
    input: str = "jsonl"  # "jsonl" (validation on the clock) | "objects" (built before the clock)


def _project(provider: str) -> list[Case]:
    client = "ApnsClient.send" if provider == "apns" else "FcmClient.send"
    return [
        Case(f"{provider}-sb-sqlite", "send_batch · SQLite", "send_batch", provider, PROJECT, "sqlite"),
        Case(f"{provider}-sb-pg", "send_batch · Postgres", "send_batch", provider, PROJECT, "postgres"),
        Case(f"{provider}-sb-sqlite-dead", "send_batch · SQLite · 10% dead", "send_batch", provider, PROJECT,
             "sqlite", 0.1),
        Case(f"{provider}-sb-sqlite-unpinned", "send_batch · SQLite · unpinned", "send_batch", provider, PROJECT,
             "sqlite", pinned=False),
        Case(f"{provider}-sb-sqlite-nometrics", "send_batch · SQLite · metrics off", "send_batch", provider,
             PROJECT, "sqlite", metrics=False, default=False),
        Case(f"{provider}-sb-pg-dead", "send_batch · Postgres · 10% dead", "send_batch", provider, PROJECT,
             "postgres", 0.1, default=False),
        Case(f"{provider}-client", f"client layer ({client})", "client", provider, PROJECT),
        Case(f"{provider}-client-dead", "client layer · 10% dead", "client", provider, PROJECT, None, 0.1,
             default=False),
    ]


APNS_EXTRA = [
    Case("apns-sb-sqlite-prebuilt", "send_batch · SQLite · Notification objects built before the clock",
         "send_batch", "apns", PROJECT, "sqlite", input="objects"),
    Case("apns-sb-sqlite-grown", "send_batch · SQLite · 1M rows already in the tables", "send_batch", "apns",
         PROJECT, "sqlite", grown=True),
    Case("apns-sb-pg-grown", "send_batch · Postgres · 1M rows already in the tables", "send_batch", "apns",
         PROJECT, "postgres", grown=True),
]
APNS_PEERS = [
    Case("apns-aioapns", "aioapns (APNs.send_notification)", "aioapns", "apns", PEER),
    Case("apns-aioapns-jh2", "aioapns on jh2", "aioapns_jh2", "apns", PEER),
    Case("apns-aioapns-unpinned", "aioapns · unpinned", "aioapns", "apns", PEER, pinned=False),
    Case("apns-aioapns-jh2-unpinned", "aioapns on jh2 · unpinned", "aioapns_jh2", "apns", PEER, pinned=False),
    Case("apns-httpx", "httpx.AsyncClient(http2=True)", "httpx", "apns", PEER, n_scale=SLOW, default=False),
    Case("apns-min-h2", "minimal asyncio client on h2", "minimal_h2", "apns", CEILING),
    Case("apns-min-jh2", "minimal asyncio client on jh2", "minimal_jh2", "apns", CEILING),
    Case("apns-min-jh2-unpinned", "minimal asyncio client on jh2 · unpinned", "minimal_jh2", "apns", CEILING,
         pinned=False),
]
FCM_PEERS = [
    Case("fcm-fa-async", "firebase-admin send_each_async", "fa_async", "fcm", PEER, n_scale=SLOW),
    Case("fcm-fa-async-unpinned", "firebase-admin send_each_async · unpinned", "fa_async", "fcm", PEER,
         n_scale=SLOW, pinned=False),
    Case("fcm-fa-sync", "firebase-admin send_each", "fa_sync", "fcm", PEER, n_scale=SLOW),
    Case("fcm-httpx", "httpx.AsyncClient(http2=True)", "httpx", "fcm", PEER, n_scale=SLOW, default=False),
    Case("fcm-min-h2", "minimal asyncio client on h2", "minimal_h2", "fcm", CEILING),
    Case("fcm-min-jh2", "minimal asyncio client on jh2", "minimal_jh2", "fcm", CEILING),
    Case("fcm-min-jh2-unpinned", "minimal asyncio client on jh2 · unpinned", "minimal_jh2", "fcm", CEILING,
         pinned=False),
]

# The latency profile: (id stem, label, kind, provider, role, db, settings), each at every LATENCIES_MS.
_LATENCY_ROWS = [
    ("apns-sb-sqlite", "send_batch · SQLite", "send_batch", "apns", PROJECT, "sqlite", "default"),
    ("apns-sb-sqlite", "send_batch · SQLite", "send_batch", "apns", PROJECT, "sqlite", "best"),
    ("apns-aioapns", "aioapns", "aioapns", "apns", PEER, None, "default"),
    ("apns-aioapns", "aioapns on jh2", "aioapns_jh2", "apns", PEER, None, "best"),
    ("apns-min-jh2", "minimal client on jh2", "minimal_jh2", "apns", CEILING, None, "default"),
    ("apns-min-jh2", "minimal client on jh2", "minimal_jh2", "apns", CEILING, None, "best"),
    ("fcm-sb-sqlite", "send_batch · SQLite", "send_batch", "fcm", PROJECT, "sqlite", "default"),
    ("fcm-sb-sqlite", "send_batch · SQLite", "send_batch", "fcm", PROJECT, "sqlite", "best"),
    ("fcm-fa-async", "firebase-admin send_each_async", "fa_async", "fcm", PEER, None, "default"),
    ("fcm-fa-async", "firebase-admin send_each_async", "fa_async", "fcm", PEER, None, "best"),
    ("fcm-fa-sync", "firebase-admin send_each", "fa_sync", "fcm", PEER, None, "default"),
    ("fcm-min-jh2", "minimal client on jh2", "minimal_jh2", "fcm", CEILING, None, "default"),
    ("fcm-min-jh2", "minimal client on jh2", "minimal_jh2", "fcm", CEILING, None, "best"),
]
_PROVIDER = {"apns": "APNs", "fcm": "FCM"}
LATENCY_CASES = [
    Case(f"{stem}-{ms}ms-{settings}", f"{_PROVIDER[provider]} · {label} · {settings}", kind, provider, role, db,
         n_scale=LAT, latency_ms=ms, settings=settings)
    for ms in LATENCIES_MS for stem, label, kind, provider, role, db, settings in _LATENCY_ROWS
]

CASES: list[Case] = [*_project("apns"), *APNS_EXTRA, *APNS_PEERS, *_project("fcm"), *FCM_PEERS, *LATENCY_CASES]
BY_ID = {c.id: c for c in CASES}

# Columns of the "× peer" ratios, per provider: (case id, short heading).
RATIO_PEERS: dict[str, list[tuple[str, str]]] = {
    "apns": [("apns-aioapns", "aioapns"), ("apns-aioapns-jh2", "aioapns jh2"), ("apns-httpx", "httpx"),
             ("apns-min-h2", "min h2"), ("apns-min-jh2", "min jh2")],
    "fcm": [("fcm-fa-async", "fa async"), ("fcm-fa-sync", "fa sync"), ("fcm-httpx", "httpx"),
            ("fcm-min-h2", "min h2"), ("fcm-min-jh2", "min jh2")],
}


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str  # case id (or memory key)
    denominator: str
    minimum: float  # rate ratio ≥ minimum; with cost=True: CPU-per-notification ratio ≤ minimum
    cost: bool = False


def _peer_targets(suffix: str, how: str) -> list[Target]:
    return [
        Target(f"send_batch SQLite ≥ 1× aioapns on jh2 (APNs, {how})", f"apns-sb-sqlite{suffix}",
               f"apns-aioapns-jh2{suffix}", 1.0),
        Target(f"send_batch SQLite ≥ 2× stock aioapns (APNs, {how})", f"apns-sb-sqlite{suffix}",
               f"apns-aioapns{suffix}", 2.0),
        Target(f"send_batch SQLite ≥ 8× firebase-admin send_each_async (FCM, {how})", f"fcm-sb-sqlite{suffix}",
               f"fcm-fa-async{suffix}", 8.0),
        Target(f"send_batch SQLite ≥ 0.6× minimal jh2 (APNs, {how})", f"apns-sb-sqlite{suffix}",
               f"apns-min-jh2{suffix}", 0.6),
        Target(f"send_batch SQLite ≥ 0.6× minimal jh2 (FCM, {how})", f"fcm-sb-sqlite{suffix}",
               f"fcm-min-jh2{suffix}", 0.6),
    ]


def _latency_targets() -> list[Target]:
    out = []
    for ms in LATENCIES_MS:
        for provider, peer, name in (("apns", "aioapns", "aioapns"), ("fcm", "fa-async", "firebase-admin")):
            sb = f"{provider}-sb-sqlite-{ms}ms-default"
            out += [
                Target(f"{ms} ms, defaults: send_batch ≥ 0.9× its loopback rate ({provider.upper()})", sb,
                       f"{provider}-sb-sqlite", 0.9),
                Target(f"{ms} ms, defaults: send_batch ≥ 2× {name} ({provider.upper()})", sb,
                       f"{provider}-{peer}-{ms}ms-default", 2.0),
            ]
    return out


TARGETS: list[Target] = [
    *_peer_targets("", "pinned"),
    *_peer_targets("-unpinned", "unpinned"),
    *_latency_targets(),
    Target("1M rows in the tables: CPU per notification ≤ 1.1× empty (SQLite)", "apns-sb-sqlite-grown",
           "apns-sb-sqlite", 1.1, cost=True),
    Target("1M rows in the tables: client + backend CPU per notification ≤ 1.1× empty (Postgres)",
           "apns-sb-pg-grown", "apns-sb-pg", 1.1, cost=True),
    Target("Postgres within 15 % of SQLite (APNs)", "apns-sb-pg", "apns-sb-sqlite", 0.85),
    Target("Postgres within 15 % of SQLite (FCM)", "fcm-sb-pg", "fcm-sb-sqlite", 0.85),
    Target("metrics cost ≤ 3 % · send_batch SQLite (APNs)", "apns-sb-sqlite", "apns-sb-sqlite-nometrics", 0.97),
    Target("metrics cost ≤ 3 % · send_batch SQLite (FCM)", "fcm-sb-sqlite", "fcm-sb-sqlite-nometrics", 0.97),
    Target("10 % dead costs ≤ 10 % · send_batch SQLite (APNs)", "apns-sb-sqlite-dead", "apns-sb-sqlite", 0.9),
    Target("10 % dead costs ≤ 10 % · send_batch SQLite (FCM)", "fcm-sb-sqlite-dead", "fcm-sb-sqlite", 0.9),
    Target("10 % dead costs ≤ 10 % · send_batch Postgres (APNs)", "apns-sb-pg-dead", "apns-sb-pg", 0.9),
    Target("10 % dead costs ≤ 10 % · send_batch Postgres (FCM)", "fcm-sb-pg-dead", "fcm-sb-pg", 0.9),
    Target("10 % dead costs ≤ 10 % · client layer (APNs)", "apns-client-dead", "apns-client", 0.9),
    Target("10 % dead costs ≤ 10 % · client layer (FCM)", "fcm-client-dead", "fcm-client", 0.9),
]
