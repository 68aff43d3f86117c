"""A competing process for the concurrency suite: one ``send_batch`` or one job run, configured by
the environment (``PUSH_*`` plus the ``CONC_*`` below), printing one JSON line with what happened.

``CONC_MODE``: ``send`` (``CONC_DELIVERY``, notifications from the JSON list in ``CONC_INPUT``:
``[platform, app, token]`` each) or a job name (``retry``, ``opt-out``, ``cleanup``) run
``CONC_LOOPS`` times. ``CONC_CLOCK_OFFSET`` (seconds) moves the jobs' clock ahead of real time.
Exit codes: 0 done, 3 the delivery was busy, 1 anything else (its type and message printed).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from push import Notification, PushConfig, send_batch  # noqa: E402
from push.clock import SystemClock  # noqa: E402
from push.errors import DeliveryBusy  # noqa: E402


class OffsetClock(SystemClock):
    def __init__(self, seconds: float):
        self._offset = timedelta(seconds=seconds)

    def now(self):  # type: ignore[override]
        return super().now() + self._offset


def notifications(path: str, title: str) -> list[Notification]:
    with open(path, encoding="utf-8") as fh:
        return [Notification(token=token, platform=platform, app=app, title=title, body="b")
                for platform, app, token in json.load(fh)]


def main() -> int:
    cfg = PushConfig.from_env()
    mode = os.environ["CONC_MODE"]
    try:
        if mode == "send":
            # The title names the delivery: the fake server tells FCM sends of two deliveries apart by body.
            delivery = os.environ["CONC_DELIVERY"]
            rep = send_batch(notifications(os.environ["CONC_INPUT"], os.environ.get("CONC_TITLE", "t")), cfg, delivery)
            print(json.dumps({"ok": True, "report": rep.as_dict()}), flush=True)
            return 0
        from jobs.runner import run_job
        from tables.engine import make_engine

        engine = make_engine(cfg.database_url)
        clock = OffsetClock(float(os.environ.get("CONC_CLOCK_OFFSET", "0")))
        results = [run_job(mode, engine, cfg, clock).as_dict() for _ in range(int(os.environ.get("CONC_LOOPS", "1")))]
        print(json.dumps({"ok": True, "results": results}, default=str), flush=True)
        return 0
    except DeliveryBusy as exc:
        print(json.dumps({"busy": True, "error": str(exc)}), flush=True)
        return 3
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which judges it
        print(json.dumps({"ok": False, "type": type(exc).__name__, "error": str(exc)}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
