"""The ``push-feedback`` command line.

Exit codes: 0 success, 1 the operation failed (e.g. a token or delivery not
found, the database went away), 2 bad usage or configuration (a bad argument,
an unusable setting or database URL). Errors are one line; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from push.classify import classify as classify_response
from push.config import PushConfig, describe
from push.errors import ConfigError, PushError, StorageError, ValidationError
from push.outcome_table import DEFAULT_TABLE
from push.outcomes import FailureReason, FailureType

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Send APNs/FCM pushes and act on every answer: failure types, quarantine, opt-out.")
tokens_app = typer.Typer(no_args_is_help=True, help="Inspect device tokens.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Release tokens from quarantine.")
report_app = typer.Typer(no_args_is_help=True, help="Delivery and non-deliverables reports.")
rules_app = typer.Typer(no_args_is_help=True, help="Bounce qualification rules for provider error texts.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(tokens_app, name="tokens")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(report_app, name="report")
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")

# Piped output keeps whole lines (tokens, error texts) instead of wrapping at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


@dataclass
class State:
    database_url: str | None = None
    debug: bool = False
    show_tokens: bool = False


state = State()


@app.callback()
def _global(database_url: Optional[str] = typer.Option(None, "--database-url", envvar="PUSH_DATABASE_URL",
                                                        help="SQLAlchemy URL (default: sqlite:///push-feedback.db)"),
            debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs"),
            show_tokens: bool = typer.Option(False, "--show-tokens", help="print device tokens unmasked")) -> None:
    state.database_url, state.debug, state.show_tokens = database_url, debug, show_tokens
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def handled(fn: F) -> F:
    """One line per error, the exit code by kind; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except (ConfigError, ValidationError) as exc:
            _fail(exc, 2)
        except (PushError, OSError) as exc:
            _fail(exc, 1)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def _fail(exc: BaseException, code: int) -> None:
    if state.debug:
        err.print_exception()
    err.print(f"error: {exc}", markup=False, highlight=False)
    raise typer.Exit(code)


def mask(token: str | None) -> str:
    if not token:
        return "-"
    if state.show_tokens or len(token) <= 12:
        return token
    return f"{token[:6]}…{token[-4:]}"


def _config(**overrides: Any) -> PushConfig:
    return PushConfig.from_env(database_url=state.database_url, **overrides)


def _engine(config: PushConfig | None = None) -> Any:
    from tables.engine import make_engine
    from tables.migrate import upgrade

    engine = make_engine((config or _config()).database_url)
    upgrade(engine)
    return engine


def _when(value: Optional[str], option: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-11-01 or "
                                 "2026-11-01T08:00:00)", param_hint=option) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).isoformat(timespec="seconds") if value.tzinfo is None \
            else value.astimezone(timezone.utc).isoformat(timespec="seconds")
    return str(value)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_fmt) + "\n")


# --------------------------------------------------------------------------- outcomes


@app.command("outcomes")
@handled
def outcomes(provider: Optional[str] = typer.Option(None, help="apns, fcm or oauth"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the outcome table rows.

    Example: push-feedback outcomes --provider fcm
    """
    if provider is not None and provider not in ("apns", "fcm", "oauth"):
        raise typer.BadParameter("must be apns, fcm or oauth", param_hint="--provider")
    rows = [r for r in DEFAULT_TABLE if provider is None or r.provider == provider]
    if as_json:
        _print_json([{"rule": r.key, "failure_type": r.failure_type.value if r.failure_type else None,
                      "failure_reason": int(r.failure_reason), "retry": r.retry, "scope": r.scope.value,
                      "action": r.action.value, "source": r.source} for r in rows])
        return
    console.print(_table(f"{len(rows)} outcome rules", ["rule", "type", "reason", "retry", "scope"], [
        [r.key, r.failure_type.value if r.failure_type else "success",
         f"{int(r.failure_reason)} {r.failure_reason.label}", "yes" if r.retry else "no", r.scope.value] for r in rows]))


@app.command("classify")
@handled
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
    if error is not None and error not in ("connection_lost", "timeout", "payload_too_large", "invalid_content",
                                           "credentials", "interrupted"):
        raise typer.BadParameter("unknown transport error name", param_hint="--error")
    out = classify_response(provider, status=status, body=body.encode(), error=error)  # type: ignore[arg-type]
    _print_json({"rule": out.rule, "failure_type": out.failure_type.value if out.failure_type else None,
                 "failure_reason": int(out.failure_reason), "failure_reason_label": out.failure_reason.label,
                 "retry": out.retry, "scope": out.scope.value, "action": out.action.value,
                 "error_text": out.error_text})


@app.command("config")
def config_list() -> None:
    """List every PUSH_* setting with its default.

    Example: push-feedback config
    """
    console.print(_table("settings (environment variables)", ["variable", "default", "meaning"],
                         [list(row) for row in describe()]))


# --------------------------------------------------------------------------- send / demo


def _read_notifications(path: str) -> Iterator[Any]:
    from push.notification import Notification

    fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ValidationError(f"line {lineno}", f"not valid JSON: {exc.msg}") from None
            try:
                yield Notification.from_dict(data)
            except ValidationError as exc:
                raise ValidationError(f"line {lineno}: {exc.field}", exc.message, limit=exc.limit) from None
    finally:
        if fh is not sys.stdin:
            fh.close()


def _peek(it: Iterator[Any]) -> Iterator[Any] | None:
    try:
        first = next(it)
    except StopIteration:
        return None

    def chain() -> Iterator[Any]:
        yield first
        yield from it
    return chain()


@app.command("send")
@handled
def send(file: str = typer.Argument(..., help="JSON lines of notifications, or - for stdin"),
         delivery: Optional[str] = typer.Option(None, help="delivery id; the same id resumes that delivery"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable summary")) -> None:
    """Send notifications with the provider settings from PUSH_* variables.

    Each line: {"token": "...", "platform": "apns"|"fcm", "app": "...", "title": "...", "body": "...", "data": {...}}

    Example: push-feedback send notifications.jsonl --delivery newsletter-2026-11-23
    """
    from push.pipeline import send_batch

    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    items = _peek(_read_notifications(file))
    if items is None:
        raise ValidationError("FILE", f"{file} holds no notifications")
    config = _config()
    with _progress("sending") as advance:
        report = send_batch(items, config, delivery, progress=advance)
    _show_report(report, as_json)


class _progress:
    def __init__(self, label: str, total: int | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        self._label, self._total = label, total

    def __enter__(self) -> Callable[[int], None]:
        self._p.start()
        task = self._p.add_task(self._label, total=self._total)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        self._p.stop()


def _show_report(report: Any, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_dict())
        return
    rows = [["to deliver", report.to_deliver], ["excluded at analysis", report.excluded],
            ["sent", report.sent], ["failed", report.failed], ["retry pending", report.retry_pending],
            ["quarantined during analysis", report.quarantined_at_analysis],
            ["quarantined after delivery", report.quarantined_after_delivery], ["total", report.total]]
    console.print(_table(f"Delivery summary — {report.delivery_id}", ["", "count"], rows))
    if report.excluded_by_reason:
        console.print(_table("Excluded by reason", ["failure reason", "count"], [[k, v] for k, v in report.excluded_by_reason.items()]))
    if report.failed_by_type_reason:
        console.print(_table("Failed by type / reason", ["failure type / reason", "count"],
                             [[k, v] for k, v in report.failed_by_type_reason.items()]))


@app.command("demo")
@handled
def demo(count: int = typer.Option(3000, min=100, max=200_000, help="subscriptions to register and notify"),
         database: Path = typer.Option(Path("push-feedback-demo.db"), help="SQLite file for the demo "
                                       "(recreated); ignored with --database-url"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable summary")) -> None:
    """Run a full delivery against local fake APNs/FCM/OAuth servers and print what happened.

    Example: push-feedback demo            (SQLite file push-feedback-demo.db)
             push-feedback --database-url postgresql+psycopg://postgres@127.0.0.1/test demo
    """
    from push.demo import run_demo

    if state.database_url:
        url = state.database_url
    else:
        path = database.resolve()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    with _progress("sending", total=None) as advance:
        result = run_demo(url, count=count, progress=advance)
    if as_json:
        _print_json({"delivery": result.report.as_dict(), "non_deliverables": result.non_deliverables.as_dict(),
                     "opt_out": result.optout, "database_url": result.database_url,
                     "seconds": round(result.seconds, 2)})
        return
    console.print(f"[bold]push-feedback demo[/bold]: {result.report.total} notifications to "
                  f"{result.subscriptions} registered devices through local fake APNs/FCM/OAuth servers "
                  f"(HTTP/2 over TLS, GOAWAY injected every {result.goaway_after} streams)\n")
    _show_report(result.report, False)
    _show_non_deliverables(result.non_deliverables)
    console.print(_table("Opt-out job (mobileAppOptOutMgt)", ["", "count"],
                         [[k, v] for k, v in result.optout.items()]))
    console.print(f"\nDatabase: {result.database_url}")
    console.print(f"Finished in {result.seconds:.1f} s. Try:\n"
                  f"  push-feedback --database-url {result.database_url} report delivery {result.report.delivery_id}\n"
                  f"  push-feedback --database-url {result.database_url} tokens list --status quarantine\n"
                  f"  sqlite3 {result.database_url.removeprefix('sqlite:///')} "
                  "\"select status, failure_type, failure_reason, count(*) from delivery_log group by 1,2,3\"")


def _show_non_deliverables(nd: Any) -> None:
    console.print(_table(f"Non-deliverables ({nd.total})", ["failure type", "count"],
                         [[k, v] for k, v in nd.by_type.items()]))
    console.print(_table("By failure reason", ["failure reason", "count"], [[k, v] for k, v in nd.by_reason.items()]))
    console.print(_table("By app / platform", ["app / platform", "count"], [[k, v] for k, v in nd.by_app.items()]))
    if nd.by_error:
        console.print(_table("Top error texts", ["error text (normalized)", "count"],
                             [[k, v] for k, v in nd.by_error.items()]))


# --------------------------------------------------------------------------- tokens


@tokens_app.command("show")
@handled
def tokens_show(token: str = typer.Argument(..., help="the device token"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Subscription, quarantine status and history, and the last delivery log rows of a token.

    Example: push-feedback tokens show 7a1f...e2 --show-tokens
    """
    from tables.reports import reason_label, token_view

    engine = _engine()
    with engine.connect() as conn:
        view = token_view(conn, token)
    if not view.found:
        err.print(f"error: token {mask(token)} is not known to this database")
        raise typer.Exit(1)
    if as_json:
        _print_json({k: getattr(view, k) for k in ("token", "subscriptions", "quarantine", "releases",
                                                   "exclusions", "deliveries")})
        return
    console.print(_table(f"Subscriptions of {mask(token)}", ["id", "app", "platform", "profile", "disabled",
                                                            "disabled reason", "registered"],
                         [[s["id"], s["app"], s["platform"], s["profile_id"], s["disabled"],
                           reason_label(s["disabled_reason"]), s["registered_at"]] for s in view.subscriptions]))
    console.print(_table("Quarantine", ["app", "platform", "status", "errors", "type", "reason", "error text",
                                        "last error"],
                         [[q["app"], q["platform"], q["status"], q["error_count"], q["failure_type"],
                           reason_label(q["failure_reason"]), q["error_text"], q["last_error_at"]]
                          for q in view.quarantine]))
    if view.releases:
        console.print(_table("Releases", ["when", "previous status", "by"],
                             [[r["created_at"], r["previous_status"], r["released_by"]] for r in view.releases]))
    if view.exclusions:
        console.print(_table("Exclusions", ["when", "delivery", "reason", "source", "text"],
                             [[e["created_at"], e["delivery_id"], reason_label(e["failure_reason"]), e["source"],
                               e["reason_text"]] for e in view.exclusions]))
    console.print(_table("Last deliveries", ["when", "delivery", "status", "type", "reason", "attempts", "error"],
                         [[d["updated_at"], d["delivery_id"], d["status"], d["failure_type"],
                           reason_label(d["failure_reason"]), d["attempts"], d["error_text"]]
                          for d in view.deliveries]))


_STATUSES = ("valid", "with_errors", "quarantine", "denylisted")


@tokens_app.command("list")
@handled
def tokens_list(status: Optional[str] = typer.Option(None, help="valid | with_errors | quarantine | denylisted"),
                app_: Optional[str] = typer.Option(None, "--app", help="app (bundle id / FCM app)"),
                platform: Optional[str] = typer.Option(None, help="apns | fcm"),
                limit: int = typer.Option(50, min=1, max=100_000),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """List quarantine entries.

    Example: push-feedback tokens list --status quarantine --platform apns
    """
    from tables.reports import list_quarantine, reason_label

    if status is not None and status not in _STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(_STATUSES)}", param_hint="--status")
    if platform is not None and platform not in ("apns", "fcm"):
        raise typer.BadParameter("must be apns or fcm", param_hint="--platform")
    engine = _engine()
    with engine.connect() as conn:
        rows = list_quarantine(conn, status=status, app=app_, platform=platform, limit=limit)
    if as_json:
        _print_json([{**r, "token": mask(r["token"])} for r in rows])
        return
    console.print(_table(f"{len(rows)} tokens", ["token", "app", "platform", "status", "errors", "type", "reason",
                                                 "updated"],
                         [[mask(r["token"]), r["app"], r["platform"], r["status"], r["error_count"],
                           r["failure_type"], reason_label(r["failure_reason"]), r["updated_at"]] for r in rows]))


# --------------------------------------------------------------------------- quarantine


@quarantine_app.command("release")
@handled
def quarantine_release(token: Optional[str] = typer.Argument(None, help="release this one token"),
                       error_text: Optional[str] = typer.Option(None, "--error-text",
                                                                help="error text contains (case-insensitive)"),
                       app_: Optional[str] = typer.Option(None, "--app"),
                       platform: Optional[str] = typer.Option(None, help="apns | fcm"),
                       modified_since: Optional[str] = typer.Option(None, help="ISO date-time, inclusive"),
                       modified_until: Optional[str] = typer.Option(None, help="ISO date-time, inclusive"),
                       include_denylisted: bool = typer.Option(False, help="also release denylisted entries"),
                       dry_run: bool = typer.Option(False, "--dry-run", help="only count what would be released"),
                       by: str = typer.Option("cli", help="who releases (kept in the release log)")) -> None:
    """Set matching quarantine entries back to valid; every release is logged.

    Example: push-feedback quarantine release --error-text "APNs 503" --modified-since 2026-11-20 --dry-run
    """
    from tables import store

    since, until = _when(modified_since, "--modified-since"), _when(modified_until, "--modified-until")
    if platform is not None and platform not in ("apns", "fcm"):
        raise typer.BadParameter("must be apns or fcm", param_hint="--platform")
    if not any((token, error_text, app_, platform, since, until)):
        raise typer.BadParameter("give a TOKEN or at least one filter", param_hint="TOKEN")
    engine = _engine()
    with engine.begin() as conn:
        n = store.release_quarantine(conn, released_by=by, token=token, error_text_contains=error_text, app=app_,
                                     platform=platform, modified_since=since, modified_until=until,
                                     include_denylisted=include_denylisted, dry_run=dry_run)
    if token and n == 0 and not dry_run:
        err.print(f"error: token {mask(token)} has no entry to release")
        raise typer.Exit(1)
    console.print(f"{'would release' if dry_run else 'released'} {n} entr{'y' if n == 1 else 'ies'}")


# --------------------------------------------------------------------------- reports


@report_app.command("delivery")
@handled
def report_delivery(delivery_id: str = typer.Argument(..., help="delivery id"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """The seed's delivery summary for one delivery.

    Example: push-feedback report delivery newsletter-2026-11-23 --json
    """
    from push.pipeline import read_report

    engine = _engine()
    try:
        rep = read_report(engine, delivery_id)
    except ValidationError as exc:
        err.print(f"error: {exc.message}")
        raise typer.Exit(1)
    _show_report(rep, as_json)


@report_app.command("non-deliverables")
@handled
def report_non_deliverables(since: Optional[str] = typer.Option(None, help="ISO date or date-time"),
                            as_json: bool = typer.Option(False, "--json")) -> None:
    """Failed and excluded notifications by failure type, reason and app/platform.

    Example: push-feedback report non-deliverables --since 2026-11-01
    """
    from tables.reports import non_deliverables

    when = _when(since, "--since")
    engine = _engine()
    with engine.connect() as conn:
        nd = non_deliverables(conn, when)
    if as_json:
        _print_json(nd.as_dict())
        return
    _show_non_deliverables(nd)


# --------------------------------------------------------------------------- rules


@rules_app.command("list")
@handled
def rules_list(provider: Optional[str] = typer.Option(None, help="apns | fcm | oauth"),
               status: Optional[str] = typer.Option(None, help="to_qualify | keep | ignore"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Normalized provider error texts with their occurrences and qualification.

    Example: push-feedback rules list --status to_qualify
    """
    from tables import store

    if status is not None and status not in ("to_qualify", "keep", "ignore"):
        raise typer.BadParameter("must be to_qualify, keep or ignore", param_hint="--status")
    engine = _engine()
    with engine.connect() as conn:
        rules = store.load_qualification_rules(conn, provider=provider)
    rows = [r for r in rules.values() if status is None or r.status.value == status]
    rows.sort(key=lambda r: -r.occurrences)
    if as_json:
        _print_json([{"provider": r.provider, "text": r.normalized_text, "first_text": r.first_text,
                      "occurrences": r.occurrences, "status": r.status.value,
                      "failure_type": r.failure_type.value if r.failure_type else None,
                      "failure_reason": int(r.failure_reason) if r.failure_reason is not None else None}
                     for r in rows])
        return
    console.print(_table(f"{len(rows)} qualification rules", ["provider", "text", "occurrences", "status", "type",
                                                               "reason"],
                         [[r.provider, r.normalized_text, r.occurrences, r.status.value,
                           r.failure_type.value if r.failure_type else "-",
                           int(r.failure_reason) if r.failure_reason is not None else "-"] for r in rows]))


@rules_app.command("qualify")
@handled
def rules_qualify(text: str = typer.Argument(..., help="the normalized error text, as `rules list` shows it"),
                  provider: str = typer.Option(..., help="apns | fcm | oauth"),
                  failure_type: Optional[str] = typer.Option(None, "--type", help="hard | soft | ignored"),
                  reason: Optional[int] = typer.Option(None, help="failure reason technical value, e.g. 1"),
                  status: str = typer.Option("keep", help="keep | ignore | to_qualify")) -> None:
    """Set the failure type/reason/status of one normalized error text; it then overrides the built-in table.

    Example: push-feedback rules qualify "APNs 400 DeviceTokenNotForTopic" --provider apns --type hard --reason 1
    """
    from tables.qualify import qualify_rule

    if provider not in ("apns", "fcm", "oauth"):
        raise typer.BadParameter("must be apns, fcm or oauth", param_hint="--provider")
    if status not in ("keep", "ignore", "to_qualify"):
        raise typer.BadParameter("must be keep, ignore or to_qualify", param_hint="--status")
    ftype = None
    if failure_type is not None:
        try:
            ftype = FailureType(failure_type)
        except ValueError:
            raise typer.BadParameter("must be hard, soft, ignored or undefined", param_hint="--type") from None
    freason = None
    if reason is not None:
        try:
            freason = FailureReason(reason)
        except ValueError:
            raise typer.BadParameter(f"unknown failure reason; one of {', '.join(str(int(r)) for r in FailureReason)}",
                                     param_hint="--reason") from None
    engine = _engine()
    with engine.begin() as conn:
        created = qualify_rule(conn, provider=provider, text=text, status=status, failure_type=ftype,
                               failure_reason=freason)
    console.print(f"{'created' if created else 'updated'} rule for {provider}: {text!r} -> status {status}"
                  + (f", type {ftype.value}" if ftype else "") + (f", reason {int(freason)}" if freason is not None else ""))


# --------------------------------------------------------------------------- db / jobs


@db_app.command("upgrade")
@handled
def db_upgrade() -> None:
    """Create or migrate the tables to the current schema (safe to repeat).

    Example: push-feedback --database-url postgresql+psycopg://postgres@127.0.0.1/test db upgrade
    """
    from tables.engine import make_engine
    from tables.migrate import current_revision, upgrade

    engine = make_engine(_config().database_url)
    before = current_revision(engine)
    after = upgrade(engine)
    console.print(f"database at revision {after}" + (" (unchanged)" if before == after else f" (was {before or 'empty'})"))


@app.command("run-job")
@handled
def run_job_cmd(name: str = typer.Argument(..., help="opt-out | retry | cleanup"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Run one job once and print what it changed.

    Example: push-feedback run-job opt-out
    """
    from jobs.runner import JOBS, run_job
    from push.clock import SystemClock

    if name not in JOBS:
        raise typer.BadParameter(f"must be one of {', '.join(JOBS)}", param_hint="NAME")
    config = _config()
    engine = _engine(config)
    result = run_job(name, engine, config, SystemClock())
    data = result.as_dict() if hasattr(result, "as_dict") else vars(result)
    if as_json:
        _print_json(data)
        return
    console.print(_table(f"job {name}", ["", "value"], [[k, v] for k, v in data.items()]))
    if getattr(result, "status", "ok") == "error":
        raise typer.Exit(1)


@app.command("scheduler")
@handled
def scheduler(run_now: bool = typer.Option(False, "--run-now", help="run every job once at start")) -> None:
    """Run the opt-out, retry and cleanup jobs on their intervals until SIGTERM/SIGINT.

    Example: PUSH_OPTOUT_INTERVAL=21600 push-feedback scheduler
    """
    from jobs.scheduler import run_scheduler

    config = _config()
    _engine(config)  # fail fast on a bad database before scheduling anything
    logging.getLogger().setLevel(logging.DEBUG if state.debug else logging.INFO)
    run_scheduler(config, run_immediately=run_now)


def main() -> None:
    try:
        app()
    except StorageError as exc:  # raised outside a command (e.g. during shutdown)
        err.print(f"error: {exc}")
        sys.exit(1)
