"""push-feedback: send APNs and FCM v1 pushes over HTTP/2 and act on every answer."""

from push.classify import classify
from push.config import PushConfig
from push.errors import ConfigError, PushError, StorageError, TransportError, ValidationError
from push.notification import Notification
from push.outcome_table import DEFAULT_TABLE, OutcomeRule, OutcomeTable
from push.outcomes import Action, FailureReason, FailureType, Outcome, Scope
from push.pipeline import DeliveryReport, asend_batch, read_report, send_batch
from push.registry import denylist_profile, register_tokens, remove_from_denylist

__all__ = [
    "Action", "ConfigError", "DEFAULT_TABLE", "DeliveryReport", "FailureReason", "FailureType", "Notification",
    "Outcome", "OutcomeRule", "OutcomeTable", "PushConfig", "PushError", "Scope", "StorageError", "TransportError",
    "ValidationError", "asend_batch", "classify", "denylist_profile", "read_report", "register_tokens",
    "remove_from_denylist", "send_batch",
]
