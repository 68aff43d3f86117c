"""Pure classification: a provider answer (or its absence) in, an ``Outcome`` out.

No I/O, no httpx, no database. ``classify`` never raises on what a server sends:
garbage, HTML, truncated JSON or wrong types all fall back to a table row.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Mapping

from push import jsoncodec
from push.outcome_table import DEFAULT_TABLE, FALLBACKS, OAUTH_TRANSIENT, STATUS_DECIDES, OutcomeRule, OutcomeTable
from push.outcomes import Outcome
from push.qualification import normalize_error_text

Provider = Literal["apns", "fcm", "oauth"]
TransportErrorName = Literal["connection_lost", "timeout", "payload_too_large", "invalid_content", "credentials",
                             "interrupted"]

_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_APNS_ERROR = "type.googleapis.com/google.firebase.fcm.v1.ApnsError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_DEAD_VIA_FCM = frozenset({"Unregistered", "BadDeviceToken", "ExpiredToken"})
# Google's wording for a malformed registration token; a payload error never says it.
_TOKEN_TEXT = re.compile(r"registration token is not a valid|invalid registration token", re.I)
# An errorCode or google.rpc status is an upper-case enum name; anything else (e.g. "apns:Unregistered")
# must not be able to name another row of the table.
_ENUM_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_OAUTH_NAME = re.compile(r"[a-z][a-z0-9_]*")
_MAX_TEXT = 500
_DISPLAY = {"apns": "APNs", "fcm": "FCM", "oauth": "OAuth"}


def classify(
    provider: Provider,
    *,
    status: int | None = None,
    body: bytes | str | None = b"",
    headers: Mapping[str, str] | None = None,
    error: TransportErrorName | None = None,
    detail: str = "",
    now: datetime | None = None,
    table: OutcomeTable | None = None,
) -> Outcome:
    """Map one answer to its ``Outcome``.

    ``error`` names a failure with no HTTP answer; ``detail`` adds our own words
    to its error text. ``now`` is only used to read an HTTP-date ``Retry-After``.
    """
    table = table or DEFAULT_TABLE
    hdrs = _lower(headers)
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else (body or b"")
    if provider not in ("apns", "fcm", "oauth"):
        raise ValueError(f"provider must be 'apns', 'fcm' or 'oauth', not {provider!r}")
    if error is not None or status is None:
        name = error or "connection_lost"
        key = "oauth:connection" if provider == "oauth" and name in ("connection_lost", "timeout") else f"{provider}:{name}"
        if key not in table:
            key = f"{provider}:connection_lost" if provider != "oauth" else "oauth:connection"
        text = f"{_DISPLAY[provider]} {name.replace('_', ' ')}" + (f": {detail}" if detail else "")
        return _outcome(table[key], text, status=None, reason=name, hdrs=hdrs, now=now)
    if provider == "apns":
        return _apns(table, status, raw, hdrs, now)
    if provider == "fcm":
        return _fcm(table, status, raw, hdrs, now)
    return _oauth(table, status, raw, hdrs, now)


def _apns(table: OutcomeTable, status: int, raw: bytes, hdrs: dict[str, str], now: datetime | None) -> Outcome:
    apns_id = hdrs.get("apns-id")
    if status == 200:
        return _outcome(table["apns:200"], "", status=200, reason=None, hdrs=hdrs, now=now, provider_id=apns_id)
    doc = _json(raw)
    reason = doc.get("reason") if isinstance(doc, dict) else None
    reason = reason if isinstance(reason, str) and reason else None
    timestamp = _apns_timestamp(doc.get("timestamp")) if isinstance(doc, dict) and status == 410 else None
    if reason is None and doc is None and raw.strip():
        key = _first(table, FALLBACKS["apns:non_json"], decides=_decides(status))
    else:
        key = _first(table, FALLBACKS["apns"], status=status, reason=reason, status_class=_status_class(status))
    text = f"APNs {status} {reason or _snippet(raw) or 'no reason'}"
    return _outcome(table[key], text, status=status, reason=reason, hdrs=hdrs, now=now,
                    provider_id=apns_id, timestamp=timestamp)


def _fcm(table: OutcomeTable, status: int, raw: bytes, hdrs: dict[str, str], now: datetime | None) -> Outcome:
    doc = _json(raw)
    if status == 200:
        name = doc.get("name") if isinstance(doc, dict) else None
        return _outcome(table["fcm:200"], "", status=200, reason=None, hdrs=hdrs, now=now,
                        provider_id=name if isinstance(name, str) else None)
    err = doc.get("error") if isinstance(doc, dict) else None
    status_class = _status_class(status)
    if not isinstance(err, dict):
        if doc is None:  # not JSON, or empty
            key = _first(table, FALLBACKS["fcm:non_json"], decides=_decides(status))
        else:  # JSON, but not google.rpc.Status
            key = _first(table, FALLBACKS["fcm:no_code"], status=status, status_class=status_class)
        text = f"FCM {status} {_snippet(raw) or 'empty body'}"
        return _outcome(table[key], text, status=status, reason=None, hdrs=hdrs, now=now)

    message: str = err["message"] if isinstance(err.get("message"), str) else ""
    rpc_status = err.get("status") if isinstance(err.get("status"), str) else ""
    code: str | None = None
    apns_reason: str | None = None
    token_field = False
    details = err.get("details")
    # Every level is checked for its type: a detail of the wrong shape is skipped, never trusted or raised on.
    for d in details if isinstance(details, list) else ():
        if not isinstance(d, dict):
            continue
        kind = d.get("@type")
        if kind == _FCM_ERROR and isinstance(d.get("errorCode"), str):
            code = d["errorCode"]
        elif kind == _APNS_ERROR and isinstance(d.get("reason"), str):
            apns_reason = d["reason"]
        elif kind == _BAD_REQUEST:
            violations = d.get("fieldViolations")
            for v in violations if isinstance(violations, list) else ():
                if isinstance(v, dict) and v.get("field") == "message.token":
                    token_field = True

    if apns_reason in _DEAD_VIA_FCM:
        key = f"fcm:apns:{apns_reason}"
    elif code == "INVALID_ARGUMENT" or (code is None and rpc_status == "INVALID_ARGUMENT"):
        key = "fcm:INVALID_ARGUMENT:token" if token_field or _TOKEN_TEXT.search(message) else "fcm:INVALID_ARGUMENT"
    elif code is not None:
        key = _first(table, FALLBACKS["fcm:code"], code=_enum(code), rpc=_enum(rpc_status), status=status,
                     status_class=status_class)
    else:
        key = _first(table, FALLBACKS["fcm:no_code"], status=status, status_class=status_class)
    shown = code or rpc_status or str(status)
    text = f"FCM {status} {shown}" + (f": {message}" if message else "") + (f" (APNs {apns_reason})" if apns_reason else "")
    return _outcome(table[key], text, status=status, reason=code or rpc_status or None, hdrs=hdrs, now=now)


def _oauth(table: OutcomeTable, status: int, raw: bytes, hdrs: dict[str, str], now: datetime | None) -> Outcome:
    doc = _json(raw)
    error = doc.get("error") if isinstance(doc, dict) else None
    desc = doc.get("error_description") if isinstance(doc, dict) else None
    error = error if isinstance(error, str) and _OAUTH_NAME.fullmatch(error) else None
    transient = next((v for v in (error, desc) if isinstance(v, str) and v in OAUTH_TRANSIENT), None)
    oauth_status = "5xx" if status >= 500 or status in (408, 429) else None
    key = _first(table, FALLBACKS["oauth"], transient=transient, error=error, oauth_status=oauth_status)
    text = f"OAuth {status} {error or _snippet(raw) or 'no error'}" + (f": {desc}" if isinstance(desc, str) and desc else "")
    return _outcome(table[key], text, status=status, reason=error, hdrs=hdrs, now=now)


def _outcome(rule: OutcomeRule, text: str, *, status: int | None, reason: str | None, hdrs: dict[str, str],
             now: datetime | None, provider_id: str | None = None, timestamp: datetime | None = None) -> Outcome:
    text = text[:_MAX_TEXT]
    return Outcome(
        failure_type=rule.failure_type,
        failure_reason=rule.failure_reason,
        retry=rule.retry,
        scope=rule.scope,
        rule=rule.key,
        error_text=normalize_error_text(text) if text else "",
        raw_error_text=text,
        provider_status=status,
        provider_reason=reason,
        retry_after=_retry_after(hdrs.get("retry-after"), now),
        provider_timestamp=timestamp,
        provider_id=provider_id,
        action=rule.action,
    )


def _first(table: OutcomeTable, chain: tuple[str, ...], **values: object) -> str:
    """The first key of ``chain`` the table holds; a candidate naming a value that is None is skipped."""
    known = {k: v for k, v in values.items() if v is not None}
    for template in chain:
        try:
            key = template.format_map(known)
        except KeyError:
            continue
        if key in table:
            return key
    raise KeyError(f"no outcome rule for {chain[-1]!r}")  # every chain ends on a catch-all row


def _decides(status: int) -> str | None:
    """The status (or its class) when it alone decides an answer whose body says nothing."""
    for name in (str(status), _status_class(status)):
        if name in STATUS_DECIDES:
            return name
    return None


def _enum(value: str | None) -> str | None:
    return value if value and _ENUM_NAME.fullmatch(value) else None


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    out: dict[str, str] = {}
    items: Any
    try:
        items = headers.items()
    except AttributeError:
        items = headers  # a list of pairs
    for k, v in items:
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        if isinstance(k, str) and isinstance(v, str):
            out[k.lower()] = v
    return out


def _json(raw: bytes) -> Any:
    if not raw or raw.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return jsoncodec.loads(raw)
    except (ValueError, RecursionError):
        return None


def _snippet(raw: bytes) -> str:
    text = raw[:200].decode("utf-8", "replace")
    text = re.sub(r"<[^>]*>", " ", text)
    return " ".join(text.split())[:120]


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _apns_timestamp(value: Any) -> datetime | None:
    # Apple sends milliseconds since the epoch; reject values that can't be a date.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _retry_after(value: str | None, now: datetime | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value), 7 * 86400))
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, min((when - now).total_seconds(), 7 * 86400))
