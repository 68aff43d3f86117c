"""The fast JSON path writes what the standard library would, and falls back where it must."""

from __future__ import annotations

import json
import tracemalloc
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from push import jsoncodec
from push.notification import Notification
from push.pipeline import _ID_NAMESPACE, apns_id


def std(value: object, sort_keys: bool = False) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode()


# Floats are left out: both libraries print the shortest round-trip form, but not always the same
# spelling of it (1e+16 against 1e16); what matters for them is that both parse back equal.
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_bytes_as_the_standard_library(value: object) -> None:
    try:
        expected = std(value)
    except UnicodeEncodeError:  # lone surrogates: validation refuses them before anything is encoded
        return
    assert jsoncodec.dumps(value) == expected
    assert jsoncodec.dumps(value, sort_keys=True) == std(value, sort_keys=True)


@pytest.mark.parametrize("value", [
    {1: "int key", 2: "b"},  # orjson refuses keys that are not strings
    {"big": 2**70},  # ... and integers beyond 64 bits
    [{"nested": {True: None}}],
])
def test_falls_back_where_orjson_refuses(value: object) -> None:
    assert jsoncodec.dumps(value) == std(value)
    assert jsoncodec.dumps_text(value, sort_keys=True) == std(value, sort_keys=True).decode()


def test_non_ascii_is_kept_and_counted_in_bytes() -> None:
    n = Notification(token="ab" * 32, platform="apns", app="com.example.app", title="Grüße 👋", body="é")
    body = n.apns_body()
    assert body == std({"aps": {"alert": {"title": "Grüße 👋", "body": "é"}}})
    assert n.payload_size() == (len(body), 4096)
    assert json.loads(n.to_json())["title"] == "Grüße 👋"


def test_loads_refuses_what_is_not_json() -> None:
    assert jsoncodec.loads(b'{"name": "projects/p/messages/1"}') == {"name": "projects/p/messages/1"}
    for bad in (b"<html>", b'{"a": 1', b"\xff\xfe"):
        with pytest.raises(ValueError):
            jsoncodec.loads(bad)


@given(st.text(min_size=1, max_size=64), st.integers(min_value=0, max_value=10**12))
def test_apns_id_is_the_rfc_4122_version_5_uuid(delivery: str, seq: int) -> None:
    assert apns_id(delivery, seq) == str(uuid.uuid5(_ID_NAMESPACE, f"{delivery}:{seq}"))


@pytest.mark.parametrize("encode", [jsoncodec.dumps, jsoncodec.dumps_text])
def test_results_are_no_bigger_than_their_json(encode) -> None:
    # Notifications keep their encoded body until sent: a result that pinned a larger buffer
    # (orjson writes into 4 KiB) would multiply a delivery's memory.
    value = {"aps": {"alert": {"title": "Hello", "body": "World"}}}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode(value) for _ in range(2000)]
        per_item = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_item < 200, f"{per_item:.0f} bytes held per {len(kept[0])}-byte result"
