"""The measured matrix: which client, which provider, which database, how many dead tokens."""

from __future__ import annotations

from dataclasses import dataclass

# Peers at under ~1,500 msgs/s here take 15-30 s per 20,000: they run on N/5 by default (each run
# still lasts several seconds) so that the whole bench stays under 10 minutes.
SLOW = 0.2

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


def _project(provider: str) -> list[Case]:
    client = "ApnsClient.send" if provider == "apns" else "FcmClient.send"
    return [
        Case(f"{provider}-sb-sqlite", "send_batch · SQLite", "send_batch", provider, PROJECT, "sqlite"),
        Case(f"{provider}-sb-pg", "send_batch · Postgres", "send_batch", provider, PROJECT, "postgres"),
        Case(f"{provider}-sb-sqlite-dead", "send_batch · SQLite · 10% dead", "send_batch", provider, PROJECT,
             "sqlite", 0.1),
        Case(f"{provider}-sb-sqlite-nometrics", "send_batch · SQLite · metrics off", "send_batch", provider,
             PROJECT, "sqlite", metrics=False),
        Case(f"{provider}-sb-pg-dead", "send_batch · Postgres · 10% dead", "send_batch", provider, PROJECT,
             "postgres", 0.1, default=False),
        Case(f"{provider}-client", f"client layer ({client})", "client", provider, PROJECT),
        Case(f"{provider}-client-dead", "client layer · 10% dead", "client", provider, PROJECT, None, 0.1),
    ]


APNS_PEERS = [
    Case("apns-aioapns", "aioapns (APNs.send_notification)", "aioapns", "apns", PEER),
    Case("apns-httpx", "httpx.AsyncClient(http2=True)", "httpx", "apns", PEER, n_scale=SLOW),
    Case("apns-min-h2", "minimal asyncio client on h2", "minimal_h2", "apns", CEILING),
    Case("apns-min-jh2", "minimal asyncio client on jh2", "minimal_jh2", "apns", CEILING),
]
FCM_PEERS = [
    Case("fcm-fa-async", "firebase-admin send_each_async", "fa_async", "fcm", PEER, n_scale=SLOW),
    Case("fcm-fa-sync", "firebase-admin send_each", "fa_sync", "fcm", PEER, n_scale=SLOW),
    Case("fcm-httpx", "httpx.AsyncClient(http2=True)", "httpx", "fcm", PEER, n_scale=SLOW),
    Case("fcm-min-h2", "minimal asyncio client on h2", "minimal_h2", "fcm", CEILING),
    Case("fcm-min-jh2", "minimal asyncio client on jh2", "minimal_jh2", "fcm", CEILING),
]

CASES: list[Case] = [*_project("apns"), *APNS_PEERS, *_project("fcm"), *FCM_PEERS]
BY_ID = {c.id: c for c in CASES}

# Columns of the "× peer" ratios, per provider: (case id, short heading).
RATIO_PEERS: dict[str, list[tuple[str, str]]] = {
    "apns": [("apns-aioapns", "aioapns"), ("apns-httpx", "httpx"), ("apns-min-h2", "min h2"),
             ("apns-min-jh2", "min jh2")],
    "fcm": [("fcm-fa-async", "fa async"), ("fcm-fa-sync", "fa sync"), ("fcm-httpx", "httpx"),
            ("fcm-min-h2", "min h2"), ("fcm-min-jh2", "min jh2")],
}


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str  # case id (or memory key)
    denominator: str
    minimum: float


TARGETS: list[Target] = [
    Target("send_batch SQLite ≥ 2× aioapns (APNs)", "apns-sb-sqlite", "apns-aioapns", 2.0),
    Target("send_batch SQLite ≥ 8× firebase-admin send_each_async (FCM)", "fcm-sb-sqlite", "fcm-fa-async", 8.0),
    Target("send_batch SQLite ≥ 0.5× minimal jh2 (APNs)", "apns-sb-sqlite", "apns-min-jh2", 0.5),
    Target("send_batch SQLite ≥ 0.5× minimal jh2 (FCM)", "fcm-sb-sqlite", "fcm-min-jh2", 0.5),
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
