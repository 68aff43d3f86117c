"""A sender that answers from the fixtures' golden responses, for pipeline logic tests.

It classifies the exact wire bodies of ``fixtures/scenarios.py`` through
``push.classify``, so the pipeline sees the same outcomes the HTTP/2 clients
produce; the end-to-end tests against the fake servers live in test_e2e_*.
"""

from __future__ import annotations

from collections import Counter

from fixtures.scenarios import scenario_for
from push.classify import classify
from push.notification import Notification
from push.outcomes import Outcome


class ScriptedSender:
    def __init__(self, provider: str, override: dict[str, Outcome] | None = None):
        self.provider = provider
        self.sent: Counter[str] = Counter()
        self.override = override or {}

    async def send(self, n: Notification, **kw: object) -> Outcome:
        assert n.token
        self.sent[n.token] += 1
        if n.token in self.override:
            return self.override[n.token]
        sc = scenario_for(self.provider, n.token)  # type: ignore[arg-type]
        if sc.kind in ("no_response", "slow"):
            return classify(self.provider, error="timeout")  # type: ignore[arg-type]
        if sc.kind in ("drop", "rst_cancel"):
            return classify(self.provider, error="connection_lost")  # type: ignore[arg-type]
        status = sc.status if sc.kind == "response" else 200
        return classify(self.provider, status=status, body=sc.body if sc.kind == "response" else b"",  # type: ignore[arg-type]
                        headers=dict(sc.headers))

    async def aclose(self) -> None:
        pass
