"""``PushConfig``: every setting, read once from ``PUSH_*`` variables unless given in code."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from push.errors import ConfigError


def _f(default: Any, doc: str, **kw: Any) -> Any:
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class PushConfig:
    database_url: str = _f("sqlite:///push-feedback.db", "SQLAlchemy URL; SQLite file by default, or postgresql+psycopg://…")
    apns_base_url: str = _f("https://api.push.apple.com", "APNs host (api.sandbox.push.apple.com for development)")
    apns_key_file: str | None = _f(None, "APNs token auth: the .p8 signing key")
    apns_key_id: str | None = _f(None, "APNs token auth: 10-character key id")
    apns_team_id: str | None = _f(None, "APNs token auth: 10-character team id")
    apns_cert_file: str | None = _f(None, "APNs certificate auth: client certificate (PEM, may include the key)")
    apns_cert_key_file: str | None = _f(None, "APNs certificate auth: private key (PEM) if not in the certificate file")
    fcm_base_url: str = _f("https://fcm.googleapis.com", "FCM HTTP v1 host")
    fcm_credentials_file: str | None = _f(None, "FCM: service-account JSON; its token_uri is honoured")
    fcm_project_id: str | None = _f(None, "FCM project id (default: from the credentials)")
    ca_file: str | None = _f(None, "extra CA bundle (PEM) to trust besides the system store")
    outcome_overrides: str | None = _f(None, "JSON file of outcome-table row overrides")
    stream_timeout: float = _f(10.0, "seconds to wait for one provider answer", min=0.1, max=3600)
    max_connections: int = _f(2, "HTTP/2 connections per provider", min=1, max=64)
    concurrency: int = _f(500, "notifications in flight at once", min=1, max=100_000)
    chunk_size: int = _f(1000, "notifications read, analysed and written per chunk", min=1, max=100_000)
    quarantine_threshold: int = _f(5, "soft errors before a token goes to quarantine", min=1, max=1000)
    quarantine_reset_days: float = _f(10.0, "soft-error counter restarts after this many quiet days", min=0.001, max=3650)
    mailbox_full_release_days: float = _f(30.0, "cleanup releases mailbox-full style entries after this", min=0.001, max=3650)
    retry_max_attempts: int = _f(5, "attempts before a retryable failure becomes failed", min=1, max=100)
    retry_base_delay: float = _f(60.0, "first retry delay in seconds; doubles each attempt", min=0, max=86400)
    retry_max_delay: float = _f(6 * 3600.0, "longest retry delay in seconds", min=0, max=30 * 86400)
    validity_seconds: float = _f(5 * 86400.0, "a notification is not retried past this age (seed: 5 days)", min=0, max=365 * 86400)
    optout_interval: float = _f(6 * 3600.0, "seconds between opt-out job runs", min=1, max=30 * 86400)
    retry_interval: float = _f(60.0, "seconds between retry runner runs", min=1, max=86400)
    cleanup_interval: float = _f(86400.0, "seconds between database cleanup runs", min=1, max=30 * 86400)
    log_retention_days: float = _f(180.0, "delivery/exclusion logs older than this are purged", min=1, max=36500)
    unwritten_dir: str | None = _f(None, "where provider answers the database could not take wait for the resume "
                                   "(default: ~/.local/state/push-feedback/unwritten)")
    h2_backend: str = _f("auto", "HTTP/2 library: auto (jh2 if it imports, else h2), jh2 or h2",
                         choices=("auto", "h2", "jh2"))
    metrics_port: int | None = _f(None, "port of /metrics, /healthz and /readyz in the scheduler (off when unset)",
                                  min=0, max=65535)
    metrics_host: str = _f("0.0.0.0", "address the metrics/health port binds to")
    log_format: str = _f("text", "log lines as text or json (one JSON object per line)", choices=("text", "json"))
    # Scale-out (push.shards, push.celery_app): a delivery prepared once, its shards sent by many workers.
    broker_url: str | None = _f(None, "Celery broker of `push-feedback worker` and `send --workers celery`: "
                                "amqp://… (RabbitMQ) or redis://…")
    queue: str = _f("push-feedback", "broker queue the shard tasks go to and workers consume")
    broker_visibility_timeout: float = _f(3600.0, "Redis broker: seconds before an unacknowledged shard task is "
                                          "delivered again (keep it above a shard's sending time)", min=1,
                                          max=7 * 86400)
    shard_size: int = _f(5000, "notifications per shard of a delivery sent by workers", min=1, max=1_000_000)
    # Not from the environment: a host application's prometheus_client registry to expose our metrics on.
    metrics_registry: Any = field(default=None, compare=False, metadata={
        "doc": "prometheus_client registry of the host (code only)", "env": False})

    def __post_init__(self) -> None:
        if self.fcm_project_id:
            check_project_id(self.fcm_project_id, env_name("fcm_project_id"))
        for f in fields(self):
            if f.metadata.get("env") is False:
                continue
            value = _typed(f.name, f.type, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(env_name(f.name), f"{value} is not a finite number")
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(env_name(f.name), f"{value!r} is not one of {', '.join(choices)}")
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if lo is not None and value < lo:
                raise ConfigError(env_name(f.name), f"{value} is below the minimum {lo}")
            if hi is not None and value > hi:
                raise ConfigError(env_name(f.name), f"{value} is above the maximum {hi}")
        for name in ("apns_base_url", "fcm_base_url"):
            _require_https(name, getattr(self, name))
        if self.broker_url:
            check_broker_url(self.broker_url)

    def __repr__(self) -> str:
        """Every setting, with the database password masked (configs end up in logs)."""
        shown = [f"{f.name}={mask_url(v) if f.name in _URLS else v!r}"
                 for f in fields(self) if f.repr and (v := getattr(self, f.name)) != f.default]
        return f"PushConfig({', '.join(shown)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "PushConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.metadata.get("env") is False:
                continue
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown setting")
        return cls(**values)

    def with_(self, **changes: Any) -> "PushConfig":
        return replace(self, **changes)

    @property
    def apns_auth(self) -> str | None:
        if self.apns_key_file:
            return "token"
        if self.apns_cert_file:
            return "certificate"
        return None

    def require_apns(self) -> None:
        if self.apns_key_file:
            for name in ("apns_key_id", "apns_team_id"):
                if not getattr(self, name):
                    raise ConfigError(env_name(name), "is required with PUSH_APNS_KEY_FILE")
            _must_exist("apns_key_file", self.apns_key_file)
        elif self.apns_cert_file:
            _must_exist("apns_cert_file", self.apns_cert_file)
        else:
            raise ConfigError("PUSH_APNS_KEY_FILE", "APNs needs PUSH_APNS_KEY_FILE (token auth) or PUSH_APNS_CERT_FILE")

    def require_fcm(self) -> None:
        if not self.fcm_credentials_file:
            raise ConfigError("PUSH_FCM_CREDENTIALS_FILE", "FCM needs a service-account JSON file")
        _must_exist("fcm_credentials_file", self.fcm_credentials_file)


# A Google Cloud project id as Google defines it: 6 to 30 lower-case letters, digits and hyphens, starting with a
# letter and not ending with a hyphen, optionally after a legacy "domain:" prefix; or a project number. It is a
# segment of every FCM URL, so nothing else (no "/", "..", "%", "?") may get in.
PROJECT_ID_RULE = ("6 to 30 lower-case letters, digits and hyphens, starting with a letter and not ending with a "
                   "hyphen (optionally after a 'domain:' prefix), or a project number")
_PROJECT_ID = re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")


def check_project_id(value: object, setting: str, where: str = "") -> str:
    if not isinstance(value, str) or not _PROJECT_ID.fullmatch(value):
        raise ConfigError(setting, f"{where}{value!r} is not a Google Cloud project id; expected {PROJECT_ID_RULE}")
    return value


def env_name(name: str) -> str:
    return "PUSH_" + name.upper()


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting; used by the README and the CLI."""
    return [(env_name(f.name), "" if f.default is None else str(f.default), f.metadata["doc"])
            for f in fields(PushConfig) if f.metadata.get("env") is not False]


def effective(config: PushConfig, env: Mapping[str, str] | None = None,
              code: Mapping[str, Any] | None = None) -> list[tuple[str, str, str, str]]:
    """(variable, effective value, source, meaning) for every setting: source ``code`` when given in
    ``code`` (keyword arguments, a command-line option), else ``env`` when its variable is set, else
    ``default``. The database password is masked."""
    env = os.environ if env is None else env
    code = code or {}
    rows = []
    for f in fields(PushConfig):
        if f.metadata.get("env") is False:
            continue
        name = env_name(f.name)
        value = getattr(config, f.name)
        source = ("code" if code.get(f.name) is not None else "env" if env.get(name) not in (None, "")
                  else "default")
        text = "" if value is None else mask_url(value) if f.name in _URLS else str(value)
        rows.append((name, text, source, f.metadata["doc"]))
    return rows


_URLS = frozenset({"database_url", "broker_url"})  # shown with their password masked
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss")


def check_broker_url(url: str) -> str:
    """A broker URL Celery can use with push-feedback: RabbitMQ (amqp://) or Redis (redis://)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in BROKER_SCHEMES:
        raise ConfigError("PUSH_BROKER_URL", f"{mask_url(url)!r} is not a broker URL; expected "
                          "amqp://user:password@host:5672// (RabbitMQ) or redis://host:6379/0 (Redis)")
    return url


_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/]*@")


def mask_url(url: str) -> str:
    """``postgresql://app:secret@db/push`` -> ``postgresql://app:***@db/push``."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}:***@", url)


def _require_https(name: str, url: str) -> None:
    # http:// or a bare host name would fail on every send, each parked for retry as "may have been
    # delivered" although nothing left the machine: refuse it here, once.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(env_name(name), f"{url!r} is not a URL: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(env_name(name), f"{url!r} must be an https:// URL (e.g. https://api.push.apple.com)")


_KINDS = {"int": (int,), "float": (int, float), "str": (str,)}


def _typed(name: str, typ: Any, value: Any) -> Any:
    """In-code values get the env's checks: numbers as text are parsed like env values, and a value of
    the wrong type is a ConfigError naming the setting instead of a TypeError further down."""
    t = str(typ)
    optional = t.endswith("| None")
    if value is None:
        if optional:
            return None
        raise ConfigError(env_name(name), "must be set")
    kind = t.split(" |")[0]
    accepted = _KINDS.get(kind)
    if accepted is None:
        return value
    if isinstance(value, str) and kind != "str":
        return _parse(name, kind, value.strip())
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(env_name(name), f"{value!r} is not {'text' if kind == 'str' else 'a number'} "
                          f"(a {type(value).__name__}, expected {kind})")
    return float(value) if kind == "float" else value


def _parse(name: str, typ: Any, raw: str) -> Any:
    t = str(typ)
    try:
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
    except (ValueError, OverflowError):
        raise ConfigError(env_name(name), f"{raw!r} is not a number") from None
    return raw


def _must_exist(name: str, path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(env_name(name), f"file not found: {path}")
