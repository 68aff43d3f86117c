from __future__ import annotations

import json

from hypothesis import example, given, settings, strategies as st

from push.classify import classify
from push.outcome_table import APNS_REASONS, DEFAULT_TABLE, FCM_ERROR_CODES, OAUTH_ERRORS
from push.outcomes import Scope

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


# --- Malformed nested shapes: every JSON body the classifier reads, with each level either the documented
# --- shape or a value of any JSON type (wrong types at every level), so no isinstance check can go missing.

# A value of the wrong type, each JSON type about equally likely.
wrong = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                  json_values)


def shaped(right: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the documented shape (so the deeper levels are reached), else a wrong type in its place."""
    return st.integers(0, 3).flatmap(lambda i: wrong if i == 0 else right)


def names(*known: str) -> st.SearchStrategy:
    return shaped(st.sampled_from(known))


def obj(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """An object with these fields, usually all present, sometimes some missing."""
    return st.integers(0, 3).flatmap(
        lambda i: st.fixed_dictionaries({}, optional=fields) if i == 0 else st.fixed_dictionaries(fields))


_FCM = "type.googleapis.com/google.firebase.fcm.v1."
_RPC = "type.googleapis.com/google.rpc."
RPC_STATUSES = ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED",
                "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN")

violation = shaped(obj(field=names("message.token", "message.data[0].value", "message"), description=names("x")))
fcm_detail = shaped(st.one_of(
    obj(**{"@type": names(_FCM + "FcmError")}, errorCode=names(*FCM_ERROR_CODES, "BRAND_NEW_CODE")),
    obj(**{"@type": names(_FCM + "ApnsError")}, reason=names(*APNS_REASONS), statusCode=shaped(st.integers())),
    obj(**{"@type": names(_RPC + "BadRequest")}, fieldViolations=shaped(st.lists(violation, min_size=1, max_size=3))),
    obj(**{"@type": names(_RPC + "QuotaFailure")}, violations=json_values),
))
fcm_status = obj(code=shaped(st.integers(100, 999)), status=names(*RPC_STATUSES),
                 message=names("The registration token is not a valid FCM registration token", "Requested entity "
                               "was not found."),
                 details=shaped(st.lists(fcm_detail, min_size=1, max_size=4)))
SHAPES = {
    "apns": obj(reason=names(*APNS_REASONS), timestamp=shaped(st.integers() | st.floats(allow_nan=True))),
    "fcm": obj(error=shaped(fcm_status), name=names("projects/p/messages/1")),
    "oauth": obj(error=names(*OAUTH_ERRORS), error_description=names("internal_failure", "Invalid JWT Signature.")),
}
DEVICE_STATUSES = {"apns": {400, 410}}  # APNs: 400 with a documented token reason, 410


@settings(max_examples=1500, deadline=None)
@example(data=None, provider="fcm", status=400, hdrs={}).via("issue 14 item 8: fieldViolations not a list")
@given(data=st.data(), provider=st.sampled_from(sorted(SHAPES)), status=st.integers(min_value=100, max_value=999),
       hdrs=headers)
def test_classify_never_raises_on_malformed_nested_shapes(data, provider, status, hdrs):
    doc = data.draw(SHAPES[provider]) if data is not None else {"error": {"status": "INVALID_ARGUMENT", "details": [
        {"@type": _RPC + "BadRequest", "fieldViolations": 1}]}}
    out = classify(provider, status=status, body=json.dumps(doc).encode(), headers=hdrs)
    assert out.rule in DEFAULT_TABLE and out.rule.startswith(provider + ":")
    assert out.ok == (status == 200 and provider != "oauth")
    if provider == "apns" and out.scope is Scope.TOKEN and not out.ok:
        assert status in DEVICE_STATUSES["apns"], (status, doc, out.rule)
