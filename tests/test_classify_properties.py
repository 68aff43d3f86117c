from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from push.classify import classify
from push.outcome_table import DEFAULT_TABLE

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda e, d: json.dumps({"error": e, "details": d}).encode(), json_values, json_values),
    st.builds(lambda r, t: json.dumps({"reason": r, "timestamp": t}).encode(), json_values, json_values),
)
headers = st.dictionaries(st.sampled_from(["retry-after", "apns-id", "content-type", "x"]) | st.text(max_size=10),
                          st.text(max_size=40), max_size=4)


@settings(max_examples=400, deadline=None)
@given(provider=st.sampled_from(["apns", "fcm", "oauth"]), status=st.integers(min_value=100, max_value=999),
       body=bodies, hdrs=headers)
def test_classify_never_raises_and_always_lands_on_a_row(provider, status, body, hdrs):
    out = classify(provider, status=status, body=body, headers=hdrs)
    assert out.rule in DEFAULT_TABLE
    assert out.rule.startswith(provider + ":")
    assert out.ok == (status == 200 and provider != "oauth")
    assert out.retry_after is None or out.retry_after >= 0
