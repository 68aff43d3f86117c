"""Every outcome row, checked against an independent copy of the seed's values.

The expected rows below are written from seed 003/004 and protocols.md, not
read from the package, so a wrong edit to the table fails here.
"""

from __future__ import annotations

import json

import pytest

from push.classify import classify
from push.outcome_table import APNS_REASONS, DEFAULT_TABLE, FCM_ERROR_CODES, OAUTH_ERRORS, OutcomeTable
from push.outcomes import FailureReason as R, FailureType as T, Scope as S
from push.errors import ConfigError

H, SO, IG, UN = T.HARD, T.SOFT, T.IGNORED, T.UNDEFINED
TOK, PRO, MSG = S.TOKEN, S.PROVIDER, S.MESSAGE


def apns(status, reason=None, **extra):
    body = {} if reason is None else {"reason": reason}
    body.update(extra)
    return dict(provider="apns", status=status, body=json.dumps(body).encode() if body else b"")


def fcm_error(status, rpc_status, message="", code=None, apns=None, field=None, raw=None):
    details = []
    if code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code})
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": "bad"}]})
    if apns:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.ApnsError",
                        "statusCode": apns[0], "reason": apns[1]})
    body = {"error": {"code": status, "message": message, "status": rpc_status}}
    if details:
        body["error"]["details"] = details
    return dict(provider="fcm", status=status, body=raw if raw is not None else json.dumps(body).encode())


def oauth(status, error=None, desc=""):
    body = json.dumps({"error": error, "error_description": desc}).encode() if error else b"<html>x</html>"
    return dict(provider="oauth", status=status, body=body)


APNS_OTHER = [
    (400, "BadCollapseId", MSG), (400, "BadDeviceToken", TOK), (400, "BadExpirationDate", MSG),
    (400, "BadMessageId", MSG), (400, "BadPriority", MSG), (400, "BadTopic", PRO),
    (400, "DeviceTokenNotForTopic", TOK), (400, "DuplicateHeaders", MSG), (400, "IdleTimeout", PRO),
    (400, "InvalidPushType", MSG), (400, "MissingDeviceToken", TOK), (400, "MissingTopic", PRO),
    (400, "PayloadEmpty", MSG), (400, "TopicDisallowed", PRO), (403, "BadCertificate", PRO),
    (403, "BadCertificateEnvironment", PRO), (403, "ExpiredProviderToken", PRO), (403, "Forbidden", PRO),
    (403, "InvalidProviderToken", PRO), (403, "MissingProviderToken", PRO), (403, "UnrelatedKeyIdInToken", PRO),
    (403, "BadEnvironmentKeyIdInToken", PRO), (403, "BadEnvironmentKeyInToken", PRO), (404, "BadPath", MSG),
    (405, "MethodNotAllowed", MSG), (413, "PayloadTooLarge", MSG), (429, "TooManyProviderTokenUpdates", PRO),
    (429, "TooManyRequests", PRO), (500, "InternalServerError", PRO), (503, "ServiceUnavailable", PRO),
    (503, "Shutdown", PRO),
]
# Apple's throttling and outage answers: the seed's soft / refused, retried (issue 14 item 3; choice 3).
APNS_RETRIED = {429, 500, 503}

# rule key -> (request, expected type, reason, retry, scope)
EXPECTED: dict[str, tuple[dict, T | None, R, bool, S]] = {
    "apns:200": (apns(200), None, R.UNDEFINED, False, TOK),
    "apns:410:Unregistered": (apns(410, "Unregistered", timestamp=1700000000000), H, R.USER_UNKNOWN, False, TOK),
    "apns:410:ExpiredToken": (apns(410, "ExpiredToken", timestamp=1700000000000), H, R.USER_UNKNOWN, False, TOK),
    **{f"apns:{st}:{rs}": (apns(st, rs), SO, R.REFUSED, st in APNS_RETRIED, sc) for st, rs, sc in APNS_OTHER},
    # One fallback per documented status, scoped as Apple's status table puts it (protocols.md §1.6).
    "apns:400:*": (apns(400, "SomethingApplesAddsLater"), SO, R.REFUSED, False, MSG),
    "apns:403:*": (apns(403, "TopicMismatch"), SO, R.REFUSED, False, PRO),
    "apns:404:*": (apns(404, "SomethingNew"), SO, R.REFUSED, False, MSG),
    "apns:405:*": (apns(405, "SomethingNew"), SO, R.REFUSED, False, MSG),
    "apns:410:*": (apns(410, "SomethingNew", timestamp=1700000000000), H, R.USER_UNKNOWN, False, TOK),
    "apns:413:*": (apns(413, "SomethingNew"), SO, R.REFUSED, False, MSG),
    "apns:429:*": (apns(429, "SomethingNew"), SO, R.REFUSED, True, PRO),
    "apns:4xx:*": (apns(418, "Teapot"), SO, R.REFUSED, False, PRO),
    "apns:5xx:*": (apns(502), SO, R.REFUSED, True, PRO),
    "apns:other_status": (apns(302, "Moved"), SO, R.REFUSED, False, PRO),
    "apns:non_json": (dict(provider="apns", status=404, body=b"<html>oops</html>"), SO, R.REFUSED, False, PRO),
    "apns:connection_lost": (dict(provider="apns", error="connection_lost"), UN, R.UNREACHABLE, True, PRO),
    "apns:timeout": (dict(provider="apns", error="timeout"), UN, R.UNREACHABLE, True, PRO),
    "apns:interrupted": (dict(provider="apns", error="interrupted"), UN, R.UNREACHABLE, False, PRO),
    "fcm:interrupted": (dict(provider="fcm", error="interrupted"), SO, R.UNREACHABLE, False, PRO),
    "apns:payload_too_large": (dict(provider="apns", error="payload_too_large"), SO, R.REFUSED, False, MSG),
    "apns:invalid_content": (dict(provider="apns", error="invalid_content"), SO, R.UNDEFINED, False, MSG),
    "apns:credentials": (dict(provider="apns", error="credentials"), SO, R.REFUSED, False, PRO),
    "fcm:200": (dict(provider="fcm", status=200, body=b'{"name": "projects/p/messages/1"}'), None, R.UNDEFINED, False, TOK),
    "fcm:UNREGISTERED": (fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
                         H, R.USER_UNKNOWN, False, TOK),
    "fcm:INVALID_ARGUMENT:token": (fcm_error(400, "INVALID_ARGUMENT", "bad", "INVALID_ARGUMENT", field="message.token"),
                                   H, R.USER_UNKNOWN, False, TOK),
    "fcm:apns:Unregistered": (fcm_error(400, "INVALID_ARGUMENT", "APNs device token is disabled.", "INVALID_ARGUMENT",
                                        apns=(410, "Unregistered")), H, R.USER_UNKNOWN, False, TOK),
    "fcm:apns:BadDeviceToken": (fcm_error(400, "INVALID_ARGUMENT", "x", "INVALID_ARGUMENT", apns=(400, "BadDeviceToken")),
                                H, R.USER_UNKNOWN, False, TOK),
    "fcm:apns:ExpiredToken": (fcm_error(400, "INVALID_ARGUMENT", "x", "INVALID_ARGUMENT", apns=(410, "ExpiredToken")),
                              H, R.USER_UNKNOWN, False, TOK),
    "fcm:INVALID_ARGUMENT": (fcm_error(400, "INVALID_ARGUMENT", "Invalid value", "INVALID_ARGUMENT",
                                       field="message.data[0].value"), IG, R.UNDEFINED, False, MSG),
    "fcm:SENDER_ID_MISMATCH": (fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
                               SO, R.USER_UNKNOWN, False, TOK),
    "fcm:QUOTA_EXCEEDED": (fcm_error(429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED"), SO, R.REFUSED, True, PRO),
    "fcm:THIRD_PARTY_AUTH_ERROR": (fcm_error(401, "UNAUTHENTICATED", "auth", "THIRD_PARTY_AUTH_ERROR"),
                                   IG, R.REFUSED, True, PRO),
    "fcm:APNS_AUTH_ERROR": (fcm_error(401, "UNAUTHENTICATED", "auth", "APNS_AUTH_ERROR"), IG, R.REFUSED, True, PRO),
    "fcm:INTERNAL": (fcm_error(500, "INTERNAL", "internal", "INTERNAL"), IG, R.REFUSED, True, PRO),
    "fcm:UNAVAILABLE": (fcm_error(503, "UNAVAILABLE", "overloaded", "UNAVAILABLE"), IG, R.REFUSED, True, PRO),
    "fcm:UNSPECIFIED_ERROR": (fcm_error(500, "UNKNOWN", "?", "UNSPECIFIED_ERROR"), IG, R.REFUSED, False, PRO),
    "fcm:status:RESOURCE_EXHAUSTED": (fcm_error(503, "RESOURCE_EXHAUSTED", "q", "BRAND_NEW_CODE"), SO, R.REFUSED, True, PRO),
    "fcm:status:INTERNAL": (fcm_error(500, "INTERNAL", "internal", "BRAND_NEW_CODE"), IG, R.REFUSED, True, PRO),
    "fcm:status:UNAVAILABLE": (fcm_error(503, "UNAVAILABLE", "busy", "BRAND_NEW_CODE"), IG, R.REFUSED, True, PRO),
    "fcm:status:DEADLINE_EXCEEDED": (fcm_error(504, "DEADLINE_EXCEEDED", "late", "BRAND_NEW_CODE"),
                                     SO, R.UNREACHABLE, True, PRO),
    "fcm:error_code:5xx": (fcm_error(500, "UNKNOWN", "?", "BRAND_NEW_CODE"), IG, R.REFUSED, True, PRO),
    "fcm:error_code:*": (fcm_error(400, "FAILED_PRECONDITION", "new", "BRAND_NEW_CODE"), IG, R.REFUSED, False, PRO),
    "fcm:401:no_fcm_error": (fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
                             SO, R.REFUSED, False, PRO),
    "fcm:403:no_fcm_error": (fcm_error(403, "PERMISSION_DENIED", "Permission denied"), SO, R.REFUSED, False, PRO),
    "fcm:404:no_fcm_error": (fcm_error(404, "NOT_FOUND", "Requested entity was not found."), IG, R.REFUSED, False, PRO),
    "fcm:429:no_fcm_error": (fcm_error(429, "RESOURCE_EXHAUSTED", "slow down"), SO, R.REFUSED, True, PRO),
    "fcm:5xx:no_fcm_error": (dict(provider="fcm", status=503, body=b""), SO, R.UNREACHABLE, True, PRO),
    "fcm:4xx:no_fcm_error": (fcm_error(409, "ABORTED", "conflict"), IG, R.REFUSED, False, PRO),
    "fcm:non_json": (dict(provider="fcm", status=404, body=b"<html>The requested URL /batch was not found</html>"),
                     IG, R.REFUSED, False, PRO),
    "fcm:connection_lost": (dict(provider="fcm", error="connection_lost"), SO, R.UNREACHABLE, True, PRO),
    "fcm:timeout": (dict(provider="fcm", error="timeout"), SO, R.UNREACHABLE, True, PRO),
    "fcm:payload_too_large": (dict(provider="fcm", error="payload_too_large"), SO, R.REFUSED, False, MSG),
    "fcm:invalid_content": (dict(provider="fcm", error="invalid_content"), SO, R.UNDEFINED, False, MSG),
    "oauth:connection": (dict(provider="oauth", error="connection_lost"), IG, R.REFUSED, True, PRO),
    "oauth:5xx": (oauth(503), IG, R.REFUSED, True, PRO),
    "oauth:internal_failure": (oauth(500, "internal_failure"), IG, R.REFUSED, True, PRO),
    "oauth:server_error": (oauth(500, "server_error"), IG, R.REFUSED, True, PRO),
    "oauth:temporarily_unavailable": (oauth(503, "temporarily_unavailable"), IG, R.REFUSED, True, PRO),
    "oauth:unauthorized_client": (oauth(401, "unauthorized_client", "Unauthorized client or scope in request."),
                                  IG, R.REFUSED, False, PRO),
    "oauth:access_denied": (oauth(400, "access_denied"), IG, R.REFUSED, False, PRO),
    "oauth:invalid_grant": (oauth(400, "invalid_grant", "Invalid JWT Signature."), IG, R.REFUSED, False, PRO),
    "oauth:disabled_client": (oauth(400, "disabled_client", "The OAuth client was disabled."), IG, R.REFUSED, False, PRO),
    "oauth:invalid_scope": (oauth(400, "invalid_scope"), IG, R.REFUSED, False, PRO),
    "oauth:invalid_client": (oauth(400, "invalid_client"), IG, R.REFUSED, False, PRO),
    "oauth:deleted_client": (oauth(400, "deleted_client"), IG, R.REFUSED, False, PRO),
    "oauth:admin_policy_enforced": (oauth(400, "admin_policy_enforced"), IG, R.REFUSED, False, PRO),
    "oauth:org_internal": (oauth(400, "org_internal"), IG, R.REFUSED, False, PRO),
    "oauth:*": (oauth(400, "made_up_error"), IG, R.REFUSED, False, PRO),
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_row(key):
    request, ftype, reason, retry, scope = EXPECTED[key]
    out = classify(**request)
    assert out.rule == key
    assert (out.failure_type, out.failure_reason, out.retry, out.scope) == (ftype, reason, retry, scope)
    assert out.ok is (ftype is None)
    if not out.ok:
        assert out.error_text and out.raw_error_text


def test_every_row_has_a_test():
    assert {r.key for r in DEFAULT_TABLE} == set(EXPECTED)


@pytest.mark.parametrize("reason", APNS_REASONS)
def test_every_documented_apns_reason_has_its_own_row(reason):
    rows = [r for r in DEFAULT_TABLE if r.key.startswith("apns:") and r.key.endswith(":" + reason)]
    assert len(rows) == 1


@pytest.mark.parametrize("code", FCM_ERROR_CODES)
def test_every_fcm_error_code_has_its_own_row(code):
    assert f"fcm:{code}" in DEFAULT_TABLE


@pytest.mark.parametrize("error", OAUTH_ERRORS)
def test_every_oauth_error_has_its_own_row(error):
    assert f"oauth:{error}" in DEFAULT_TABLE


def test_seed_rows_exact():
    # The rows the seed states outright, restated as type/reason/retry triples.
    exact = {
        "apns:410:Unregistered": ("hard", 1, False), "apns:410:ExpiredToken": ("hard", 1, False),
        "apns:connection_lost": ("undefined", 3, True), "apns:invalid_content": ("soft", 0, False),
    "apns:payload_too_large": ("soft", 20, False), "apns:credentials": ("soft", 20, False),
        "fcm:UNREGISTERED": ("hard", 1, False), "fcm:INVALID_ARGUMENT:token": ("hard", 1, False),
        "fcm:INVALID_ARGUMENT": ("ignored", 0, False), "fcm:SENDER_ID_MISMATCH": ("soft", 1, False),
        "fcm:QUOTA_EXCEEDED": ("soft", 20, True), "fcm:THIRD_PARTY_AUTH_ERROR": ("ignored", 20, True),
        "fcm:INTERNAL": ("ignored", 20, True), "fcm:UNAVAILABLE": ("ignored", 20, True),
        "fcm:401:no_fcm_error": ("soft", 20, False), "fcm:connection_lost": ("soft", 3, True),
        "fcm:error_code:*": ("ignored", 20, False), "oauth:connection": ("ignored", 20, True),
        "oauth:invalid_grant": ("ignored", 20, False), "oauth:disabled_client": ("ignored", 20, False),
        "oauth:unauthorized_client": ("ignored", 20, False), "oauth:access_denied": ("ignored", 20, False),
    }
    for key, (ftype, reason, retry) in exact.items():
        row = DEFAULT_TABLE[key]
        assert (row.failure_type.value, int(row.failure_reason), row.retry) == (ftype, reason, retry), key
    for status, reason, _ in APNS_OTHER:
        row = [r for r in DEFAULT_TABLE if r.key.endswith(":" + reason)][0]
        assert (row.failure_type, row.failure_reason, row.retry) == (SO, R.REFUSED, status in APNS_RETRIED)


def test_fcm_invalid_token_by_message_text_only():
    req = fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT")
    assert classify(**req).rule == "fcm:INVALID_ARGUMENT:token"


def test_fcm_invalid_argument_without_fcm_error_still_checks_token():
    req = fcm_error(400, "INVALID_ARGUMENT", "x", field="message.token")
    assert classify(**req).rule == "fcm:INVALID_ARGUMENT:token"


def test_fcm_unregistered_with_apns_detail_is_hard():
    req = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED", apns=(410, "Unregistered"))
    out = classify(**req)
    assert out.failure_type is H and out.scope is TOK


def test_fcm_other_apns_reason_falls_back_to_error_code():
    req = fcm_error(400, "INVALID_ARGUMENT", "x", "INVALID_ARGUMENT", apns=(400, "BadTopic"))
    assert classify(**req).rule == "fcm:INVALID_ARGUMENT"


def test_apns_410_timestamp_and_id():
    out = classify("apns", status=410, body=b'{"reason":"Unregistered","timestamp":1577836800000}',
                   headers={"apns-id": "ABC"})
    assert out.provider_timestamp.isoformat() == "2020-01-01T00:00:00+00:00"
    assert out.provider_id == "ABC"


def test_retry_after_seconds_and_date():
    from datetime import datetime, timezone
    out = classify("fcm", status=429, body=fcm_error(429, "RESOURCE_EXHAUSTED", "q", "QUOTA_EXCEEDED")["body"],
                   headers={"Retry-After": "30"})
    assert out.retry_after == 30
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = classify("fcm", status=503, body=b"", headers={"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"}, now=now)
    assert out.retry_after == 60


def test_fcm_success_keeps_message_name():
    out = classify("fcm", status=200, body=b'{"name": "projects/p/messages/0:123"}')
    assert out.ok and out.provider_id == "projects/p/messages/0:123"


def test_overrides_change_a_row_without_editing_the_package():
    table = DEFAULT_TABLE.with_overrides({"apns:400:DeviceTokenNotForTopic": {"failure_type": "hard",
                                                                              "failure_reason": "user unknown"}})
    out = classify(**apns(400, "DeviceTokenNotForTopic"), table=table)
    assert (out.failure_type, out.failure_reason) == (H, R.USER_UNKNOWN)
    assert classify(**apns(400, "DeviceTokenNotForTopic")).failure_type is SO  # default untouched


def test_overrides_from_file(tmp_path):
    p = tmp_path / "o.json"
    p.write_text(json.dumps({"fcm:SENDER_ID_MISMATCH": {"failure_type": "hard", "retry": False}}))
    table = OutcomeTable.from_file(p)
    assert table["fcm:SENDER_ID_MISMATCH"].failure_type is H


@pytest.mark.parametrize("bad", [
    {"apns:nope": {"retry": True}},
    {"apns:200": {"colour": "red"}},
    {"apns:200": {"failure_type": "catastrophic"}},
    {"apns:200": {"retry": "yes"}},
])
def test_bad_overrides_name_the_setting(bad):
    with pytest.raises(ConfigError, match="PUSH_OUTCOME_OVERRIDES"):
        DEFAULT_TABLE.with_overrides(bad)


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(ValueError, match="provider"):
        classify("wns", status=200)


# --- issue 14: no unknown answer can count against a device unless its status is about the device ------

#: HTTP statuses that are about the device itself: APNs 410 ("the device token is no longer active for
#: the topic"). No FCM status is: FCM names a dead token only with an errorCode or detail it documents.
DEVICE_STATUSES = {"apns": {410}, "fcm": set()}
RPC_CODES = ("", "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
             "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
             "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


def unknown_answers(provider, status):
    """Every shape of an answer at ``status`` that names nothing the table knows."""
    if provider == "apns":
        yield apns(status, "ReasonAppleAddsLater")
        yield apns(status, "ReasonAppleAddsLater", timestamp=1700000000000)
        yield apns(status)  # no body
        yield dict(provider="apns", status=status, body=b"{}")
        yield dict(provider="apns", status=status, body=b"<html><h1>proxy</h1></html>")
        yield dict(provider="apns", status=status, body=b'{"reason":"Unregis')
        return
    for rpc in RPC_CODES:
        yield fcm_error(status, rpc, "something new", "BRAND_NEW_CODE")
        yield fcm_error(status, rpc, "something new", "BRAND_NEW_CODE", apns=(status, "ReasonAppleAddsLater"))
    yield dict(provider="fcm", status=status, body=b"")
    yield dict(provider="fcm", status=status, body=b"{}")
    yield dict(provider="fcm", status=status, body=b"<html>proxy</html>")


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_walk_400_to_599_only_device_statuses_reach_a_token_outcome(provider):
    reached = set()
    for status in range(400, 600):
        for request in unknown_answers(provider, status):
            out = classify(**request)
            if out.scope is TOK:
                reached.add(status)
                assert status in DEVICE_STATUSES[provider], (status, request["body"][:80], out.rule)
    assert reached == DEVICE_STATUSES[provider]  # and the device statuses do reach it


def test_walk_transient_statuses_retry_whatever_the_body():
    # 429 and 5xx are the provider's passing trouble (items 3, 4, 5, 9), for any unknown answer.
    for provider in ("apns", "fcm"):
        for status in [429, *range(500, 600)]:
            for request in unknown_answers(provider, status):
                out = classify(**request)
                assert out.retry, (provider, status, request["body"][:80], out.rule)


def test_fcm_401_refreshes_unless_the_credential_behind_fcm_is_at_fault():
    from push.outcomes import Action
    for rpc in RPC_CODES:
        out = classify(**fcm_error(401, rpc, "auth", "BRAND_NEW_CODE"))
        assert out.action is Action.REFRESH_AUTH and out.rule == "fcm:401:no_fcm_error", (rpc, out.rule)
    for rpc in ("", "UNAUTHENTICATED", "UNKNOWN"):
        assert classify(**fcm_error(401, rpc, "auth")).action is Action.REFRESH_AUTH, rpc
    for body in (b"", b"<html>401</html>", b"{}"):
        assert classify("fcm", status=401, body=body).action is Action.REFRESH_AUTH
    for code in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"):
        assert classify(**fcm_error(401, "UNAUTHENTICATED", "auth", code)).action is Action.NONE


@pytest.mark.parametrize("body", [
    {"error_description": "internal_failure"},
    {"error": "invalid_grant", "error_description": "internal_failure"},
    {"error": "made_up", "error_description": "temporarily_unavailable"},
    {"error": "internal_failure"},
])
def test_oauth_transient_error_or_description_retries(body):
    out = classify("oauth", status=400, body=json.dumps(body).encode())
    assert out.retry and out.rule.split(":")[1] in {"internal_failure", "server_error", "temporarily_unavailable"}


def test_oauth_description_that_is_not_transient_does_not_retry():
    out = classify("oauth", status=400, body=json.dumps({"error": "invalid_grant", "error_description": "Bad"}).encode())
    assert out.rule == "oauth:invalid_grant" and not out.retry


@pytest.mark.parametrize("code", ["apns:Unregistered", "INVALID_ARGUMENT:token", "status:INTERNAL", "401:no_fcm_error"])
def test_fcm_error_code_cannot_name_another_row(code):
    out = classify(**fcm_error(500, "UNKNOWN", "x", code))
    assert out.rule == "fcm:error_code:5xx" and out.scope is PRO


def test_fcm_field_violations_of_any_shape_never_raise():
    for violations in (1, True, "message.token", {"field": "message.token"}, None, [1, "x", None]):
        body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Request contains an invalid argument.",
                          "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                       "fieldViolations": violations}]}}
        out = classify("fcm", status=400, body=json.dumps(body).encode())
        assert out.rule == "fcm:INVALID_ARGUMENT", violations  # a malformed detail proves nothing


def test_docs_map_every_legacy_v1_bullet_to_v1_rows():
    from push.docs import LEGACY_V1, render
    text = render()
    assert "FCM HTTP v1 only" in text and "shut" in text
    for bullet, keys in LEGACY_V1:
        assert bullet in text
        for key in keys:
            assert key in DEFAULT_TABLE, key
            assert f"`{key}`" in text
