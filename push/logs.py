"""Log set-up for the processes push-feedback runs (the CLI, the scheduler).

One line per record. Tracebacks only with ``debug``: otherwise an exception
adds its type and first line to the record's line. Third-party loggers that
talk per request or per start-up (httpx, alembic, apscheduler, ...) are held
at WARNING unless ``debug``.

``fmt="json"`` (``PUSH_LOG_FORMAT=json``) writes one JSON object per line with
stable keys: ``time``, ``level``, ``logger``, ``event``, and when the record
carries them ``job``, ``status``, ``delivery_id``, ``provider``, ``counts``,
``duration``, ``error``, ``traceback`` (debug only). APNs device paths are
masked in both formats.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from push.notification import mask_device_paths

QUIET = ("httpx", "httpcore", "alembic", "apscheduler", "h2", "hpack", "jh2", "google", "urllib3", "asyncio")
EXTRA_KEYS = ("job", "status", "delivery_id", "provider", "counts", "duration")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_FLAG = "_push_feedback_handler"


def _mask(text: str) -> str:
    return mask_device_paths(text)  # the same masking as the httpx filter


def _error_summary(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    exc = record.exc_info[1]
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class TextFormatter(logging.Formatter):
    def __init__(self, debug: bool) -> None:
        super().__init__(TEXT_FORMAT)
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self.debug:
            return _mask(super().format(record))
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = self.formatMessage(record)
        summary = _error_summary(record)
        if summary and summary not in line:
            line += f" ({summary})"
        return _mask(line.replace("\n", " | "))


class JsonFormatter(logging.Formatter):
    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _mask(record.getMessage()),
        }
        for key in EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        summary = _error_summary(record)
        if summary:
            data["error"] = _mask(summary)
            if self.debug:
                data["traceback"] = _mask(self.formatException(record.exc_info))  # type: ignore[arg-type]
        return json.dumps(data, default=str, ensure_ascii=False)


def formatter(fmt: str, debug: bool) -> logging.Formatter:
    return JsonFormatter(debug) if fmt == "json" else TextFormatter(debug)


def setup(*, debug: bool = False, fmt: str = "text", level: int = logging.WARNING,
          stream: IO[str] | None = None) -> logging.Handler:
    """Install our one handler on the root logger (replacing a previous one of ours)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(formatter(fmt, debug))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return handler
