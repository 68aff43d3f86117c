from __future__ import annotations

import pytest

import push.h2backend

pytest_plugins = ["fixtures.pytest_plugin", "tests.db_plugin"]

# Modules whose every test runs once per HTTP/2 backend (jh2 and the h2 fallback): everything that
# opens an HTTP/2 connection through push.transport.
PER_BACKEND_MODULES = frozenset({
    "test_transport", "test_clients_e2e", "test_fake_servers", "test_network_faults", "test_oauth_faults",
    "test_retry_storm", "test_security",
})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in PER_BACKEND_MODULES:
        if "h2_backend" not in metafunc.fixturenames:
            metafunc.fixturenames.append("h2_backend")
        metafunc.parametrize("h2_backend", push.h2backend.available_backends(), indirect=True)


@pytest.fixture
def h2_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``auto`` (what every transport and client in the test uses) pick this one backend."""
    name = getattr(request, "param", "auto")
    if name != "auto":
        monkeypatch.setattr(push.h2backend, "AUTO_ORDER", (name,))
    return name
