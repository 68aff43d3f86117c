"""The one boundary where network exceptions become outcomes."""

from __future__ import annotations

import httpx

from push.classify import classify
from push.outcome_table import OutcomeTable
from push.outcomes import Outcome


def outcome_for_transport_error(provider: str, exc: BaseException, table: OutcomeTable) -> Outcome:
    """A send that got no HTTP answer. Timeouts and lost connections may have been delivered."""
    name = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_lost"
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return classify(provider, error=name, detail=detail[:200], table=table)  # type: ignore[arg-type]
