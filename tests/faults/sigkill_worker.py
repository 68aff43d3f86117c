"""Run one ``send_batch`` configured from the environment; tests/faults/test_sigkill.py kills it with SIGKILL.

Environment: the usual ``PUSH_*`` settings (pointing at the parent's fake server on
127.0.0.1 and at its database), plus ``FAULT_DELIVERY`` (delivery id) and
``FAULT_COUNT`` (how many notifications of ``notifications()`` to send).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fixtures.scenarios import apns_token, ok_apns_token  # noqa: E402
from push import Notification, PushConfig, send_batch  # noqa: E402

APP = "com.example.app"
SLOW_EVERY = 40  # one notification in 40 is answered only after the server's slow_delay


def notifications(count: int) -> list[Notification]:
    """The same list in the worker and in the parent that resumes it."""
    return [Notification(token=apns_token("slow", i) if i % SLOW_EVERY == 7 else ok_apns_token(i),
                         platform="apns", app=APP, title="t", body="b") for i in range(count)]


def main() -> None:
    cfg = PushConfig.from_env()
    rep = send_batch(notifications(int(os.environ["FAULT_COUNT"])), cfg, os.environ["FAULT_DELIVERY"])
    print(rep.as_dict(), flush=True)


if __name__ == "__main__":
    main()
