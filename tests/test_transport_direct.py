"""DirectPost's one use of a private httpx name, pinned: these fail loudly if httpx changes it."""

from __future__ import annotations

import inspect
import logging
import ssl

import httpx
import pytest

from push.transport import DirectPost, H2Transport
from push.transport.direct import mounted_transport

BASE = "https://push.example.test"


@pytest.fixture
def transport() -> H2Transport:
    return H2Transport(ssl_context=ssl.create_default_context())


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_httpx_still_has_the_private_lookup_with_the_same_signature() -> None:
    lookup = getattr(httpx.AsyncClient, "_transport_for_url", None)
    assert callable(lookup), f"httpx {httpx.__version__} dropped AsyncClient._transport_for_url"
    assert list(inspect.signature(lookup).parameters) == ["self", "url"]


def test_plain_client_goes_straight_to_our_transport(transport: H2Transport, caplog: pytest.LogCaptureFixture) -> None:
    client = httpx.AsyncClient(transport=transport, base_url=BASE)
    assert mounted_transport(client, client.base_url) is transport
    direct = DirectPost(client, transport)
    assert direct.usable("/3/device/abc", b"{}")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_mount_for_the_origin_turns_the_fast_path_off(transport: H2Transport) -> None:
    other = httpx.AsyncHTTPTransport()
    client = httpx.AsyncClient(transport=transport, base_url=BASE, mounts={"https://": other})
    assert mounted_transport(client, client.base_url) is other
    assert not DirectPost(client, transport).usable("/3/device/abc", b"{}")


def test_a_mount_for_another_origin_leaves_it_on(transport: H2Transport) -> None:
    client = httpx.AsyncClient(transport=transport, base_url=BASE,
                               mounts={"https://elsewhere.test": httpx.AsyncHTTPTransport()})
    assert mounted_transport(client, client.base_url) is transport
    assert DirectPost(client, transport).usable("/3/device/abc", b"{}")


def test_an_environment_proxy_does_not_take_over_an_injected_transport(
        transport: H2Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx reads proxy variables only when it builds its own transport; the clients always inject ours.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = httpx.AsyncClient(transport=transport, base_url=BASE)
    assert mounted_transport(client, client.base_url) is transport
    assert DirectPost(client, transport).usable("/3/device/abc", b"{}")


def test_without_the_private_lookup_the_fast_path_is_off_and_says_so(
        transport: H2Transport, caplog: pytest.LogCaptureFixture) -> None:
    class LaterClient(httpx.AsyncClient):  # what a future httpx without the method would look like
        _transport_for_url = None  # type: ignore[assignment]

    client = LaterClient(transport=transport, base_url=BASE)
    with caplog.at_level(logging.WARNING, logger="push.transport.direct"):
        direct = DirectPost(client, transport)
    assert not direct.usable("/3/device/abc", b"{}")
    assert "direct send path is off" in caplog.text
