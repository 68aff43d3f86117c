"""Our own failures. A provider's verdict is an ``Outcome`` value, never one of these.

PushError
├── ConfigError (ValueError)      a setting or file cannot be used (names the setting)
├── ValidationError (ValueError)  a notification field is invalid (names the field and the limit)
├── TransportError                the network failed in a way the caller must see
├── StorageError                  the database failed mid-run
└── DeliveryBusy                  another live process is sending this delivery
"""

from __future__ import annotations


class PushError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(PushError, ValueError):
    def __init__(self, setting: str, message: str):
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")


class ValidationError(PushError, ValueError):
    def __init__(self, field: str, message: str, *, limit: object = None):
        self.field = field
        self.limit = limit
        self.message = message
        super().__init__(f"{field}: {message}")


class TransportError(PushError):
    pass


class StorageError(PushError):
    pass


class DeliveryBusy(PushError):
    """Another live process holds this delivery's lease: a second runner never sends its rows."""

    def __init__(self, delivery_id: str, holder: str | None):
        self.delivery_id = delivery_id
        self.holder = holder
        by = f" ({holder})" if holder else ""
        super().__init__(f"delivery {delivery_id!r} is being sent by another process{by}; "
                         f"run it again once that process has finished or stopped")
