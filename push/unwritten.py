"""Provider answers the database could not take, kept on local disk until a resume writes them.

When an outcome write still fails after its retries (the database is gone for longer than about
15 s), the answers of that batch are not dropped: each is appended, as one JSON line, to a file
per delivery in ``PUSH_UNWRITTEN_DIR``, and the run stops with a ``StorageError``. The next run of
the same delivery id, on the same host, writes them first (only for rows still held by the claim
that sent them), with their effects on tokens (a 410 still quarantines), and removes the file.
What cannot be kept this way (another host resumes, the disk is gone) is recorded ``interrupted``
on resume and never resent, as any send in doubt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from push.notification import Notification
from push.outcomes import Action, FailureReason, FailureType, Outcome, Scope

log = logging.getLogger("push.unwritten")

_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
_ENUMS = {"failure_type": FailureType, "failure_reason": FailureReason, "scope": Scope, "action": Action}


def default_dir() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "push-feedback", "unwritten")


def path_for(directory: str | None, delivery_id: str) -> Path:
    name = hashlib.blake2b(delivery_id.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return Path(directory or default_dir()) / f"{name}.jsonl"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if hasattr(value, "value") and type(value) in _ENUMS.values():
        return value.value
    return value


def _decode_dt(value: Any) -> Any:
    return datetime.fromisoformat(value["$dt"]) if isinstance(value, dict) and "$dt" in value else value


def keep(path: Path, delivery_id: str, claimer: str, batch: Iterable[tuple[Any, Notification, int, Outcome]],
         values: Iterable[tuple[Any, ...]]) -> int:
    """Append one batch of answers (as the pipeline holds them) to ``path``; how many were kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for (ref, n, attempts, out), cols in zip(batch, values):
        lines.append(json.dumps({
            "delivery_id": delivery_id, "seq": ref.seq, "claimed_by": claimer, "attempts": attempts,
            "valid_at_analysis": ref.valid_at_analysis, "columns": [_encode(v) for v in cols],
            "notification": n.to_json(), "outcome": {k: _encode(getattr(out, k)) for k in _OUTCOME_FIELDS},
        }, separators=(",", ":")))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The kept answers; a torn last line (the process died mid-append) is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("%s: skipping a torn line", path)
                continue
            record["columns"] = [_decode_dt(v) for v in record["columns"]]
            raw = record["outcome"]
            record["outcome"] = Outcome(**{k: (_ENUMS[k](v) if k in _ENUMS and v is not None else _decode_dt(v))
                                           for k, v in raw.items()})
            record["notification"] = Notification.from_json(record["notification"], check_expiration=False)
            yield record
