"""Shared pieces of the fault-tolerance suite: config, ledger checks, sender hooks, a freezable proxy.

``assert_ledger`` is the one invariant every fault test ends with: exactly one
``delivery_log`` row per notification handed in, none left ``pending``, and the
fake server never accepted a notification twice. It also feeds ``FIGURES``,
which ``conftest.py`` prints at the end of the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from push import Notification, PushConfig, asend_batch
from push.apns import ApnsClient
from push.fcm import FcmClient
from push.pipeline import _ID_NAMESPACE
from tables.models import ALL_TABLES, DeliveryLog, Quarantine

APP = "com.example.app"
FCM_APP = "android-app"

# Answers a database fault left unwritten (push.unwritten): per test session, never the user's own.
UNWRITTEN_DIR = os.path.join(tempfile.gettempdir(), f"push-feedback-test-unwritten-{os.getpid()}")

# Session-wide figures for the final report (see conftest.pytest_terminal_summary).
FIGURES: Counter[str] = Counter()


def fault(kind: str, n: int = 1) -> None:
    """Count an injected fault."""
    FIGURES["faults injected"] += n
    FIGURES[f"fault: {kind}"] += n


def bad_input(n: int = 1) -> None:
    FIGURES["bad inputs tried"] += n


def make_config(fake_server: Any, apns_key: Any, service_account: Any, db_url: str = "sqlite:///:memory:",
                **kw: Any) -> PushConfig:
    values: dict[str, Any] = dict(
        database_url=db_url, apns_base_url=fake_server.url, apns_key_file=str(apns_key.path),
        apns_key_id=apns_key.key_id, apns_team_id=apns_key.team_id, fcm_base_url=fake_server.url,
        fcm_credentials_file=str(service_account.path), ca_file=str(fake_server.ca_file),
        stream_timeout=2.0, chunk_size=100, concurrency=50, unwritten_dir=UNWRITTEN_DIR)
    values.update(kw)
    return PushConfig(**values)


def apns_n(token: str | None, **kw: Any) -> Notification:
    kw.setdefault("title", "t")
    kw.setdefault("body", "b")
    return Notification(token=token, platform="apns", app=APP, **kw)


def fcm_n(token: str | None, **kw: Any) -> Notification:
    kw.setdefault("title", "t")
    kw.setdefault("body", "b")
    return Notification(token=token, platform="fcm", app=FCM_APP, **kw)


def apns_id(delivery: str, seq: int) -> str:
    """The apns-id the pipeline sends for (delivery, seq): stable across resends and resumes."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{delivery}:{seq}"))


def fcm_accept_token(key: str) -> str:
    """The fake server counts FCM acceptances as ``<token>:<sha256(body)>``."""
    return key.rsplit(":", 1)[0]


def log_rows(engine: sa.Engine, delivery: str) -> list[Any]:
    t = DeliveryLog.__table__
    with engine.connect() as c:
        return list(c.execute(sa.select(t).where(t.c.delivery_id == delivery).order_by(t.c.seq)))


def quarantine_rows(engine: sa.Engine) -> dict[str, Any]:
    t = Quarantine.__table__
    with engine.connect() as c:
        return {r.token: r for r in c.execute(sa.select(t))}


def assert_ledger(engine: sa.Engine, delivery: str, count: int, accepted: Mapping[str, int],
                  *, check_sent_accepted: bool = True) -> dict[int, Any]:
    """Exactly one row per notification, nothing pending, nothing accepted twice.

    With ``check_sent_accepted`` every row recorded ``sent`` must also have been
    accepted exactly once by the server (APNs by apns-id, FCM by token).
    """
    rows = log_rows(engine, delivery)
    by_seq: dict[int, Any] = {}
    for r in rows:
        assert r.seq not in by_seq, f"two rows for seq {r.seq}"
        by_seq[r.seq] = r
    pending = [r.seq for r in rows if r.status == "pending"]
    dups = {k: v for k, v in accepted.items() if v > 1}
    missing = sorted(set(range(count)) - set(by_seq))
    FIGURES["notifications handed in"] += count
    FIGURES["rows sent"] += sum(r.status == "sent" for r in rows)
    FIGURES["lost (no row or left pending)"] += len(missing) + len(pending)
    FIGURES["duplicated at the server"] += sum(v - 1 for v in dups.values())
    assert not missing, f"no delivery_log row for seqs {missing[:20]}"
    assert sorted(by_seq) == list(range(count)), "rows for seqs that were never handed in"
    assert not pending, f"rows left pending: {pending[:20]}"
    assert not dups, f"accepted more than once by the server: {list(dups.items())[:5]}"
    if check_sent_accepted:
        fcm_accepted = Counter()
        for key, v in accepted.items():
            fcm_accepted[fcm_accept_token(key)] += v
        for r in rows:
            if r.status != "sent":
                continue
            if r.platform == "apns":
                assert accepted.get(apns_id(delivery, r.seq)) == 1, f"seq {r.seq} recorded sent, not accepted"
            else:
                assert fcm_accepted.get(r.token) == 1, f"seq {r.seq} recorded sent, not accepted"
    return by_seq


class Hooked:
    """Wraps a real client; ``hook(calls, notification)`` runs before each send."""

    def __init__(self, inner: Any, hook: Callable[[int, Notification], Awaitable[None] | None] | None = None):
        self.inner = inner
        self.provider = inner.provider
        self.hook = hook
        self.calls = 0

    async def send(self, n: Notification, **kw: Any) -> Any:
        self.calls += 1
        if self.hook is not None:
            res = self.hook(self.calls, n)
            if asyncio.iscoroutine(res):
                await res
        return await self.inner.send(n, **kw)

    async def aclose(self) -> None:
        await self.inner.aclose()


def real_clients(cfg: PushConfig, hook: Callable[..., Any] | None = None, **kw: Any) -> dict[str, Hooked]:
    return {"apns": Hooked(ApnsClient(cfg, **kw), hook), "fcm": Hooked(FcmClient(cfg, **kw), hook)}


async def close_all(clients: Mapping[str, Any]) -> None:
    for c in clients.values():
        await c.aclose()


def run_batch(notifs: Iterable[Notification], cfg: PushConfig, delivery: str, *, engine: sa.Engine | None = None,
              hook: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """``asend_batch`` with real clients this helper owns (and closes)."""
    async def main() -> Any:
        clients = real_clients(cfg, hook)
        try:
            return await asend_batch(notifs, cfg, delivery, engine=engine, clients=clients, **kw)
        finally:
            await close_all(clients)
    return asyncio.run(main())


def text_columns_containing(engine: sa.Engine, needles: Mapping[str, str]) -> list[str]:
    """Every (table.column, needle name) where a string column of any table contains a needle."""
    found = []
    with engine.connect() as c:
        for model in ALL_TABLES:
            t = model.__table__  # type: ignore[attr-defined]
            for row in c.execute(sa.select(t)):
                for col, value in row._mapping.items():
                    if isinstance(value, str):
                        for name, needle in needles.items():
                            if needle and needle in value:
                                found.append(f"{t.name}.{col} contains the {name}")
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FreezableProxy:
    """A TCP relay on 127.0.0.1 whose existing connections can be made a silent black hole.

    ``freeze()`` keeps every current connection open but drops all bytes in both
    directions (a NAT entry gone stale, a half-dead peer); new connections relay
    normally. TLS stays end to end, so the client still verifies the fake server.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: list[dict[str, Any]] = []
        self._tasks: set[Any] = set()
        self.frozen_bytes = 0

    async def start(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        for c in self._conns:
            c["frozen"] = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        state = {"frozen": False, "writers": (writer, up_w)}
        self._conns.append(state)
        self._tasks.add(asyncio.current_task())

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if state["frozen"]:
                        self.frozen_bytes += len(data)
                        continue
                    dst.write(data)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                if not state["frozen"]:
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(asyncio.current_task())

    async def aclose(self) -> None:
        for c in self._conns:
            for w in c["writers"]:
                w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
