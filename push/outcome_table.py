"""The outcome tables: every provider answer we know of, as data.

One row per (provider, match key). ``push.classify`` turns a response into a
match key and looks the row up here; nothing else branches on reason strings.
Values come from the seed tables (003: iOS HTTP/2 table, Android V1 bullets,
Android V2 = FCM v1 table with the OAuth rows; 004: failure types and reasons).
Where the seed is coarse every provider code still gets its own row carrying
the seed's values, so reports can tell them apart. ``source`` names the seed
row (or the documented choice) each row comes from; ``docs/outcomes.md`` is
generated from these rows by ``python -m push.docs``.

Match keys (``FALLBACKS`` below says in which order they are tried):
- APNs: ``apns:<status>:<reason>``; fallbacks ``apns:<status>:*`` (one per
  documented status, with the scope that status implies), ``apns:4xx:*``,
  ``apns:5xx:*``, ``apns:non_json``, ``apns:other_status``.
- FCM: ``fcm:<errorCode>``, ``fcm:INVALID_ARGUMENT:token``, ``fcm:apns:<reason>``
  (an ApnsError detail), ``fcm:status:<google.rpc.Status.status>`` and
  ``fcm:error_code:<class>`` (an errorCode the table does not know),
  ``fcm:<status>:no_fcm_error``, ``fcm:error_code:*``, ``fcm:non_json``.
- OAuth token endpoint: ``oauth:<error>`` (or a transient ``error_description``),
  ``oauth:5xx``, ``oauth:*``.
- Transport failures without an HTTP answer, for every provider:
  ``<provider>:connection_lost``, ``<provider>:timeout``,
  ``<provider>:payload_too_large``, ``<provider>:invalid_content``,
  ``<provider>:interrupted`` (found in flight when a delivery resumes) and, for
  APNs, ``apns:credentials``; OAuth has ``oauth:connection``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from push.errors import ConfigError
from push.outcomes import Action, FailureReason, FailureType, Scope

HARD, SOFT, IGNORED, UNDEF = (FailureType.HARD, FailureType.SOFT, FailureType.IGNORED, FailureType.UNDEFINED)
R = FailureReason
TOKEN, PROVIDER, MESSAGE = Scope.TOKEN, Scope.PROVIDER, Scope.MESSAGE
NONE, REFRESH, RECONNECT = Action.NONE, Action.REFRESH_AUTH, Action.RECONNECT


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    key: str
    failure_type: FailureType | None
    failure_reason: FailureReason
    retry: bool
    scope: Scope
    action: Action
    source: str
    note: str = ""

    @property
    def provider(self) -> str:
        return self.key.split(":", 1)[0]


# Seed row names, quoted once so the docs say exactly where each value comes from.
IOS_UNREG = "003 iOS: APNs message rejection: Unregistration"
IOS_OTHER = "003 iOS: APNs message rejection: all other errors"
IOS_NET = "003 iOS: Network connection lost during sending"
IOS_BIG = "003 iOS: Message creation/analysis phase - payload too big"
IOS_FORMAT = "003 iOS: unexpected content format issue"
IOS_CERT = "003 iOS: Certificate issue (password, corruption, etc.)"
V2 = "003 Android V2: "
CHOICE = "choice (see docs/outcomes.md#choices): "

_APNS_REASONS: tuple[tuple[int, str, Scope, Action, str], ...] = (
    # status, reason, scope, action, note (whether it is retried: ``_APNS_TRANSIENT``)
    (400, "BadCollapseId", MESSAGE, NONE, "collapse id over 64 bytes"),
    (400, "BadDeviceToken", TOKEN, NONE, "malformed token or token of the other environment"),
    (400, "BadExpirationDate", MESSAGE, NONE, "bad apns-expiration"),
    (400, "BadMessageId", MESSAGE, NONE, "bad apns-id"),
    (400, "BadPriority", MESSAGE, NONE, "bad apns-priority"),
    (400, "BadTopic", PROVIDER, NONE, "bad apns-topic (configuration)"),
    (400, "DeviceTokenNotForTopic", TOKEN, NONE, "token belongs to another topic"),
    (400, "DuplicateHeaders", MESSAGE, NONE, "a header repeated"),
    (400, "IdleTimeout", PROVIDER, RECONNECT, "idle timeout; really a connection-level reason"),
    (400, "InvalidPushType", MESSAGE, NONE, "bad apns-push-type"),
    (400, "MissingDeviceToken", TOKEN, NONE, "no token in :path"),
    (400, "MissingTopic", PROVIDER, NONE, "topic required (configuration)"),
    (400, "PayloadEmpty", MESSAGE, NONE, "empty body"),
    (400, "TopicDisallowed", PROVIDER, NONE, "pushing to this topic not allowed"),
    (403, "BadCertificate", PROVIDER, NONE, "certificate invalid"),
    (403, "BadCertificateEnvironment", PROVIDER, NONE, "certificate for the wrong environment"),
    (403, "ExpiredProviderToken", PROVIDER, REFRESH, "JWT older than 1 h: mint a new one, resend once"),
    (403, "Forbidden", PROVIDER, NONE, "action not allowed"),
    (403, "InvalidProviderToken", PROVIDER, NONE, "JWT invalid or signature not verifiable"),
    (403, "MissingProviderToken", PROVIDER, NONE, "no certificate and no authorization header"),
    (403, "UnrelatedKeyIdInToken", PROVIDER, RECONNECT, "key id unrelated to this connection's first key"),
    (403, "BadEnvironmentKeyIdInToken", PROVIDER, NONE, "key not valid for this environment (doc spelling)"),
    (403, "BadEnvironmentKeyInToken", PROVIDER, NONE, "key not valid for this environment (wire spelling)"),
    (404, "BadPath", MESSAGE, NONE, "bad :path"),
    (405, "MethodNotAllowed", MESSAGE, NONE, "method not POST"),
    (413, "PayloadTooLarge", MESSAGE, NONE, "payload over the limit"),
    (429, "TooManyProviderTokenUpdates", PROVIDER, NONE, "JWT changed more than once per 20 min; retried later"),
    (429, "TooManyRequests", PROVIDER, NONE, "too many requests to one device token; retried later"),
    (500, "InternalServerError", PROVIDER, NONE, "APNs internal error; retried"),
    (503, "ServiceUnavailable", PROVIDER, NONE, "service unavailable; retried"),
    (503, "Shutdown", PROVIDER, RECONNECT, "APNs server shutting down; retried on a new connection"),
)

#: Statuses whose answers are the provider's passing trouble (throttling, outage), not a verdict on the
#: notification: their rows keep the seed's soft / refused for the final verdict but are retried with the
#: pipeline's backoff (honouring ``Retry-After``) within the validity period and attempt cap (choice 3).
_APNS_TRANSIENT = frozenset({429, 500, 503})

#: Without a body the provider documents (an HTML page from a proxy, an empty or cut-off body) the status
#: alone still decides for these: 401 is our credential (FCM refreshes it once), 429 throttling, 5xx the
#: provider's trouble. Any other status with such a body lands on ``<provider>:non_json``.
STATUS_DECIDES: frozenset[str] = frozenset({"401", "429", "5xx"})

#: Where an answer lands: candidate keys tried in order, the first the table holds wins. A candidate
#: naming a value the answer lacks is skipped. ``{status}`` is the HTTP status, ``{status_class}`` its
#: class (``4xx``), ``{decides}`` the status or class when it is in ``STATUS_DECIDES``, ``{reason}``
#: APNs' reason, ``{code}`` FCM's errorCode, ``{rpc}`` the google.rpc.Status ``status``, ``{transient}``
#: an OAuth ``error`` or ``error_description`` in ``OAUTH_TRANSIENT``, ``{error}`` the OAuth ``error``.
FALLBACKS: Mapping[str, tuple[str, ...]] = {
    # APNs JSON (or empty) error body: its reason, then what its status implies.
    "apns": ("apns:{status}:{reason}", "apns:{status}:*", "apns:{status_class}:*", "apns:other_status"),
    # APNs error body that is not JSON: nothing but the status is Apple's word, and only for some.
    "apns:non_json": ("apns:{decides}:*", "apns:non_json"),
    # FCM with an FcmError errorCode: its own row, else the HTTP status's own row, else the google.rpc status,
    # else the status class.
    # (401, 403, 404 and 429 have rows of their own: 401 is always our OAuth token unless the errorCode says
    # THIRD_PARTY_AUTH_ERROR, 429 always quota; the rpc status refines the rest.)
    "fcm:code": ("fcm:{code}", "fcm:{status}:no_fcm_error", "fcm:status:{rpc}", "fcm:error_code:{status_class}",
                 "fcm:error_code:*"),
    # FCM google.rpc.Status (or other JSON) without FcmError.
    "fcm:no_code": ("fcm:{status}:no_fcm_error", "fcm:{status_class}:no_fcm_error", "fcm:error_code:*"),
    # FCM body that is not JSON (an HTML page) or empty.
    "fcm:non_json": ("fcm:{decides}:no_fcm_error", "fcm:non_json"),
    # OAuth token endpoint: a transient error or description first, as google-auth's _can_retry reads both.
    "oauth": ("oauth:{transient}", "oauth:{error}", "oauth:{oauth_status}", "oauth:*"),
}

#: OAuth ``error`` / ``error_description`` values google-auth retries (``_client._can_retry``).
OAUTH_TRANSIENT: frozenset[str] = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})

#: Every APNs reason string documented by Apple (protocols.md §1.6), for tests.
APNS_REASONS: tuple[str, ...] = tuple(r for _, r, _, _, _ in _APNS_REASONS) + ("Unregistered", "ExpiredToken")

#: Every FcmError errorCode (protocols.md §2.4), for tests.
FCM_ERROR_CODES: tuple[str, ...] = (
    "UNSPECIFIED_ERROR", "INVALID_ARGUMENT", "UNREGISTERED", "SENDER_ID_MISMATCH", "QUOTA_EXCEEDED",
    "UNAVAILABLE", "INTERNAL", "THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR",
)

#: OAuth token-endpoint ``error`` values (protocols.md §3.2), for tests.
OAUTH_ERRORS: tuple[str, ...] = (
    "invalid_grant", "unauthorized_client", "access_denied", "admin_policy_enforced", "invalid_client",
    "deleted_client", "invalid_scope", "disabled_client", "org_internal", "internal_failure",
    "server_error", "temporarily_unavailable",
)


def _rows() -> Iterable[OutcomeRule]:
    # --- APNs --------------------------------------------------------------
    yield OutcomeRule("apns:200", None, R.UNDEFINED, False, TOKEN, NONE, "003 iOS: Targeted device (OK)", "accepted")
    yield OutcomeRule("apns:410:Unregistered", HARD, R.USER_UNKNOWN, False, TOKEN, NONE, IOS_UNREG,
                      "token inactive for the topic; timestamp kept")
    yield OutcomeRule("apns:410:ExpiredToken", HARD, R.USER_UNKNOWN, False, TOKEN, NONE, IOS_UNREG,
                      "device token expired; timestamp kept")
    for status, reason, scope, action, note in _APNS_REASONS:
        yield OutcomeRule(f"apns:{status}:{reason}", SOFT, R.REFUSED, status in _APNS_TRANSIENT, scope, action,
                          IOS_OTHER, note)
    # One fallback per documented status, scoped as Apple's status table puts it (protocols.md §1.6): a
    # reason Apple adds later must not count against the device unless the status itself is about it.
    yield OutcomeRule("apns:400:*", SOFT, R.REFUSED, False, MESSAGE, NONE, IOS_OTHER,
                      CHOICE + "unknown 400 reason: our request (the documented token reasons have rows)")
    yield OutcomeRule("apns:403:*", SOFT, R.REFUSED, False, PROVIDER, NONE, IOS_OTHER,
                      "unknown 403 reason: certificate or provider token")
    yield OutcomeRule("apns:404:*", SOFT, R.REFUSED, False, MESSAGE, NONE, IOS_OTHER, "unknown 404 reason: bad :path")
    yield OutcomeRule("apns:405:*", SOFT, R.REFUSED, False, MESSAGE, NONE, IOS_OTHER,
                      "unknown 405 reason: method not POST")
    yield OutcomeRule("apns:410:*", HARD, R.USER_UNKNOWN, False, TOKEN, NONE, IOS_UNREG,
                      "unknown 410 reason: the token is no longer active for the topic, whatever the reason")
    yield OutcomeRule("apns:413:*", SOFT, R.REFUSED, False, MESSAGE, NONE, IOS_OTHER,
                      "unknown 413 reason: payload too large")
    yield OutcomeRule("apns:429:*", SOFT, R.REFUSED, True, PROVIDER, NONE, IOS_OTHER,
                      "unknown 429 reason or non-JSON 429: throttling, retried later")
    yield OutcomeRule("apns:4xx:*", SOFT, R.REFUSED, False, PROVIDER, NONE, IOS_OTHER,
                      "fallback: a 4xx status APNs does not document")
    yield OutcomeRule("apns:5xx:*", SOFT, R.REFUSED, True, PROVIDER, NONE, IOS_OTHER,
                      "fallback: any other 5xx, unknown 5xx reason or non-JSON 5xx; retried")
    yield OutcomeRule("apns:other_status", SOFT, R.REFUSED, False, PROVIDER, NONE, IOS_OTHER,
                      "fallback: a status APNs does not document (1xx/2xx/3xx)")
    yield OutcomeRule("apns:non_json", SOFT, R.REFUSED, False, PROVIDER, NONE, IOS_OTHER,
                      "fallback: an answer whose body is not APNs JSON (proxy page, cut-off body)")
    yield OutcomeRule("apns:connection_lost", UNDEF, R.UNREACHABLE, True, PROVIDER, RECONNECT, IOS_NET,
                      "connection died before an answer; may have been delivered")
    yield OutcomeRule("apns:timeout", UNDEF, R.UNREACHABLE, True, PROVIDER, RECONNECT, IOS_NET,
                      "no answer before the stream deadline; may have been delivered")
    yield OutcomeRule("apns:interrupted", UNDEF, R.UNREACHABLE, False, PROVIDER, NONE, IOS_NET,
                      CHOICE + "the process stopped while this was in flight; outcome unknown, never resent")
    yield OutcomeRule("apns:payload_too_large", SOFT, R.REFUSED, False, MESSAGE, NONE, IOS_BIG,
                      "checked before sending: 4096 bytes, 5120 for voip")
    yield OutcomeRule("apns:invalid_content", SOFT, R.UNDEFINED, False, MESSAGE, NONE, IOS_FORMAT,
                      "checked before sending: bad push type, headers or payload")
    yield OutcomeRule("apns:credentials", SOFT, R.REFUSED, False, PROVIDER, NONE, IOS_CERT,
                      "the .p8 key or certificate cannot be used")

    # --- FCM v1 ------------------------------------------------------------
    yield OutcomeRule("fcm:200", None, R.UNDEFINED, False, TOKEN, NONE, V2 + "(success)", "accepted")
    yield OutcomeRule("fcm:UNREGISTERED", HARD, R.USER_UNKNOWN, False, TOKEN, NONE, V2 + "Unregistered",
                      "404 NOT_FOUND with FcmError UNREGISTERED")
    yield OutcomeRule("fcm:INVALID_ARGUMENT:token", HARD, R.USER_UNKNOWN, False, TOKEN, NONE,
                      V2 + "Invalid registration / not registered",
                      "400 whose BadRequest field is message.token or whose message says the token is invalid")
    for reason in ("Unregistered", "BadDeviceToken", "ExpiredToken"):
        yield OutcomeRule(f"fcm:apns:{reason}", HARD, R.USER_UNKNOWN, False, TOKEN, NONE,
                          V2 + "Invalid registration / not registered",
                          f"FCM carried an ApnsError {reason}: the iOS token is dead")
    yield OutcomeRule("fcm:INVALID_ARGUMENT", IGNORED, R.UNDEFINED, False, MESSAGE, NONE, V2 + "Invalid argument",
                      "any other bad parameter: the token is not proven dead")
    yield OutcomeRule("fcm:SENDER_ID_MISMATCH", SOFT, R.USER_UNKNOWN, False, TOKEN, NONE,
                      V2 + "Sender ID mismatch", "token registered for another project")
    yield OutcomeRule("fcm:QUOTA_EXCEEDED", SOFT, R.REFUSED, True, PROVIDER, NONE, V2 + "Device quota exceeded",
                      "V2 table (retry) wins over the V1 bullet (no retry)")
    yield OutcomeRule("fcm:THIRD_PARTY_AUTH_ERROR", IGNORED, R.REFUSED, True, PROVIDER, NONE,
                      V2 + "Third party authentication error", "APNs/web-push credential in Firebase")
    yield OutcomeRule("fcm:APNS_AUTH_ERROR", IGNORED, R.REFUSED, True, PROVIDER, NONE,
                      V2 + "Third party authentication error", "legacy name of THIRD_PARTY_AUTH_ERROR")
    yield OutcomeRule("fcm:INTERNAL", IGNORED, R.REFUSED, True, PROVIDER, NONE, V2 + "Internal", "500")
    yield OutcomeRule("fcm:UNAVAILABLE", IGNORED, R.REFUSED, True, PROVIDER, NONE, V2 + "Unavailable", "503")
    yield OutcomeRule("fcm:UNSPECIFIED_ERROR", IGNORED, R.REFUSED, False, PROVIDER, NONE,
                      V2 + "unexpected error code", "no further information")
    # An errorCode this table does not know: after the rows of 401/403/404/429 (below), the google.rpc
    # status says what kind of failure it is (firebase-admin falls back the same way), then the status
    # class, then "unexpected error code".
    yield OutcomeRule("fcm:status:RESOURCE_EXHAUSTED", SOFT, R.REFUSED, True, PROVIDER, NONE,
                      V2 + "Device quota exceeded", "unknown errorCode, status RESOURCE_EXHAUSTED (a 429 has its own row)")
    yield OutcomeRule("fcm:status:INTERNAL", IGNORED, R.REFUSED, True, PROVIDER, NONE, V2 + "Internal",
                      "unknown errorCode, status INTERNAL")
    yield OutcomeRule("fcm:status:UNAVAILABLE", IGNORED, R.REFUSED, True, PROVIDER, NONE, V2 + "Unavailable",
                      "unknown errorCode, status UNAVAILABLE")
    yield OutcomeRule("fcm:status:DEADLINE_EXCEEDED", SOFT, R.UNREACHABLE, True, PROVIDER, NONE,
                      V2 + "The FCM server is temporarily unavailable (timeouts)",
                      "unknown errorCode, status DEADLINE_EXCEEDED")
    yield OutcomeRule("fcm:error_code:5xx", IGNORED, R.REFUSED, True, PROVIDER, NONE, V2 + "Internal",
                      CHOICE + "unknown errorCode on a 5xx whose status says no more: provider trouble, retried")
    yield OutcomeRule("fcm:error_code:*", IGNORED, R.REFUSED, False, PROVIDER, NONE, V2 + "unexpected error code",
                      "fallback: an errorCode this table does not know")
    yield OutcomeRule("fcm:401:no_fcm_error", SOFT, R.REFUSED, False, PROVIDER, REFRESH,
                      V2 + "Error authenticating the sender account",
                      "OAuth token rejected (any body, unknown errorCode): refreshed and resent once first")
    yield OutcomeRule("fcm:403:no_fcm_error", SOFT, R.REFUSED, False, PROVIDER, NONE,
                      V2 + "Error authenticating the sender account", "API disabled or IAM permission missing")
    yield OutcomeRule("fcm:404:no_fcm_error", IGNORED, R.REFUSED, False, PROVIDER, NONE, V2 + "unexpected error code",
                      CHOICE + "wrong project id or endpoint, not a token fault")
    yield OutcomeRule("fcm:429:no_fcm_error", SOFT, R.REFUSED, True, PROVIDER, NONE, V2 + "Device quota exceeded",
                      CHOICE + "429 without FcmError, any body (empty, HTML, JSON), treated as quota")
    yield OutcomeRule("fcm:5xx:no_fcm_error", SOFT, R.UNREACHABLE, True, PROVIDER, NONE,
                      V2 + "The FCM server is temporarily unavailable", "5xx without FcmError, any body")
    yield OutcomeRule("fcm:4xx:no_fcm_error", IGNORED, R.REFUSED, False, PROVIDER, NONE, V2 + "unexpected error code",
                      "fallback: another 4xx without FcmError")
    yield OutcomeRule("fcm:non_json", IGNORED, R.REFUSED, False, PROVIDER, NONE, V2 + "unexpected error code",
                      "fallback: a body that is not JSON (e.g. HTML 404) on a status other than 401, 429 and 5xx")
    yield OutcomeRule("fcm:connection_lost", SOFT, R.UNREACHABLE, True, PROVIDER, RECONNECT,
                      V2 + "Network connection lost during sending", "may have been delivered")
    yield OutcomeRule("fcm:timeout", SOFT, R.UNREACHABLE, True, PROVIDER, RECONNECT,
                      V2 + "The FCM server is temporarily unavailable (timeouts)", "may have been delivered")
    yield OutcomeRule("fcm:interrupted", SOFT, R.UNREACHABLE, False, PROVIDER, NONE,
                      V2 + "Network connection lost during sending",
                      CHOICE + "the process stopped while this was in flight; outcome unknown, never resent")
    yield OutcomeRule("fcm:payload_too_large", SOFT, R.REFUSED, False, MESSAGE, NONE, V2 + "payload too big",
                      "checked before sending: 4096 bytes")
    yield OutcomeRule("fcm:invalid_content", SOFT, R.UNDEFINED, False, MESSAGE, NONE,
                      V2 + "illegal keywords used in the custom fields",
                      "seed leaves the reason blank: stored as 0 undefined")

    # --- Google OAuth token endpoint --------------------------------------
    A = "003 Android V2: Authentication: "
    yield OutcomeRule("oauth:connection", IGNORED, R.REFUSED, True, PROVIDER, NONE, A + "Connection issue",
                      "token endpoint unreachable")
    yield OutcomeRule("oauth:5xx", IGNORED, R.REFUSED, True, PROVIDER, NONE, A + "Connection issue",
                      CHOICE + "token endpoint 5xx/408/429 treated as a connection issue")
    for err, seed_row in (
        ("internal_failure", "Connection issue"),
        ("server_error", "Connection issue"),
        ("temporarily_unavailable", "Connection issue"),
    ):
        yield OutcomeRule(f"oauth:{err}", IGNORED, R.REFUSED, True, PROVIDER, NONE, A + seed_row,
                          CHOICE + "transient server-side error, as the error or as its error_description")
    for err, seed_row in (
        ("unauthorized_client", "Unauthorized client or scope in request"),
        ("access_denied", "Access denied"),
        ("invalid_grant", "Non-valid email / Invalid JWT / Invalid JWT Signature"),
        ("disabled_client", "OAuth client disabled"),
        ("invalid_scope", "Invalid OAuth scope or ID token audience provided"),
    ):
        yield OutcomeRule(f"oauth:{err}", IGNORED, R.REFUSED, False, PROVIDER, NONE, A + seed_row)
    for err in ("invalid_client", "deleted_client", "admin_policy_enforced", "org_internal"):
        yield OutcomeRule(f"oauth:{err}", IGNORED, R.REFUSED, False, PROVIDER, NONE,
                          A + "(not in the seed)", CHOICE + "credential/configuration error like the seed's rows")
    yield OutcomeRule("oauth:*", IGNORED, R.REFUSED, False, PROVIDER, NONE, A + "(not in the seed)",
                      "fallback: unknown error or unparseable answer")


class OutcomeTable:
    """All rows by key, loaded once; ``with_overrides`` returns a new table."""

    def __init__(self, rows: Iterable[OutcomeRule]):
        self._rows: dict[str, OutcomeRule] = {}
        for row in rows:
            if row.key in self._rows:
                raise ValueError(f"duplicate outcome rule {row.key!r}")
            self._rows[row.key] = row

    def __getitem__(self, key: str) -> OutcomeRule:
        return self._rows[key]

    def get(self, key: str) -> OutcomeRule | None:
        return self._rows.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self):
        return iter(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "OutcomeTable":
        """Override fields of existing rows, e.g. ``{"apns:400:DeviceTokenNotForTopic": {"failure_type": "hard"}}``."""
        rows = dict(self._rows)
        allowed = {f.name for f in fields(OutcomeRule)} - {"key"}
        for key, changes in overrides.items():
            if key not in rows:
                raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"unknown outcome rule {key!r}")
            if not isinstance(changes, Mapping):
                raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"{key}: expected an object of field -> value, "
                                  f"not {type(changes).__name__}")
            bad = set(changes) - allowed
            if bad:
                raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"{key}: unknown field(s) {sorted(bad)}; allowed {sorted(allowed)}")
            try:
                rows[key] = replace(rows[key], **{k: _coerce(k, v) for k, v in changes.items()}, source=rows[key].source + " (overridden)")
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"{key}: {exc}") from None
        return OutcomeTable(rows.values())

    @classmethod
    def from_file(cls, path: str | Path, base: "OutcomeTable | None" = None) -> "OutcomeTable":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("PUSH_OUTCOME_OVERRIDES", f"{path}: expected a JSON object of rule key -> fields")
        try:
            return (base or DEFAULT_TABLE).with_overrides(data)
        except ConfigError as exc:  # name the file, not only the row
            raise ConfigError(exc.setting, f"{path}: {exc.message}") from None


def _coerce(name: str, value: Any) -> Any:
    try:
        return _coerce_value(name, value)
    except (ValueError, KeyError):
        raise ValueError(f"{name} {value!r} is not allowed; one of {_allowed(name)}") from None


def _allowed(name: str) -> str:
    """The values an override of ``name`` accepts, for the error message."""
    if name == "failure_reason":
        return ", ".join(f"{int(r)} ({r.label!r})" for r in FailureReason)
    kinds: dict[str, Any] = {"failure_type": FailureType, "scope": Scope, "action": Action}
    extra = ", null" if name == "failure_type" else ""
    return ", ".join(repr(v.value) for v in kinds[name]) + extra if name in kinds else "true, false"


def _coerce_value(name: str, value: Any) -> Any:
    if name == "failure_type":
        return None if value is None else FailureType(value)
    if name == "failure_reason":
        return FailureReason(value) if isinstance(value, int) else FailureReason[str(value).upper().replace(" ", "_")]
    if name == "scope":
        return Scope(value)
    if name == "action":
        return Action(value)
    if name == "retry":
        if not isinstance(value, bool):
            raise TypeError("retry must be true or false")
        return value
    return value


DEFAULT_TABLE = OutcomeTable(_rows())
