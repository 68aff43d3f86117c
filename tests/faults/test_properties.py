"""Property-based bad input: ``Notification`` either builds (and then serialises for every use) or raises
``ValidationError`` naming a field; ``classify`` never raises on anything a server could send."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from fixtures.scenarios import APNS_SCENARIOS, FCM_SCENARIOS, OAUTH_ERRORS, ok_apns_token, ok_fcm_token
from push.classify import classify
from push.errors import ValidationError
from push.notification import APNS_PUSH_TYPES, Notification
from push.outcome_table import DEFAULT_TABLE
from tests.faults.helpers import FIGURES

FIELDS = {f.name for f in fields(Notification) if f.init} | {"notification"}
NOW = datetime.now(timezone.utc)

any_char = st.characters(exclude_categories=())  # surrogates and control characters included
any_text = st.text(any_char, max_size=40) | st.text(max_size=10)
hexes = st.text("0123456789abcdefABCDEF", min_size=14, max_size=80)
fcm_like = st.text("abcXYZ019_:.-", min_size=0, max_size=40) | st.just(ok_fcm_token(3))
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | any_text
json_like = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(any_text, c, max_size=3),
                         max_leaves=8)
datetimes = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                         timezones=st.none() | st.just(timezone.utc) | st.timezones())
wrong = st.integers() | st.lists(st.integers(), max_size=2) | st.binary(max_size=8) | st.floats() | st.none()

def mostly(good, bad, odds=6):
    """``good`` most of the time, so that examples get past the first checks and reach the deeper ones."""
    return st.integers(0, odds).flatmap(lambda i: bad if i == 0 else good)


def either(good, bad):
    return st.booleans().flatmap(lambda b: good if b else bad)


GOOD_TOKEN = {"apns": st.just(ok_apns_token(1)) | hexes, "fcm": st.just(ok_fcm_token(3)) | fcm_like}


def _core(platform):
    return st.fixed_dictionaries({
        "platform": st.just(platform) if platform in GOOD_TOKEN else any_text | wrong,
        "token": mostly(GOOD_TOKEN.get(platform, hexes), st.none() | any_text | wrong),
        "app": mostly(st.sampled_from(["com.example.app", "android-app"])
                      | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
                      any_text | wrong),
    })


notification_kwargs = st.tuples(
    mostly(st.sampled_from(["apns", "fcm"]), st.just("other"), odds=12).flatmap(_core),
    st.fixed_dictionaries({}, optional={
    "profile_id": either(st.none() | st.text(max_size=20), any_text | st.integers()),
    "title": either(st.none() | st.text(max_size=40), any_text | wrong),
    "body": either(st.none() | st.text(max_size=40), any_text | wrong),
    "data": either(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
                   st.dictionaries(any_text | st.integers(), st.text(max_size=20) | json_like, max_size=4) | json_like),
    "payload": either(st.none() | st.dictionaries(st.text(max_size=10), json_like, max_size=3),
                      st.dictionaries(any_text, json_like, max_size=3) | any_text | wrong),
    "priority": mostly(st.sampled_from(["high", "normal"]), any_text | wrong),
    "expiration": either(st.none() | st.just(NOW + timedelta(days=1)), datetimes | any_text | wrong),
    "ttl": either(st.none() | st.integers(min_value=0, max_value=2_419_200),
                  st.integers(min_value=-10, max_value=3_000_000) | st.booleans() | st.floats()),
    "collapse_id": either(st.none() | st.text("abcXYZ-_ 019", max_size=64),
                          any_text | st.text(min_size=60, max_size=70) | wrong),
    "push_type": mostly(st.sampled_from(sorted(APNS_PUSH_TYPES)), any_text | wrong),
    })).map(lambda parts: {**parts[0], **parts[1]})


def _header_safe(value: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in value)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kw=notification_kwargs)
@example(kw={"token": ok_apns_token(1), "platform": "apns", "app": "a", "title": "\ud800"})
@example(kw={"token": ok_apns_token(1), "platform": "apns", "app": "a", "collapse_id": "\udc00"})
@example(kw={"token": ok_apns_token(1), "platform": "apns", "app": "a", "push_type": [1]})
@example(kw={"token": ok_fcm_token(1), "platform": "fcm", "app": "a\x00", "data": {"k": "\ud800"}})
@example(kw={"token": ok_apns_token(1), "platform": "apns", "app": "é", "data": {"x": math.inf}})
@example(kw={"token": None, "platform": "fcm", "app": "0", "push_type": b""})
def test_notification_builds_or_names_a_field(kw):
    FIGURES["hypothesis examples (Notification)"] += 1
    try:
        n = Notification(**kw)
    except ValidationError as exc:
        assert isinstance(exc.field, str) and exc.field.split(".", 1)[0] in FIELDS, exc.field
        assert str(exc).startswith(exc.field + ": ")
        event(f"rejected: {exc.field.split('.', 1)[0]}")
        return
    event(f"built: {n.platform}")
    # Built: everything the pipeline, the clients and the database do with it works.
    size, limit = n.payload_size()
    assert size >= 0 and limit in (4096, 5120)
    text = n.to_json()
    text.encode("utf-8")
    again = Notification.from_json(text, check_expiration=False)  # what the retry job re-reads
    assert (again.token, again.platform, again.app) == (n.token, n.platform, n.app)
    for value in (n.app, n.profile_id, n.token):
        assert value is None or ("\x00" not in value and isinstance(value.encode("utf-8"), bytes))
    if n.platform == "apns":
        json.loads(n.apns_body())
        assert _header_safe(n.topic) and (n.collapse_id is None or _header_safe(n.collapse_id))
        assert n.push_type in APNS_PUSH_TYPES
    else:
        body = json.dumps({"message": n.fcm_message()}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        msg = json.loads(body)["message"]
        assert all(isinstance(v, str) for v in msg.get("data", {}).values())


@settings(max_examples=300, deadline=None)
@given(d=st.dictionaries(any_text | st.sampled_from(sorted(FIELDS - {"notification"})), json_like, max_size=6)
       | json_like)
def test_notification_from_dict_builds_or_names_a_field(d):
    FIGURES["hypothesis examples (Notification)"] += 1
    try:
        Notification.from_dict(d)
    except ValidationError as exc:
        assert isinstance(exc.field, str)


# --------------------------------------------------------------------------- classify

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | any_text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(any_text, c, max_size=4), max_leaves=20)
detail_types = st.sampled_from([
    "type.googleapis.com/google.firebase.fcm.v1.FcmError", "type.googleapis.com/google.firebase.fcm.v1.ApnsError",
    "type.googleapis.com/google.rpc.BadRequest", "type.googleapis.com/google.rpc.QuotaFailure",
]) | any_text | st.integers() | st.lists(st.integers(), max_size=2) | st.none()
google_detail = st.fixed_dictionaries({"@type": detail_types}, optional={
    "errorCode": st.sampled_from(["UNREGISTERED", "INVALID_ARGUMENT", "QUOTA_EXCEEDED", "UNAVAILABLE"]) | json_values,
    "reason": st.sampled_from(["Unregistered", "BadDeviceToken", "ExpiredToken"]) | json_values,
    "statusCode": json_values,
    "fieldViolations": st.lists(st.fixed_dictionaries({}, optional={"field": st.just("message.token") | json_values,
                                                                  "description": json_values}), max_size=3)
    | json_values,
})
google_body = st.fixed_dictionaries({"error": st.fixed_dictionaries({}, optional={
    "code": json_values, "message": json_values, "status": json_values,
    "details": st.lists(google_detail | json_values, max_size=4) | json_values}) | json_values})
apns_body = st.fixed_dictionaries({}, optional={
    "reason": st.sampled_from(sorted({s.reason for s in APNS_SCENARIOS.values() if s.reason})) | json_values,
    "timestamp": st.integers() | st.floats(allow_nan=True, allow_infinity=True) | json_values})
oauth_body = st.fixed_dictionaries({}, optional={
    "error": st.sampled_from(["invalid_grant", "server_error", "temporarily_unavailable"]) | json_values,
    "error_description": json_values})
golden = [s.body for s in APNS_SCENARIOS.values()] + [s.body for s in FCM_SCENARIOS.values()] + \
    [b for _, b in OAUTH_ERRORS.values()]
bodies = st.one_of(
    st.binary(max_size=400), any_text, st.sampled_from(golden),
    st.sampled_from(golden).flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i])),  # truncated
    (google_body | apns_body | oauth_body | json_values).map(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
retry_after = (st.integers(-10, 10**30).map(str) | st.floats(allow_nan=True).map(str) | any_text
               | st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "٣", "³", "+5",
                                  " 7 ", "1e3", "Mon, 99 Foo 2020 25:61:61 GMT", "0x10"]))
headers = st.dictionaries(st.sampled_from(["retry-after", "Retry-After", "apns-id", "content-type"]) | any_text,
                          retry_after | any_text, max_size=4) | st.lists(
    st.tuples(st.binary(max_size=12) | any_text, st.binary(max_size=20) | retry_after), max_size=4)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(provider=st.sampled_from(["apns", "fcm", "oauth"]), status=st.integers(0, 999), body=bodies, hdrs=headers,
       now=st.none() | datetimes.filter(lambda d: d.tzinfo is not None))
@example(provider="fcm", status=600, body=b"", hdrs={}, now=None)  # HTTP/2 allows any 3-digit :status
def test_classify_never_raises(provider, status, body, hdrs, now):
    FIGURES["hypothesis examples (classify)"] += 1
    out = classify(provider, status=status, body=body, headers=hdrs, now=now)
    assert out.rule in DEFAULT_TABLE and out.rule.startswith(provider + ":")
    assert out.ok == (status == 200 and provider != "oauth")
    assert out.retry_after is None or (math.isfinite(out.retry_after) and 0 <= out.retry_after <= 7 * 86400)
    assert len(out.raw_error_text) <= 500
    out.error_text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(provider=st.sampled_from(["apns", "fcm", "oauth"]),
       error=st.sampled_from(["connection_lost", "timeout", "payload_too_large", "invalid_content", "credentials",
                              "interrupted"]) | st.text(max_size=12), detail=any_text)
def test_classify_transport_errors_never_raise(provider, error, detail):
    out = classify(provider, error=error, detail=detail)  # type: ignore[arg-type]
    assert out.rule in DEFAULT_TABLE and not out.ok
