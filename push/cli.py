"""The ``push-feedback`` command line."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from push.classify import classify as classify_response
from push.outcome_table import DEFAULT_TABLE

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Send APNs/FCM pushes and act on every answer: failure types, quarantine, opt-out.")
console = Console()
err_console = Console(stderr=True)


@app.command("outcomes")
def outcomes(provider: Optional[str] = typer.Option(None, help="apns, fcm or oauth"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the outcome table rows.

    Example: push-feedback outcomes --provider fcm
    """
    if provider is not None and provider not in ("apns", "fcm", "oauth"):
        raise typer.BadParameter("must be apns, fcm or oauth", param_hint="--provider")
    rows = [r for r in DEFAULT_TABLE if provider is None or r.provider == provider]
    if as_json:
        console.print_json(json.dumps([{"rule": r.key, "failure_type": r.failure_type.value if r.failure_type else None,
                                        "failure_reason": int(r.failure_reason), "retry": r.retry,
                                        "scope": r.scope.value, "action": r.action.value, "source": r.source}
                                       for r in rows]))
        return
    t = Table(title=f"{len(rows)} outcome rules")
    for col in ("rule", "type", "reason", "retry", "scope"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.key, r.failure_type.value if r.failure_type else "success",
                  f"{int(r.failure_reason)} {r.failure_reason.label}", "yes" if r.retry else "no", r.scope.value)
    console.print(t)


@app.command("classify")
def classify(provider: str = typer.Argument(..., help="apns, fcm or oauth"),
             status: Optional[int] = typer.Option(None, min=100, max=599, help="HTTP status"),
             body: str = typer.Option("", help="response body (JSON text)"),
             error: Optional[str] = typer.Option(None, help="connection_lost, timeout, payload_too_large, ...")) -> None:
    """Classify one provider answer.

    Example: push-feedback classify apns --status 410 --body '{"reason":"Unregistered"}'
    """
    if provider not in ("apns", "fcm", "oauth"):
        raise typer.BadParameter("must be apns, fcm or oauth", param_hint="PROVIDER")
    if status is None and error is None:
        raise typer.BadParameter("give --status or --error", param_hint="--status")
    out = classify_response(provider, status=status, body=body.encode(), error=error)  # type: ignore[arg-type]
    console.print_json(json.dumps({
        "rule": out.rule, "failure_type": out.failure_type.value if out.failure_type else None,
        "failure_reason": int(out.failure_reason), "failure_reason_label": out.failure_reason.label,
        "retry": out.retry, "scope": out.scope.value, "action": out.action.value, "error_text": out.error_text,
    }))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
