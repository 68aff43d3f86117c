"""``Notification``: one push to one device, validated when it is built."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from push import jsoncodec
from push.errors import ValidationError

PLATFORMS = ("apns", "fcm")
APNS_PUSH_TYPES = {
    # push type -> topic suffix added to the bundle id (protocols.md §1.3)
    "alert": "", "background": "", "location": ".location-query", "voip": ".voip",
    "complication": ".complication", "fileprovider": ".pushkit.fileprovider", "mdm": "",
    "liveactivity": ".push-type.liveactivity", "pushtotalk": ".voip-ptt", "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
}
APNS_PAYLOAD_LIMIT = 4096
APNS_VOIP_PAYLOAD_LIMIT = 5120
FCM_PAYLOAD_LIMIT = 4096
FCM_MAX_TTL = 2_419_200  # 4 weeks
# The sizes of the columns what a notification carries is written to (tables/models.py: the token columns of
# delivery_log, app_subscription, quarantine and exclusion_log; app; profile_id; delivery.id). The validator's
# limits are these, so nothing it accepts can fail when written (tests/faults/test_column_limits.py holds the two
# together: tables cannot be imported while push loads).
TOKEN_MAX = 1024
APP_MAX = 255
PROFILE_ID_MAX = 255
DELIVERY_ID_MAX = 64
# APNs device tokens are hex of 32 bytes today; Apple says not to assume a length, so allow 8..200 bytes.
APNS_TOKEN_MAX = 400
_HEX = re.compile(r"[0-9a-fA-F]{16,%d}" % APNS_TOKEN_MAX)
# FCM documents no maximum; real registration tokens are about 160 characters, so the column's 1,024 is the limit.
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{8,%d}" % TOKEN_MAX)
_FCM_RESERVED = ("from", "message_type")
_PRIORITIES = ("high", "normal")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Every text field: (longest in characters or None, whether line breaks and other control characters other than
# NUL may appear). Identifiers are stored in columns or sent as headers; NUL is refused everywhere (PostgreSQL
# text cannot hold it, and no provider wants it).
_TEXT_FIELDS: dict[str, tuple[int | None, bool]] = {
    "app": (APP_MAX, False), "profile_id": (PROFILE_ID_MAX, False), "push_type": (None, False),
    "collapse_id": (None, False), "title": (None, True), "body": (None, True),
}


@dataclass(frozen=True, slots=True)
class Notification:
    token: str | None
    platform: str
    app: str
    profile_id: str | None = None
    title: str | None = None
    body: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    payload: Mapping[str, Any] | None = None  # raw provider payload: APNs JSON body, or FCM message fields
    priority: str = "high"
    expiration: datetime | None = None
    ttl: int | None = None  # seconds; the alternative to expiration
    collapse_id: str | None = None
    push_type: str = "alert"
    # Computed once: analysis checks the size, the client sends the body. Neither depends on the
    # clock (FCM's TTL does, so the FCM message itself is built at send time).
    _apns_body: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _counted_size: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValidationError("platform", f"must be one of {', '.join(PLATFORMS)}, not {self.platform!r}")
        if not isinstance(self.app, str) or not self.app.strip():
            raise ValidationError("app", "is required (APNs bundle id / topic, or FCM app name)")
        if self.token is not None and not isinstance(self.token, str):
            raise ValidationError("token", f"must be a string, not {type(self.token).__name__}")
        if self.token:  # an empty token is excluded at analysis (reason 7), not rejected here
            if self.platform == "apns":
                if not _HEX.fullmatch(self.token):
                    raise ValidationError("token", f"an APNs device token must be 16 to {APNS_TOKEN_MAX} "
                                          "hexadecimal characters", limit=f"16..{APNS_TOKEN_MAX} hex")
                # Hex is case-insensitive: one device, one key (duplicates, quarantine, subscriptions).
                object.__setattr__(self, "token", self.token.lower())
            if self.platform == "fcm" and not _FCM_TOKEN.fullmatch(self.token):
                raise ValidationError("token", f"an FCM registration token must be 8 to {TOKEN_MAX} characters "
                                      "of letters, digits and _:.-", limit=f"8..{TOKEN_MAX}")
        if self.profile_id is not None and not isinstance(self.profile_id, str):
            object.__setattr__(self, "profile_id", _profile_text(self.profile_id))
        for name, (longest, controls) in _TEXT_FIELDS.items():
            _check_text(name, getattr(self, name), longest, controls)
        if not isinstance(self.data, Mapping):
            raise ValidationError("data", f"must be a mapping, not {type(self.data).__name__}")
        if self.payload is not None and not isinstance(self.payload, Mapping):
            raise ValidationError("payload", f"must be a mapping, not {type(self.payload).__name__}")
        if self.priority not in _PRIORITIES:
            raise ValidationError("priority", f"must be 'high' or 'normal', not {self.priority!r}")
        if self.expiration is not None:
            if not isinstance(self.expiration, datetime):
                raise ValidationError("expiration", "must be a datetime")
            if self.expiration.tzinfo is None:
                object.__setattr__(self, "expiration", self.expiration.replace(tzinfo=timezone.utc))
            if self.expiration <= datetime.now(timezone.utc):
                raise ValidationError("expiration", f"{self.expiration.isoformat()} is in the past")
        if self.ttl is not None:
            if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or not 0 <= self.ttl <= FCM_MAX_TTL:
                raise ValidationError("ttl", f"must be whole seconds from 0 to {FCM_MAX_TTL}", limit=FCM_MAX_TTL)
        if self.platform == "apns":
            self._check_apns()
        else:
            self._check_fcm()

    def _check_apns(self) -> None:
        if self.push_type not in APNS_PUSH_TYPES:
            raise ValidationError("push_type", f"unknown APNs push type {self.push_type!r}; "
                                  f"one of {', '.join(sorted(APNS_PUSH_TYPES))}")
        if self.collapse_id is not None and len(self.collapse_id.encode()) > 64:
            raise ValidationError("collapse_id", "is longer than 64 bytes", limit=64)
        # Both travel as HTTP/2 header values (apns-topic, apns-collapse-id).
        for name in ("app", "collapse_id"):
            value = getattr(self, name)
            if value is not None and not _HEADER_SAFE.fullmatch(value):
                raise ValidationError(name, "must be printable ASCII for APNs (it is sent as an HTTP header)")
        if self.push_type == "background" and self.priority == "high":
            # Apple: background pushes must use priority 5; 10 is an error.
            object.__setattr__(self, "priority", "normal")
        _require_json("data", self.data)
        if self.payload is not None:
            _require_json("payload", self.payload)

    def _check_fcm(self) -> None:
        for key, value in self.data.items():
            if not isinstance(key, str):
                raise ValidationError("data", f"keys must be strings, got {key!r}")
            low = key.lower()
            if low in _FCM_RESERVED or low.startswith(("google", "gcm")):
                raise ValidationError(f"data.{key}", "is a reserved FCM key (from, message_type, "
                                      "google*, gcm*)")
            if not isinstance(value, str):
                raise ValidationError(f"data.{key}", f"FCM data values must be strings, not {type(value).__name__}")
        _require_json("data", self.data)
        if self.payload is not None:
            _require_json("payload", self.payload)

    @property
    def topic(self) -> str:
        return self.app + APNS_PUSH_TYPES.get(self.push_type, "")

    def apns_body(self) -> bytes:
        cached = self._apns_body
        if cached is None:
            cached = self._build_apns_body()
            object.__setattr__(self, "_apns_body", cached)
        return cached

    def _build_apns_body(self) -> bytes:
        if self.payload is not None:
            body: dict[str, Any] = dict(self.payload)
        else:
            aps: dict[str, Any] = {}
            if self.push_type == "background":
                aps["content-available"] = 1
            elif self.title is not None or self.body is not None:
                alert = {k: v for k, v in (("title", self.title), ("body", self.body)) if v is not None}
                aps["alert"] = alert
            body = {"aps": aps, **self.data}
        return jsoncodec.dumps(body)

    def apns_limit(self) -> int:
        return APNS_VOIP_PAYLOAD_LIMIT if self.push_type == "voip" else APNS_PAYLOAD_LIMIT

    def fcm_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"token": self.token}
        if self.title is not None or self.body is not None:
            msg["notification"] = {k: v for k, v in (("title", self.title), ("body", self.body)) if v is not None}
        if self.data:
            msg["data"] = dict(self.data)
        android: dict[str, Any] = {"priority": "HIGH" if self.priority == "high" else "NORMAL"}
        ttl = self.ttl
        if ttl is None and self.expiration is not None:
            ttl = max(0, int((self.expiration - datetime.now(timezone.utc)).total_seconds()))
        if ttl is not None:
            android["ttl"] = f"{min(ttl, FCM_MAX_TTL)}s"
        if self.collapse_id:
            android["collapse_key"] = self.collapse_id
        msg["android"] = android
        if self.payload:
            for key, value in self.payload.items():
                if key != "token":
                    msg[key] = value
        return msg

    def payload_size(self) -> tuple[int, int]:
        """(size in bytes, limit) of what the provider counts against its limit."""
        if self.platform == "apns":
            return len(self.apns_body()), self.apns_limit()
        size = self._counted_size
        if size is None:
            msg = self.fcm_message()
            counted = {k: msg[k] for k in ("notification", "data") if k in msg}
            size = len(jsoncodec.dumps(counted))
            object.__setattr__(self, "_counted_size", size)
        return size, FCM_PAYLOAD_LIMIT

    def to_json(self) -> str:
        return jsoncodec.dumps_text({
            "token": self.token, "platform": self.platform, "app": self.app, "profile_id": self.profile_id,
            "title": self.title, "body": self.body, "data": dict(self.data), "payload": self.payload,
            "priority": self.priority, "expiration": self.expiration.isoformat() if self.expiration else None,
            "ttl": self.ttl, "collapse_id": self.collapse_id, "push_type": self.push_type,
        })

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, check_expiration: bool = True) -> "Notification":
        if not isinstance(d, Mapping):
            raise ValidationError("notification", f"must be an object, not {type(d).__name__}")
        known = {name for name in cls.__dataclass_fields__ if not name.startswith("_")}
        unknown = set(d) - known
        if unknown:
            raise ValidationError(sorted(map(str, unknown))[0], f"unknown field; known fields: {', '.join(sorted(known))}")
        kw = dict(d)
        for req in ("platform", "app"):
            if req not in kw:
                raise ValidationError(req, "is required")
        kw.setdefault("token", None)
        exp = kw.get("expiration")
        if isinstance(exp, str):
            try:
                kw["expiration"] = datetime.fromisoformat(exp)
            except ValueError:
                raise ValidationError("expiration", f"{exp!r} is not an ISO 8601 date-time") from None
        if kw.get("data") is None:
            kw["data"] = {}
        if not check_expiration and kw.get("expiration") is not None:
            # Stored notifications (retries) are re-read after their expiry may have passed.
            exp_value = kw.pop("expiration")
            n = cls(**kw)
            object.__setattr__(n, "expiration", exp_value if exp_value.tzinfo else exp_value.replace(tzinfo=timezone.utc))
            return n
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str, *, check_expiration: bool = True) -> "Notification":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ValidationError("notification", f"not valid JSON: {exc}") from None
        return cls.from_dict(d, check_expiration=check_expiration)


def mask_token(token: str | None) -> str:
    """A device token as it may appear in a log line: its first 6 and last 4 characters."""
    if not token:
        return "<no token>"
    if len(token) <= 16:
        return "*" * len(token)
    return f"{token[:6]}…{token[-4:]}"


_DEVICE_PATH = re.compile(r"(/3/device/)([0-9A-Za-z]+)")


def mask_device_paths(text: str) -> str:
    """``text`` with the token in every APNs ``/3/device/<token>`` path masked (log lines, URLs)."""
    return _DEVICE_PATH.sub(lambda m: m.group(1) + mask_token(m.group(2)), text) if "/3/device/" in text else text


def _require_json(name: str, value: Any) -> None:
    # As it is sent: UTF-8 JSON (no lone surrogates), and standard JSON (no NaN / Infinity).
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationError(name, f"must be JSON-serializable as UTF-8: {exc}") from None


def _require_utf8(name: str, value: str | None) -> None:
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(name, "is not valid text (lone surrogate characters cannot be sent)") from None


def _check_text(name: str, value: object, longest: int | None, controls: bool) -> None:
    """A text field as every column and provider takes it: a string of valid UTF-8, no NUL, at most ``longest``."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, not {type(value).__name__}")
    _require_utf8(name, value)
    if longest is not None and len(value) > longest:
        raise ValidationError(name, f"is {len(value)} characters; the limit is {longest}", limit=longest)
    bad = "\x00" in value if controls else _CONTROL.search(value) is not None
    if bad:
        raise ValidationError(name, "must not contain NUL" if controls else "must not contain control characters")


def _profile_text(value: object) -> str:
    # A whole number is a common profile id; anything else is not turned into text (str() of an arbitrary
    # object can be anything, or raise).
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("profile_id", f"must be a string or a whole number, not {type(value).__name__}")
    if not -10 ** PROFILE_ID_MAX < value < 10 ** PROFILE_ID_MAX:
        raise ValidationError("profile_id", f"has more than {PROFILE_ID_MAX} digits", limit=PROFILE_ID_MAX)
    return str(value)


def check_delivery_id(value: object) -> str:
    """A caller's delivery id: stored in ``delivery.id`` (64), sent inside apns-ids (UTF-8)."""
    if not isinstance(value, str) or not value.strip() or len(value) > DELIVERY_ID_MAX:
        raise ValidationError("delivery", f"must be a non-empty id of at most {DELIVERY_ID_MAX} characters",
                              limit=DELIVERY_ID_MAX)
    _require_utf8("delivery", value)
    if _CONTROL.search(value):
        raise ValidationError("delivery", "must not contain control characters (NUL, line breaks, ...)")
    return value
