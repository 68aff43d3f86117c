"""Fixtures of the scale-out suite: real brokers (RabbitMQ, Redis), fresh Postgres databases, worker processes.

The brokers are never skipped: ``.ci/run`` starts them when they are down. Every test consumes its
own queue name, so runs at the same time (other sessions on this machine) never take each other's tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from kombu import Connection

from tables.engine import make_engine
from tables.migrate import upgrade
from tests.db_plugin import _create_database, _drop_database
from tests.scale.helpers import RABBITMQ_URL, REDIS_URL, Worker


def _reachable(url: str) -> str:
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means the broker is not there
        pytest.fail(f"the scale-out tests need the broker at {url} (.ci/run starts it): {exc}", pytrace=False)
    return url


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return _reachable(RABBITMQ_URL if request.param == "rabbitmq" else REDIS_URL)


@pytest.fixture
def rabbitmq_url() -> str:
    return _reachable(RABBITMQ_URL)


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue of this test only; deleted (with whatever is left in it) afterwards, on both brokers."""
    name = f"pf-test-{uuid.uuid4().hex[:10]}"
    yield name
    for url in (RABBITMQ_URL, REDIS_URL):
        try:
            with Connection(url, connect_timeout=3) as conn:
                conn.default_channel.queue_delete(name)
        except Exception:  # noqa: BLE001 - never declared on that broker
            pass


@pytest.fixture
def new_pg(pg_admin_url: str) -> Iterator[Callable[[], tuple[str, object]]]:
    """Makes fresh, migrated Postgres databases (url, engine), dropped at the end of the test."""
    made: list[tuple[str, object]] = []

    def make() -> tuple[str, object]:
        url = _create_database(pg_admin_url, suffix="_s")
        engine = make_engine(url)
        upgrade(engine)
        made.append((url, engine))
        return url, engine

    yield make
    for url, engine in made:
        engine.dispose()  # type: ignore[attr-defined]
        _drop_database(pg_admin_url, url)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes the test starts; any still running at the end are killed."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()
