"""push-feedback: send APNs and FCM v1 pushes over HTTP/2 and act on every answer.

The public names below are importable from ``push`` directly. The light ones (values, the
classifier, the outcome table, errors, settings) load with the package; the ones that need the
database or the network (``send_batch`` and friends, the registry) load on first use (PEP 562), so
``import push`` and ``import push.classify`` stay cheap and free of SQLAlchemy and httpx.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from push.classify import classify
from push.config import PushConfig
from push.errors import ConfigError, DeliveryBusy, PushError, StorageError, ValidationError
from push.notification import Notification
from push.outcome_table import DEFAULT_TABLE, OutcomeRule, OutcomeTable
from push.outcomes import Action, FailureReason, FailureType, Outcome, Scope

if TYPE_CHECKING:
    from push.pipeline import DeliveryReport, NotificationResult, asend_batch, dead_tokens, read_report, send_batch
    from push.registry import denylist_profile, register_tokens, remove_from_denylist

# name -> module that defines it, loaded when the name is first asked for
_LAZY = {
    "DeliveryReport": "push.pipeline", "asend_batch": "push.pipeline", "read_report": "push.pipeline",
    "send_batch": "push.pipeline", "NotificationResult": "push.pipeline", "dead_tokens": "push.pipeline",
    "denylist_profile": "push.registry", "register_tokens": "push.registry",
    "remove_from_denylist": "push.registry",
}

__all__ = [
    "Action", "ConfigError", "DEFAULT_TABLE", "DeliveryBusy", "DeliveryReport", "FailureReason", "FailureType",
    "Notification", "NotificationResult", "Outcome", "OutcomeRule", "OutcomeTable", "PushConfig", "PushError", "Scope", "StorageError",
    "ValidationError", "asend_batch", "classify", "dead_tokens", "denylist_profile", "read_report", "register_tokens",
    "remove_from_denylist", "send_batch",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'push' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
