"""Our own failures. A provider's verdict is an ``Outcome`` value, never one of these.

PushError
├── ConfigError (ValueError)      a setting or file cannot be used (names the setting)
├── ValidationError (ValueError)  a notification field is invalid (names the field and the limit)
├── StorageError                  the database failed mid-run
└── DeliveryBusy                  another live process is sending this delivery
"""

from __future__ import annotations


class PushError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(PushError, ValueError):
    """A setting or a file it names cannot be used; ``setting`` names it (``PUSH_…`` or the field)."""

    def __init__(self, setting: str, message: str):
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")


class ValidationError(PushError, ValueError):
    """Bad input: ``field`` names what is wrong and ``limit`` the bound it broke, when there is one."""

    def __init__(self, field: str, message: str, *, limit: object = None):
        self.field = field
        self.limit = limit
        self.message = message
        super().__init__(f"{field}: {message}")


class StorageError(PushError):
    """The database failed in a way retrying did not mend; the message is one line, the cause chained."""


class DeliveryBusy(PushError):
    """Another live process holds this delivery's lease: a second runner never sends its rows."""

    def __init__(self, delivery_id: str, holder: str | None):
        self.delivery_id = delivery_id
        self.holder = holder
        by = f" ({holder})" if holder else ""
        super().__init__(f"delivery {delivery_id!r} is being sent by another process{by}; "
                         f"run it again once that process has finished or stopped")
