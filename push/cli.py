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
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from push.classify import classify as classify_response
from push.config import PushConfig, effective
from push.errors import ConfigError, PushError, StorageError, ValidationError
from push.outcome_table import DEFAULT_TABLE
from push.outcomes import FailureReason, FailureType

F = TypeVar("F", bound=Callable[..., Any])

# Options of the whole program. They are accepted after the subcommand too (`tokens show T --show-tokens`):
# the root group moves them to the front before parsing.
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on a signal after a drain; the same command resumes
GLOBAL_FLAGS = frozenset({"--debug", "--show-tokens"})
GLOBAL_VALUED = frozenset({"--database-url", "--log-format"})


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options (wherever given) first, the rest in their order."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":  # everything after it is an argument
            rest += args[i:]
            break
        if a in GLOBAL_FLAGS:
            front.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(args):
            front += [a, args[i + 1]]
            i += 1
        elif a.split("=", 1)[0] in GLOBAL_VALUED and "=" in a:
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


class _Root(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))


app = typer.Typer(cls=_Root, no_args_is_help=True, rich_markup_mode=None,
                  help="Send APNs/FCM pushes and act on every answer: failure types, quarantine, opt-out. "
                       "Words: see the glossary in the README.")
tokens_app = typer.Typer(no_args_is_help=True, help="Inspect and manage device tokens.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Release tokens from quarantine.")
denylist_app = typer.Typer(no_args_is_help=True, help="Profiles that must not get pushes on a channel.")
delivery_app = typer.Typer(no_args_is_help=True, help="Close unfinished deliveries.")
report_app = typer.Typer(no_args_is_help=True, help="Deliveries, one delivery's summary, and what was not delivered.")
rules_app = typer.Typer(no_args_is_help=True, help="Qualify provider error texts the outcome table does not cover.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(tokens_app, name="tokens")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(denylist_app, name="denylist")
app.add_typer(delivery_app, name="delivery")
app.add_typer(report_app, name="report")
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")

# Piped output keeps whole lines (tokens, error texts) instead of wrapping at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=True)  # messages stay one line
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=True)


@dataclass
class State:
    database_url: str | None = None
    database_url_given: bool = False  # on the command line, not from PUSH_DATABASE_URL
    debug: bool = False
    show_tokens: bool = False
    log_format: str = "text"


state = State()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            console.print(f"push-feedback {version('push-feedback')}")
        except PackageNotFoundError:
            console.print("push-feedback (not installed)")
        raise typer.Exit()


@app.callback()
def _global(ctx: typer.Context,
            database_url: Optional[str] = typer.Option(None, "--database-url", envvar="PUSH_DATABASE_URL",
                                                        help="SQLAlchemy URL (default: sqlite:///push-feedback.db)"),
            debug: bool = typer.Option(False, "--debug", help="show tracebacks and debug logs"),
            show_tokens: bool = typer.Option(False, "--show-tokens", help="print device tokens unmasked"),
            log_format: str = typer.Option("text", "--log-format", envvar="PUSH_LOG_FORMAT",
                                           help="text, or json: one JSON object per log line"),
            _v: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                    help="print the version and exit")) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--log-format")
    state.database_url, state.debug, state.show_tokens = database_url, debug, show_tokens
    state.log_format = log_format
    source = ctx.get_parameter_source("database_url")
    state.database_url_given = database_url is not None and getattr(source, "name", "") == "COMMANDLINE"
    from push import logs

    logs.setup(debug=debug, fmt=log_format, level=logging.WARNING)


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
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            _fail(StorageError(f"database error: {type(exc).__name__}: {_first_line(exc)}"), 1)

    return wrapper  # type: ignore[return-value]


def _is_database_error(exc: BaseException) -> bool:
    # Raised by the database outside a delivery or job body (migrations, locks, job bookkeeping); matched by
    # module so the CLI does not import SQLAlchemy before a command needs it.
    return type(exc).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3"))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # the driver's own message, without SQLAlchemy's statement and parameters
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(exc: BaseException, code: int) -> None:
    if state.debug:
        err.print_exception()
    err.print(f"error: {exc}", markup=False, highlight=False)
    raise typer.Exit(code)


def _stop(message: str, code: int = 1) -> None:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- masking
# One rule for every output mode (tables, JSON, messages): a token longer than 12 characters shows
# its first 6 and last 4 unless --show-tokens; anywhere a known token appears inside a text (an audit
# label, a stored payload) it is masked the same way.


def mask(token: str | None) -> str:
    if not token:
        return "-"
    if state.show_tokens or len(token) <= 12:
        return token
    return f"{token[:6]}…{token[-4:]}"


def redact(value: Any, tokens: Iterable[str]) -> Any:
    """``value`` (text, or JSON-ready lists and dicts) with every occurrence of ``tokens`` masked."""
    secret = sorted({t for t in tokens if t and len(t) > 12}, key=len, reverse=True)
    if state.show_tokens or not secret:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for t in secret:
                if t in v:
                    v = v.replace(t, mask(t))
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v
    return walk(value)


def _config(**overrides: Any) -> PushConfig:
    return PushConfig.from_env(database_url=state.database_url, **overrides)


def _engine(config: PushConfig | None = None) -> Any:
    """The database for commands that write: created and migrated on first use."""
    from tables.engine import make_engine
    from tables.migrate import upgrade

    engine = make_engine((config or _config()).database_url)
    upgrade(engine)
    return engine


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display; make_engine reports a bad URL
        return url


def _read_engine() -> Any:
    """The database for commands that only read: never created empty, named in human output."""
    from sqlalchemy.engine import make_url

    from tables.engine import make_engine
    from tables.migrate import current_revision, upgrade

    url = _config().database_url
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - make_engine names the setting
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).exists():
            hint = "" if state.database_url else " (the default; set PUSH_DATABASE_URL or --database-url)"
            _stop(f"no database at {parsed.database}{hint}: nothing was sent into it yet; the demo writes "
                  "sqlite:///push-feedback-demo.db")
    engine = make_engine(url)
    if current_revision(engine) is None:
        _stop(f"{_shown_url(url)} holds no push-feedback tables yet (`push-feedback db upgrade` creates them)")
    upgrade(engine)  # an older schema is brought up to date; at head this is a no-op
    state_read.url = _shown_url(url)
    return engine


@dataclass
class _ReadFrom:
    url: str | None = None


state_read = _ReadFrom()


def _which_database() -> None:
    """The last line of a read command's human output: which database it read."""
    if state_read.url:
        console.print(f"database: {state_read.url}", markup=False, highlight=False)


def _when(value: Optional[str], option: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-11-01 or "
                                 "2026-11-01T08:00:00)", param_hint=option) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _one_of(value: Optional[str], allowed: Sequence[str], option: str) -> None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=option)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).isoformat(timespec="seconds") if value.tzinfo is None \
            else value.astimezone(timezone.utc).isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def _table(title: str, columns: list[str], rows: list[list[Any]], tokens: Iterable[str] = ()) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    tokens = list(tokens)
    for r in rows:
        t.add_row(*[redact(_fmt(v), tokens) for v in r])
    return t


def _print_json(data: Any, tokens: Iterable[str] = ()) -> None:
    text = json.dumps(data, indent=2, default=_fmt)
    sys.stdout.write(redact(text, tokens) + "\n")


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
@handled
def config_list(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every PUSH_* setting: its effective value and where it came from (env, code = a command-line
    option, default). The database password is masked.

    Example: push-feedback config
    """
    import os

    code = {"database_url": state.database_url} if state.database_url and \
        os.environ.get("PUSH_DATABASE_URL") != state.database_url else {}
    rows = effective(_config(), code=code)
    if as_json:
        _print_json([{"variable": v, "value": value, "source": src, "meaning": doc} for v, value, src, doc in rows])
        return
    console.print(_table("settings", ["variable", "value", "source", "meaning"], [list(r) for r in rows]))


# --------------------------------------------------------------------------- send / demo


def _read_notifications(path: str) -> Iterator[Any]:
    from push.notification import Notification

    # utf-8-sig: files saved by editors that write a byte order mark read the same as any other
    fh = sys.stdin if path == "-" else open(path, encoding="utf-8-sig")
    try:
        for lineno, line in enumerate(fh, 1):
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ValidationError(f"line {lineno}", f"not valid JSON: {why}") from None
            try:
                yield Notification.from_dict(data)
            except ValidationError as exc:
                raise ValidationError(f"line {lineno}: {exc.field}", exc.message, limit=exc.limit) from None
    finally:
        if fh is not sys.stdin:
            fh.close()


class _FileInput:
    """A JSON-lines file as an iterable with a length (its non-blank lines), so a resume can tell
    an input of another size from the one the delivery started with."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as fh:
            self.count = sum(1 for line in fh if line.strip() and line.strip() != b"\xef\xbb\xbf")

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        return _read_notifications(self.path)


def _peek(it: Iterator[Any]) -> Iterator[Any] | None:
    try:
        first = next(it)
    except StopIteration:
        return None

    def chain() -> Iterator[Any]:
        yield first
        yield from it
    return chain()


def _new_delivery_id(prefix: str) -> str:
    import secrets

    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@app.command("send")
@handled
def send(file: str = typer.Argument(..., help="JSON lines of notifications, or - for stdin"),
         delivery: Optional[str] = typer.Option(None, help="delivery id (default: a new one, printed); the same "
                                                "id resumes that delivery"),
         dry_run: bool = typer.Option(False, "--dry-run", help="validate every line and the settings; write and "
                                      "send nothing"),
         force: bool = typer.Option(False, "--force", help="resume DELIVERY even though this input differs from "
                                    "the one it started with (recorded rows keep their outcome; the rest are "
                                    "matched by line position)"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable summary"),
         workers: Optional[str] = typer.Option(None, "--workers", help="celery: prepare the delivery here and "
                                               "enqueue its shards for `push-feedback worker` processes "
                                               "(PUSH_BROKER_URL; needs PostgreSQL)"),
         shard_size: Optional[int] = typer.Option(None, "--shard-size", min=1, max=1_000_000,
                                                  help="with --workers: notifications per shard "
                                                  "(default PUSH_SHARD_SIZE)"),
         wait: bool = typer.Option(False, "--wait", help="with --workers: wait until every shard is sent, then "
                                   "print the summary")) -> None:
    """Send notifications with the provider settings from PUSH_* variables.

    Each line: {"token": "...", "platform": "apns"|"fcm", "app": "...", "title": "...", "body": "...", "data": {...}}

    Example: push-feedback send notifications.jsonl --delivery newsletter-2026-11-23
    """
    from push.pipeline import send_batch

    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    config = _config()
    if workers is not None:
        _one_of(workers, ["celery"], "--workers")
    elif shard_size is not None or wait:
        raise typer.BadParameter("--shard-size and --wait go with --workers celery", param_hint="--workers")
    if dry_run:
        _dry_run(file, config, as_json)
        return
    if file == "-":
        items: Any = _peek(_read_notifications(file))
        if items is None:
            raise ValidationError("FILE", "standard input holds no notifications")
    else:
        items = _FileInput(file)
        if not len(items):
            raise ValidationError("FILE", f"{file} holds no notifications")
    delivery_id = delivery or _new_delivery_id("send")
    if workers is not None:
        _send_by_workers(items, config, delivery_id, shard_size, force, wait, as_json)
        return
    try:
        with _progress("sending") as advance:
            report = send_batch(items, config, delivery_id, progress=advance, force=force, drain_on_signals=True)
    except ValidationError as exc:
        if exc.field != "delivery":
            _stopped_mid_input(exc, config, delivery_id, file)
        raise
    _show_report(report, as_json)
    if report.stopped:
        where = "FILE" if file == "-" else file
        err.print(f"stopped by {report.stop_signal or 'request'} after the sends in flight were recorded: delivery "
                  f"{delivery_id} has {report.pending} notifications pending and the input after them unread; "
                  f"resume with `push-feedback send {where} --delivery {delivery_id}`", markup=False, highlight=False)
        raise typer.Exit(EXIT_STOPPED)


def _send_by_workers(items: Any, config: PushConfig, delivery_id: str, shard_size: int | None, force: bool,
                     wait: bool, as_json: bool) -> None:
    """Prepare here (analysis and pending rows), then one Celery task per shard that still has rows to send."""
    import time

    from push.celery_app import enqueue, make_app
    from push.config import mask_url
    from push.pipeline import read_report
    from push.shards import prepare, require_shared_ledger, unfinished_shards

    require_shared_ledger(config.database_url)
    celery = make_app(config)  # no broker setting: refused before anything is written
    engine = _engine(config)
    try:
        prep = prepare(items, config, delivery_id, shard_size=shard_size, engine=engine, force=force)
        todo = unfinished_shards(engine, delivery_id)
        sent = enqueue(celery, prep, todo)
        line = (f"delivery {delivery_id}: {prep.count} notifications{' (prepared before)' if prep.already_prepared else ''}"
                f", {prep.report.excluded} excluded at analysis; {sent} of {len(prep.shards)} shards of "
                f"{prep.shard_size} enqueued on {config.queue} at {mask_url(config.broker_url or '')}; "
                f"progress: `push-feedback report delivery {delivery_id}`")
        if not wait:
            if as_json:
                _print_json({"delivery_id": delivery_id, "count": prep.count, "shard_size": prep.shard_size,
                             "shards": len(prep.shards), "enqueued": sent, "already_prepared": prep.already_prepared})
            else:
                console.print(line, markup=False, highlight=False)
            return
        err.print(line, markup=False, highlight=False)
        while read_report(engine, delivery_id).pending:
            time.sleep(1.0)  # other processes do the work; the ledger is the only progress there is
        _show_report(read_report(engine, delivery_id), as_json)
    finally:
        celery.close()
        engine.dispose()


def _stopped_mid_input(exc: ValidationError, config: PushConfig, delivery_id: str, file: str) -> None:
    """Bad input after the first chunk: the delivery exists with rows; say which, and the two ways on."""
    from tables import delivery as dq
    from tables.engine import make_engine

    engine = make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            if dq.delivery_row(conn, delivery_id) is None:
                return  # failed before anything was written: the error alone says it all
            counts = Counter({s: n for s, _, _, n in dq.status_counts(conn, delivery_id)})
    finally:
        engine.dispose()
    err.print(f"error: {exc}", markup=False, highlight=False)
    where = "FILE" if file == "-" else file
    err.print(f"delivery {delivery_id} stopped there: {sum(counts.values())} notifications recorded, "
              f"{counts['pending']} of them pending (not sent). Fix the input and resume with "
              f"`push-feedback send {where} --delivery {delivery_id}`, or close it with "
              f"`push-feedback delivery abandon {delivery_id} --reason TEXT`.", markup=False, highlight=False)
    raise typer.Exit(2)


def _dry_run(file: str, config: PushConfig, as_json: bool) -> None:
    by_platform: Counter[str] = Counter()
    no_token = too_big = 0
    for n in _read_notifications(file):
        by_platform[n.platform] += 1
        if not n.token:
            no_token += 1
        else:
            size, limit = n.payload_size()
            too_big += size > limit
    total = sum(by_platform.values())
    if not total:
        raise ValidationError("FILE", f"{'standard input' if file == '-' else file} holds no notifications")
    from push.pipeline import load_table

    load_table(config)  # PUSH_OUTCOME_OVERRIDES, as a real send reads it
    for platform in by_platform:  # the settings a real send would need
        getattr(config, f"require_{platform}")()
    summary = {"valid": total, "by_platform": dict(by_platform), "would_exclude_no_token": no_token,
               "would_exclude_payload_too_large": too_big, "written": 0}
    if as_json:
        _print_json(summary)
        return
    console.print(f"dry run: {total} notifications valid ({', '.join(f'{p} {n}' for p, n in by_platform.items())}); "
                  f"{no_token} without a token and {too_big} over the payload limit would be excluded; "
                  "nothing written or sent")


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
    if report.pending:
        rows.insert(-1, ["pending (not sent yet)", report.pending])
    console.print(_table(f"Delivery summary — {report.delivery_id}", ["", "count"], rows))
    if report.excluded_by_reason:
        console.print(_table("Excluded by reason", ["failure reason", "count"],
                             [[k, v] for k, v in report.excluded_by_reason.items()]))
    if report.failed_by_type_reason:
        console.print(_table("Failed by type / reason", ["failure type / reason", "count"],
                             [[k, v] for k, v in report.failed_by_type_reason.items()]))


@app.command("demo")
@handled
def demo(count: int = typer.Option(3000, min=100, max=200_000, help="subscriptions to register and notify"),
         database: Path = typer.Option(Path("push-feedback-demo.db"), help="the demo's own SQLite file "
                                       "(recreated on each run); ignored with --database-url"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable summary")) -> None:
    """Run a full delivery against local fake APNs/FCM/OAuth servers and print what happened.

    The demo writes into its own SQLite file; PUSH_DATABASE_URL is not used. Given
    --database-url, it uses that database only if it is empty or holds an earlier
    demo run, and refuses any other.

    Example: push-feedback demo            (SQLite file push-feedback-demo.db)
             push-feedback demo --database-url postgresql+psycopg://postgres@127.0.0.1/test
    """
    from push.demo import run_demo

    if state.database_url_given:
        url = state.database_url or ""
    else:
        url = _demo_file(database.resolve())
    with _progress("sending", total=None) as advance:
        result = run_demo(url, count=count, progress=advance)
    shown = _shown_url(result.database_url)
    if as_json:
        _print_json({"delivery": result.report.as_dict(), "non_deliverables": result.non_deliverables.as_dict(),
                     "opt_out": result.optout, "database_url": shown, "seconds": round(result.seconds, 2)})
        return
    console.print(f"[bold]push-feedback demo[/bold]: {result.report.total} notifications to "
                  f"{result.subscriptions} registered devices through local fake APNs/FCM/OAuth servers "
                  f"(HTTP/2 over TLS, GOAWAY injected every {result.goaway_after} streams)\n")
    _show_report(result.report, False)
    _show_non_deliverables(result.non_deliverables)
    console.print(_table("Opt-out job (disables the subscriptions of dead tokens)", ["", "count"],
                         [[k, v] for k, v in result.optout.items()]))
    console.print(f"\nDatabase: {shown}")
    quoted = shown if " " not in shown else f"'{shown}'"
    console.print(f"Finished in {result.seconds:.1f} s. Try:\n"
                  f"  push-feedback --database-url {quoted} report delivery {result.report.delivery_id}\n"
                  f"  push-feedback --database-url {quoted} tokens list --status quarantine\n"
                  + (f"  sqlite3 {result.database_url.removeprefix('sqlite:///')} "
                     "\"select status, failure_type, failure_reason, count(*) from delivery_log group by 1,2,3\""
                     if result.database_url.startswith("sqlite:///") else ""), markup=False, highlight=False)


def _demo_file(path: Path) -> str:
    """The demo's own SQLite file, emptied for a new run; refused if it holds someone else's data."""
    from push.demo import foreign_data
    from tables.engine import make_engine
    from tables.migrate import current_revision

    url = f"sqlite:///{path}"
    if path.exists():
        engine = make_engine(url)
        try:
            other = None
            if current_revision(engine) is not None:
                with engine.connect() as conn:
                    other = foreign_data(conn)
        finally:
            engine.dispose()
        if other:
            raise ValidationError("--database", f"{path} holds data the demo did not create ({other}); "
                                  "give the demo another file")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return url


def _show_non_deliverables(nd: Any) -> None:
    console.print(_table(f"Not delivered: failed or excluded ({nd.total})", ["failure type", "count"],
                         [[k, v] for k, v in nd.by_type.items()]))
    console.print(_table("By failure reason", ["failure reason", "count"], [[k, v] for k, v in nd.by_reason.items()]))
    console.print(_table("By app / platform", ["app / platform", "count"], [[k, v] for k, v in nd.by_app.items()]))
    if nd.by_error:
        console.print(_table("Top error texts", ["error text (normalized)", "count"],
                             [[k, v] for k, v in nd.by_error.items()]))


# --------------------------------------------------------------------------- tokens


def _operator() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (e.g. a container without one)
        return "cli"


_BY_HELP = "who makes the change (kept in the release log; default cli:<your user name>)"
_PLATFORMS = ("apns", "fcm")


@tokens_app.command("show")
@handled
def tokens_show(token: str = typer.Argument(..., help="the device token"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Subscription, quarantine status and history, and the last delivery log rows of a token.

    Example: push-feedback tokens show 7a1f...e2 --show-tokens
    """
    from tables.reports import reason_label, token_view

    engine = _read_engine()
    with engine.connect() as conn:
        view = token_view(conn, token)
    if not view.found:
        _stop(f"token {mask(token)} is not known to this database ({state_read.url})")
    secret = [token]
    if as_json:
        _print_json({k: getattr(view, k) for k in ("token", "subscriptions", "quarantine", "releases",
                                                   "exclusions", "deliveries")}, secret)
        return
    console.print(_table(f"Subscriptions of {mask(token)}", ["id", "app", "platform", "profile", "disabled",
                                                            "disabled reason", "registered"],
                         [[s["id"], s["app"], s["platform"], s["profile_id"], s["disabled"],
                           reason_label(s["disabled_reason"]), s["registered_at"]] for s in view.subscriptions],
                         secret))
    console.print(_table("Quarantine", ["app", "platform", "status", "errors", "type", "reason", "error text",
                                        "last error"],
                         [[q["app"], q["platform"], q["status"], q["error_count"], q["failure_type"],
                           reason_label(q["failure_reason"]), q["error_text"], q["last_error_at"]]
                          for q in view.quarantine], secret))
    if view.releases:
        console.print(_table("Releases and manual changes", ["when", "previous status", "by"],
                             [[r["created_at"], r["previous_status"], r["released_by"]] for r in view.releases],
                             secret))
    if view.exclusions:
        console.print(_table("Exclusions", ["when", "delivery", "reason", "source", "text"],
                             [[e["created_at"], e["delivery_id"], reason_label(e["failure_reason"]), e["source"],
                               e["reason_text"]] for e in view.exclusions], secret))
    console.print(_table("Last deliveries", ["when", "delivery", "status", "type", "reason", "attempts", "error"],
                         [[d["updated_at"], d["delivery_id"], d["status"], d["failure_type"],
                           reason_label(d["failure_reason"]), d["attempts"], d["error_text"]]
                          for d in view.deliveries], secret))
    _which_database()


_STATUSES = ("valid", "with_errors", "quarantine", "denylisted")


@tokens_app.command("list")
@handled
def tokens_list(status: Optional[str] = typer.Option(None, help="valid | with_errors | quarantine | denylisted"),
                app_: Optional[str] = typer.Option(None, "--app", help="app (bundle id / FCM app)"),
                platform: Optional[str] = typer.Option(None, help="apns | fcm"),
                limit: int = typer.Option(50, min=1, max=100_000),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """List quarantine entries (tokens that had errors), newest first.

    Example: push-feedback tokens list --status quarantine --platform apns
    """
    from tables.reports import list_quarantine, reason_label

    _one_of(status, _STATUSES, "--status")
    _one_of(platform, _PLATFORMS, "--platform")
    engine = _read_engine()
    with engine.connect() as conn:
        rows = list_quarantine(conn, status=status, app=app_, platform=platform, limit=limit)
    secret = [r["token"] for r in rows]
    if as_json:
        _print_json(rows, secret)
        return
    console.print(_table(f"{len(rows)} tokens", ["token", "app", "platform", "status", "errors", "type", "reason",
                                                 "updated"],
                         [[r["token"], r["app"], r["platform"], r["status"], r["error_count"],
                           r["failure_type"], reason_label(r["failure_reason"]), r["updated_at"]] for r in rows],
                         secret))
    _which_database()


def _subscriptions_or_stop(conn: Any, token: str, app_: str | None, platform: str | None) -> list[Any]:
    from tables import devices

    rows = devices.subscriptions(conn, token, app=app_, platform=platform)
    if not rows:
        _stop(f"token {mask(token)} has no subscription"
              + (f" for app {app_}" if app_ else "") + (f" on {platform}" if platform else "")
              + "; `push-feedback tokens register` adds one")
    return rows


@tokens_app.command("enable")
@handled
def tokens_enable(token: str = typer.Argument(..., help="the device token"),
                  app_: Optional[str] = typer.Option(None, "--app", help="only this app's subscription"),
                  platform: Optional[str] = typer.Option(None, help="apns | fcm"),
                  reason: Optional[str] = typer.Option(None, help="why (kept in the release log)"),
                  by: Optional[str] = typer.Option(None, help=_BY_HELP)) -> None:
    """Make a device reachable again: re-enable its subscription and release its quarantine entry.

    Both changes are logged in quarantine_release_log. A denylisted entry or profile stays as it is
    (see `push-feedback quarantine release --include-denylisted` and `push-feedback denylist remove`).

    Example: push-feedback tokens enable 7a1f...e2 --reason "user reinstalled the app"
    """
    from push.clock import SystemClock
    from tables import devices, store

    _one_of(platform, _PLATFORMS, "--platform")
    who = by or _operator()
    now = SystemClock().now()
    engine = _engine()
    with engine.begin() as conn:
        subs = _subscriptions_or_stop(conn, token, app_, platform)
        released = store.release_quarantine(conn, released_by=_who(who, reason), token=token, app=app_,
                                            platform=platform, now=now)
        enabled = devices.enable(conn, subs, by=who, reason=reason, now=now)
        left = [q for q in devices.quarantine_entries(conn, token, app=app_, platform=platform)
                if q.status == "denylisted"]
    console.print(f"token {mask(token)}: enabled {_n(enabled, 'subscription')} "
                  f"({len(subs) - enabled} already enabled), released {_n(released, 'quarantine entry', 'quarantine entries')}",
                  markup=False, highlight=False)
    if left:
        console.print(f"still denylisted for {', '.join(q.app for q in left)}: release that too with "
                      "`push-feedback quarantine release TOKEN --include-denylisted` if that is intended",
                      markup=False, highlight=False)


@tokens_app.command("disable")
@handled
def tokens_disable(token: str = typer.Argument(..., help="the device token"),
                   app_: Optional[str] = typer.Option(None, "--app", help="only this app's subscription"),
                   platform: Optional[str] = typer.Option(None, help="apns | fcm"),
                   reason: Optional[str] = typer.Option(None, help="why (kept in the release log)"),
                   by: Optional[str] = typer.Option(None, help=_BY_HELP)) -> None:
    """Stop sending to a device: deliveries exclude it as 1 user unknown until it is enabled or registered again.

    Example: push-feedback tokens disable 7a1f...e2 --reason "device reported stolen"
    """
    from push.clock import SystemClock
    from tables import devices

    _one_of(platform, _PLATFORMS, "--platform")
    engine = _engine()
    with engine.begin() as conn:
        subs = _subscriptions_or_stop(conn, token, app_, platform)
        n = devices.disable(conn, subs, by=by or _operator(), reason=reason, now=SystemClock().now())
    console.print(f"token {mask(token)}: disabled {_n(n, 'subscription')} ({len(subs) - n} already disabled)",
                  markup=False, highlight=False)


@tokens_app.command("register")
@handled
def tokens_register(token: str = typer.Argument(..., help="the device token"),
                    platform: str = typer.Option(..., help="apns | fcm"),
                    app_: str = typer.Option(..., "--app", help="app (bundle id / FCM app)"),
                    profile: Optional[str] = typer.Option(None, help="the user (profile id) the device belongs to")
                    ) -> None:
    """Register a token as the app does when the OS hands it one: adds it, or re-enables a disabled one.

    Quarantine is not touched (see `push-feedback tokens enable`).

    Example: push-feedback tokens register 7a1f...e2 --platform apns --app com.example.news --profile u-42
    """
    from push.registry import register_tokens

    _one_of(platform, _PLATFORMS, "--platform")
    engine = _engine()
    register_tokens(engine, [{"token": token, "platform": platform, "app": app_, "profile_id": profile}])
    console.print(f"token {mask(token)} registered for {app_} on {platform}", markup=False, highlight=False)


@tokens_app.command("test-push")
@handled
def tokens_test_push(token: str = typer.Argument(..., help="the device token"),
                     app_: Optional[str] = typer.Option(None, "--app", help="app (default: the token's subscription)"),
                     platform: Optional[str] = typer.Option(None, help="apns | fcm (default: the subscription's)"),
                     title: str = typer.Option("Test notification", help="notification title"),
                     body: str = typer.Option("Sent from push-feedback tokens test-push", help="notification body"),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Send one notification to one token and print the provider's verdict and the recorded outcome.

    It goes through the normal delivery path (a delivery named test-push-…), so a quarantined or
    disabled token is excluded, not sent: the output says why. Exit code 0 only if the provider accepted it.

    Example: push-feedback tokens test-push 7a1f...e2
    """
    from push.notification import Notification
    from push.pipeline import send_batch
    from tables import devices
    from tables.models import DLOG
    import sqlalchemy as sa

    _one_of(platform, _PLATFORMS, "--platform")
    config = _config()
    engine = _engine(config)
    try:
        if app_ is None or platform is None:
            with engine.connect() as conn:
                subs = _subscriptions_or_stop(conn, token, app_, platform)
            if len(subs) > 1:
                _stop(f"token {mask(token)} is registered for {len(subs)} apps "
                      f"({', '.join(f'{s.app}/{s.platform}' for s in subs)}); give --app and --platform", 2)
            app_, platform = subs[0].app, subs[0].platform
        delivery_id = _new_delivery_id("test-push")
        send_batch([Notification(token=token, platform=platform, app=app_, title=title, body=body)], config,
                   delivery_id, engine=engine)
        with engine.connect() as conn:
            row = conn.execute(sa.select(DLOG).where(DLOG.c.delivery_id == delivery_id)).one()._mapping
            quarantine = devices.quarantine_entries(conn, token, app=app_, platform=platform)
    finally:
        engine.dispose()
    from tables.reports import reason_label

    verdict = _verdict(row)
    q = quarantine[0] if quarantine else None
    data = {"delivery_id": delivery_id, "verdict": verdict, "status": row["status"],
            "provider_status": row["provider_status"], "provider_reason": row["provider_reason"],
            "provider_id": row["provider_id"], "failure_type": row["failure_type"],
            "failure_reason": row["failure_reason"], "error_text": row["error_text"], "attempts": row["attempts"],
            "quarantine_status": q.status if q else None, "quarantine_errors": q.error_count if q else 0}
    if as_json:
        _print_json(data, [token])
    else:
        console.print(f"{mask(token)} ({app_} / {platform}): {verdict}", markup=False, highlight=False)
        console.print(_table(f"Outcome row (delivery {delivery_id})", ["", "value"], [
            ["status", row["status"]], ["provider answer", f"{row['provider_status'] or '-'} {row['provider_reason'] or ''}".strip()],
            ["provider id", row["provider_id"]], ["failure type", row["failure_type"]],
            ["failure reason", reason_label(row["failure_reason"])], ["error text", row["error_text"]],
            ["quarantine now", f"{q.status} ({q.error_count} errors)" if q else "no entry (valid)"]], [token]))
    if row["status"] != "sent":
        raise typer.Exit(1)


def _verdict(row: Any) -> str:
    if row["status"] == "sent":
        return f"accepted by the provider (HTTP {row['provider_status']})"
    if row["status"] == "excluded":
        return f"not sent: excluded at analysis ({row['error_text']})"
    what = "will be retried" if row["status"] == "retry_pending" else "failed"
    return f"{what}: {row['error_text'] or row['provider_reason'] or 'no answer'}"


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _who(by: str, reason: str | None) -> str:
    return by + (f" | reason={reason.strip()!r}" if reason and reason.strip() else "")


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
                       enable_subscriptions: bool = typer.Option(False, "--enable-subscriptions",
                                                                 help="also re-enable the subscriptions the opt-out "
                                                                 "job disabled, so the devices are sent to again"),
                       dry_run: bool = typer.Option(False, "--dry-run", help="only count what would change"),
                       yes: bool = typer.Option(False, "--yes", help="confirm a release by filter (without TOKEN)"),
                       reason: Optional[str] = typer.Option(None, help="why (kept in the release log)"),
                       by: Optional[str] = typer.Option(None, help=_BY_HELP)) -> None:
    """Set matching quarantine entries back to valid; every release is logged with who and why.

    A release does not touch the subscription: one the opt-out job disabled stays disabled (the next
    delivery excludes it as 1 user unknown) unless --enable-subscriptions is given; the output says
    how many. Releasing by filter shows the count and stops unless --yes.

    Example: push-feedback quarantine release --error-text "APNs 503" --modified-since 2026-11-20 --dry-run
    """
    from push.clock import SystemClock
    from tables import devices, store

    since, until = _when(modified_since, "--modified-since"), _when(modified_until, "--modified-until")
    _one_of(platform, _PLATFORMS, "--platform")
    if not any((token, error_text, app_, platform, since, until)):
        raise typer.BadParameter("give a TOKEN or at least one filter", param_hint="TOKEN")
    who = by or _operator()
    now = SystemClock().now()
    engine = _engine()
    with engine.connect() as conn:
        # The release runs for real inside a transaction that is only committed when asked for: a dry run
        # and an unconfirmed bulk release report exactly what the release would do, then roll it back.
        tx = conn.begin()
        try:
            n = store.release_quarantine(conn, released_by=_who(who, reason), token=token,
                                         error_text_contains=error_text, app=app_, platform=platform,
                                         modified_since=since, modified_until=until,
                                         include_denylisted=include_denylisted, now=now)
            disabled = devices.disabled_among(conn, devices.released_keys(conn, now)) if n else []
            enabled = devices.enable(conn, disabled, by=who, reason=reason, now=now) if enable_subscriptions else 0
            entries = devices.quarantine_entries(conn, token, app=app_, platform=platform) if token and not n else []
            subs = devices.subscriptions(conn, token, app=app_, platform=platform) if token and not n else []
            confirmed = not dry_run and (token is not None or yes)
            tx.commit() if confirmed else tx.rollback()
        except BaseException:
            tx.rollback()
            raise
    if token and n == 0:
        _nothing_released(token, entries, subs, include_denylisted)
        return
    entries_text = _n(n, "entry", "entries")
    if not confirmed and not dry_run:
        console.print(f"would release {entries_text}{_subscription_note(len(disabled), enabled, enable_subscriptions, True)}",
                      markup=False, highlight=False)
        _stop("a release by filter needs --yes (or --dry-run to only count)", 2)
    verb = "would release" if dry_run else "released"
    console.print(f"{verb} {entries_text}{_subscription_note(len(disabled), enabled, enable_subscriptions, dry_run)}",
                  markup=False, highlight=False)


def _subscription_note(disabled: int, enabled: int, enable: bool, conditional: bool) -> str:
    if not disabled:
        return "; their subscriptions are enabled, so the next delivery sends to them" if not conditional else ""
    if enable:
        return f"; {'would re-enable' if conditional else 're-enabled'} {_n(enabled, 'disabled subscription')}"
    return (f"; {_n(disabled, 'subscription')} {'stays' if disabled == 1 else 'stay'} disabled (the opt-out job "
            "disabled them; the next delivery excludes them as 1 user unknown): add --enable-subscriptions, "
            "or run `push-feedback tokens enable TOKEN`, to send to them again")


def _nothing_released(token: str, entries: list[Any], subs: list[Any], include_denylisted: bool) -> None:
    disabled = [s for s in subs if s.disabled]
    hint = (f"; its subscription is disabled: `push-feedback tokens enable {mask(token)}` re-enables it"
            if disabled else "")
    if any(e.status == "denylisted" for e in entries) and not include_denylisted:
        _stop(f"token {mask(token)} is denylisted; add --include-denylisted to release it")
    if entries and all(e.status == "valid" for e in entries):
        console.print(f"token {mask(token)} is already valid: nothing to release{hint}", markup=False,
                      highlight=False)
        return
    _stop(f"token {mask(token)} has no quarantine entry to release{hint}")


# --------------------------------------------------------------------------- denylist


@denylist_app.command("add")
@handled
def denylist_add(profile: str = typer.Argument(..., help="the profile (user) id"),
                 channel: str = typer.Option(..., help="apns | fcm"),
                 reason: Optional[str] = typer.Option(None, help="why (e.g. the user opted out)")) -> None:
    """Stop sending to every device of a profile on one channel; deliveries exclude them as 8 denylisted.

    Example: push-feedback denylist add u-42 --channel apns --reason "opted out in settings"
    """
    from push.registry import denylist_profile

    _one_of(channel, _PLATFORMS, "--channel")
    added = denylist_profile(_engine(), profile, channel, reason=reason)
    console.print(f"profile {profile} {'added to' if added else 'was already on'} the {channel} denylist",
                  markup=False, highlight=False)


@denylist_app.command("remove")
@handled
def denylist_remove(profile: str = typer.Argument(..., help="the profile (user) id"),
                    channel: str = typer.Option(..., help="apns | fcm")) -> None:
    """Take a profile off a channel's denylist.

    Example: push-feedback denylist remove u-42 --channel apns
    """
    from push.registry import remove_from_denylist

    _one_of(channel, _PLATFORMS, "--channel")
    if not remove_from_denylist(_engine(), profile, channel):
        _stop(f"profile {profile} is not on the {channel} denylist")
    console.print(f"profile {profile} removed from the {channel} denylist", markup=False, highlight=False)


@denylist_app.command("list")
@handled
def denylist_list(channel: Optional[str] = typer.Option(None, help="apns | fcm"),
                  profile: Optional[str] = typer.Option(None, help="only this profile"),
                  limit: int = typer.Option(50, min=1, max=100_000),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Denylisted profiles, newest first.

    Example: push-feedback denylist list --channel apns
    """
    from push.registry import denylist_entries

    _one_of(channel, _PLATFORMS, "--channel")
    rows = denylist_entries(_read_engine(), channel=channel, profile_id=profile, limit=limit)
    if as_json:
        _print_json(rows)
        return
    console.print(_table(f"{len(rows)} denylisted profiles", ["profile", "channel", "since", "reason"],
                         [[r["profile_id"], r["channel"], r["created_at"], r["reason"]] for r in rows]))
    _which_database()


# --------------------------------------------------------------------------- deliveries


@delivery_app.command("abandon")
@handled
def delivery_abandon(delivery_id: str = typer.Argument(..., help="delivery id"),
                     reason: str = typer.Option(..., help="why it is abandoned (kept on every closed row)"),
                     by: Optional[str] = typer.Option(None, help="who abandons it (default cli:<your user name>)")
                     ) -> None:
    """Close an unfinished delivery: pending rows become excluded, rows waiting for a retry become failed.

    Nothing is sent; the delivery can no longer be resumed, and the retry job skips it.

    Example: push-feedback delivery abandon send-20261123-101500-a1b2c3 --reason "bad input file"
    """
    from push.clock import SystemClock
    from tables import delivery_input

    engine = _engine()
    with engine.begin() as conn:
        done = delivery_input.abandon(conn, delivery_id, reason=reason, by=by or _operator(),
                                      now=SystemClock().now())
    console.print(f"delivery {delivery_id} abandoned: {_n(done.excluded, 'pending row')} excluded, "
                  f"{_n(done.failed, 'row')} waiting for a retry marked failed", markup=False, highlight=False)


# --------------------------------------------------------------------------- reports


@report_app.command("delivery")
@handled
def report_delivery(delivery_id: str = typer.Argument(..., help="delivery id"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """One delivery's summary: to deliver, excluded, sent, failed, retry pending, quarantined.

    Example: push-feedback report delivery newsletter-2026-11-23 --json
    """
    from push.pipeline import read_report

    engine = _read_engine()
    try:
        rep = read_report(engine, delivery_id)
    except ValidationError as exc:
        _stop(f"{exc.message} in {state_read.url} (`push-feedback report deliveries` lists them)")
    progress = _shard_progress(engine, delivery_id)
    if as_json and progress is not None:
        _print_json({**rep.as_dict(), "shards": progress})
    else:
        _show_report(rep, as_json)
    if not as_json:
        if progress:
            console.print(_table("Shards (sent by workers)", ["shard", "seqs", "waiting", "in flight", "done", "state"],
                                 [[p["shard"], p["seqs"], p["waiting"], p["in_flight"], p["done"], p["state"]]
                                  for p in progress]))
        _which_database()


def _shard_progress(engine: Any, delivery_id: str) -> list[dict[str, Any]] | None:
    """Per shard of a delivery prepared for workers: rows waiting, in flight (claimed, no outcome yet), done."""
    from push.shards import shards
    from tables import delivery as dq
    from tables import shards as sq

    with engine.connect() as conn:
        row = dq.delivery_row(conn, delivery_id)
        if row is None or row.prepared_count is None:
            return None
        counts = {p.shard: p for p in sq.progress(conn, delivery_id, row.shard_size)}
    out = []
    for s in shards(engine, delivery_id):
        p = counts.get(s.index, sq.ShardProgress(s.index, 0, 0, 0))
        state_ = "in flight" if p.in_flight else "pending" if p.waiting else "done"
        out.append({"shard": s.index, "seqs": f"{s.seq_from}-{s.seq_to}", "waiting": p.waiting,
                    "in_flight": p.in_flight, "done": p.done, "state": state_})
    return out


@report_app.command("deliveries")
@handled
def report_deliveries(unfinished: bool = typer.Option(False, "--unfinished", help="only deliveries with work "
                                                      "left (unfinished or retrying)"),
                      limit: int = typer.Option(50, min=1, max=100_000),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Deliveries, newest first, with their counts; unfinished ones are flagged.

    States: done; retrying (the retry job still has rows); unfinished (running, or stopped with rows
    pending: resume it with `send --delivery ID` or close it with `delivery abandon ID`); abandoned.

    Example: push-feedback report deliveries --unfinished
    """
    from tables.reports import list_deliveries

    engine = _read_engine()
    with engine.connect() as conn:
        rows = list_deliveries(conn, limit=limit, unfinished_only=unfinished)
    if as_json:
        _print_json(rows)
        return
    flag = {"unfinished": "UNFINISHED", "retrying": "retrying", "abandoned": "abandoned", "done": "done"}
    console.print(_table(f"{len(rows)} deliveries", ["delivery", "state", "started", "finished", "total", "sent",
                                                     "failed", "excluded", "retry pending", "pending"],
                         [[r["id"], flag[r["state"]], r["created_at"], r["finished_at"], r["total"], r["sent"],
                           r["failed"], r["excluded"], r["retry_pending"], r["pending"]] for r in rows]))
    stuck = [r["id"] for r in rows if r["state"] == "unfinished"]
    if stuck:
        console.print(f"{_n(len(stuck), 'delivery', 'deliveries')} unfinished: resume with "
                      "`push-feedback send FILE --delivery ID`, or close with "
                      "`push-feedback delivery abandon ID --reason TEXT`", markup=False, highlight=False)
    _which_database()


@report_app.command("non-deliverables")
@handled
def report_non_deliverables(since: Optional[str] = typer.Option(None, help="ISO date or date-time"),
                            as_json: bool = typer.Option(False, "--json")) -> None:
    """What was not delivered (failed or excluded notifications) by failure type, reason and app/platform.

    Example: push-feedback report non-deliverables --since 2026-11-01
    """
    from tables.reports import non_deliverables

    when = _when(since, "--since")
    engine = _read_engine()
    with engine.connect() as conn:
        nd = non_deliverables(conn, when)
    if as_json:
        _print_json(nd.as_dict())
        return
    _show_non_deliverables(nd)
    _which_database()


# --------------------------------------------------------------------------- rules

# Outcome-table rows that catch what no specific row matches: a text classified only by one of these
# is what a person should look at; any other row means the built-in table already knows the answer.
_CATCH_ALL = frozenset({"apns:4xx:*", "apns:5xx:*", "apns:other_status", "apns:non_json", "fcm:error_code:*",
                        "fcm:non_json", "oauth:*", "oauth:5xx"})
_TEXT_SHAPE = re.compile(r"^(APNs|FCM|OAuth) (\d{3}) ([A-Za-z_]+)")


def builtin_row(provider: str, text: str) -> str | None:
    """The specific outcome-table row that already classifies this normalized error text, if any."""
    m = _TEXT_SHAPE.match(text)
    if not m:
        return None
    status, word = m.group(2), m.group(3)
    candidates = {"apns": [f"apns:{status}:{word}"], "fcm": [f"fcm:{word}", f"fcm:{status}:no_fcm_error"],
                  "oauth": [f"oauth:{word}"]}.get(provider, [])
    keys = {r.key for r in DEFAULT_TABLE}
    return next((k for k in candidates if k in keys and k not in _CATCH_ALL), None)


@rules_app.command("list")
@handled
def rules_list(provider: Optional[str] = typer.Option(None, help="apns | fcm | oauth"),
               status: Optional[str] = typer.Option(None, help="to_qualify | keep | ignore"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Normalized provider error texts with their occurrences and qualification.

    The "built-in" column names the outcome-table row that already classifies a text; texts without
    one are the ones worth qualifying.

    Example: push-feedback rules list --status to_qualify
    """
    from tables import store

    _one_of(provider, ("apns", "fcm", "oauth"), "--provider")
    _one_of(status, ("to_qualify", "keep", "ignore"), "--status")
    engine = _read_engine()
    with engine.connect() as conn:
        rules = store.load_qualification_rules(conn, provider=provider)
    rows = [r for r in rules.values() if status is None or r.status.value == status]
    rows.sort(key=lambda r: -r.occurrences)
    if as_json:
        _print_json([{"provider": r.provider, "text": r.normalized_text, "first_text": r.first_text,
                      "occurrences": r.occurrences, "status": r.status.value,
                      "failure_type": r.failure_type.value if r.failure_type else None,
                      "failure_reason": int(r.failure_reason) if r.failure_reason is not None else None,
                      "builtin_row": builtin_row(r.provider, r.normalized_text)}
                     for r in rows])
        return
    console.print(_table(f"{len(rows)} qualification rules", ["provider", "text", "occurrences", "status", "type",
                                                               "reason", "built-in"],
                         [[r.provider, r.normalized_text, r.occurrences, r.status.value,
                           r.failure_type.value if r.failure_type else "-",
                           int(r.failure_reason) if r.failure_reason is not None else "-",
                           builtin_row(r.provider, r.normalized_text) or "-"] for r in rows]))
    _which_database()


@rules_app.command("qualify")
@handled
def rules_qualify(text: str = typer.Argument(..., help="the normalized error text, as `rules list` shows it"),
                  provider: str = typer.Option(..., help="apns | fcm | oauth"),
                  failure_type: Optional[str] = typer.Option(None, "--type", help="hard | soft | ignored | undefined"),
                  reason: Optional[int] = typer.Option(None, help="failure reason technical value, e.g. 1"),
                  status: str = typer.Option("keep", help="keep | ignore | to_qualify")) -> None:
    """Set the failure type/reason/status of one normalized error text; it then overrides the built-in table.

    Example: push-feedback rules qualify "APNs 400 DeviceTokenNotForTopic" --provider apns --type hard --reason 1
    """
    from tables.qualify import qualify_rule

    _one_of(provider, ("apns", "fcm", "oauth"), "--provider")
    _one_of(status, ("keep", "ignore", "to_qualify"), "--status")
    _one_of(failure_type, [t.value for t in FailureType], "--type")
    ftype = FailureType(failure_type) if failure_type is not None else None
    freason = None
    if reason is not None:
        try:
            freason = FailureReason(reason)
        except ValueError:
            raise typer.BadParameter(f"unknown failure reason {reason}; one of "
                                     f"{', '.join(f'{int(r)} {r.label}' for r in FailureReason)}",
                                     param_hint="--reason") from None
    engine = _engine()
    with engine.begin() as conn:
        created = qualify_rule(conn, provider=provider, text=text, status=status, failure_type=ftype,
                               failure_reason=freason)
    console.print(f"{'created' if created else 'updated'} rule for {provider}: {text!r} -> status {status}"
                  + (f", type {ftype.value}" if ftype else "") + (f", reason {int(freason)}" if freason is not None else ""),
                  markup=False, highlight=False)
    if created:
        err.print(f"warning: no {provider} answer with this text has been seen yet; check it against "
                  "`push-feedback rules list` (the rule applies only to exactly this normalized text)",
                  markup=False, highlight=False)
    row = builtin_row(provider, text)
    if row:
        console.print(f"note: the built-in row {row} already classifies this text; the rule overrides it",
                      markup=False, highlight=False)


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
    from jobs.runner import preflight

    config = _config()
    engine = _engine(config)
    preflight(engine, config, [name])  # a job that cannot work fails here: one line, exit 2
    result = run_job(name, engine, config, SystemClock())
    data = result.as_dict() if hasattr(result, "as_dict") else vars(result)
    if isinstance(data.get("duration"), float):
        data["duration"] = round(data["duration"], 3)
    if as_json:
        _print_json(data)
    else:
        console.print(_table(f"job {name}", ["", "value"], [[_JOB_LABELS.get(k, k.replace("_", " ")),
                                                             _job_value(k, v)] for k, v in data.items()]))
    if getattr(result, "status", "ok") == "error":  # with --json too: scripts read the exit code
        raise typer.Exit(1)


_JOB_LABELS = {"rows_examined": "rows examined", "rows_changed": "rows changed", "duration": "duration"}


def _job_value(name: str, value: Any) -> str:
    if name == "duration" and isinstance(value, (int, float)):
        return f"{value:.2f} s" if value >= 0.01 else f"{value * 1000:.1f} ms"
    if isinstance(value, str) and name.endswith("_at"):
        return value.split(".")[0].replace("+00:00", "") + " UTC"
    return _fmt(value)


@app.command("scheduler")
@handled
def scheduler(run_now: bool = typer.Option(False, "--run-now", help="run every job once at start")) -> None:
    """Run the opt-out, retry and cleanup jobs on their intervals until SIGTERM/SIGINT; with
    PUSH_METRICS_PORT set, serve /metrics, /healthz and /readyz on it.

    Example: PUSH_OPTOUT_INTERVAL=21600 push-feedback scheduler
    """
    from jobs.scheduler import run_scheduler
    from push import logs

    config = _config()
    _engine(config)  # fail fast on a bad database before scheduling anything
    logs.setup(debug=state.debug, fmt=state.log_format, level=logging.INFO)
    run_scheduler(config, run_immediately=run_now)  # its preflight raises ConfigError: exit 2


@app.command("worker")
@handled
def worker(queue: Optional[str] = typer.Option(None, "--queue", help="queue to consume (default PUSH_QUEUE)"),
           name: Optional[str] = typer.Option(None, "--name", help="Celery node name (default push-PID@host)"),
           loglevel: str = typer.Option("INFO", "--loglevel", help="DEBUG, INFO, WARNING or ERROR")) -> None:
    """Send shards of deliveries prepared by `send --workers celery` until SIGTERM (which drains: the sends in
    flight are recorded, the shard goes back to the queue). One process, one event loop: run one per core.
    With PUSH_METRICS_PORT set, serve /metrics, /healthz and /readyz on it.

    Example: PUSH_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// push-feedback worker
    """
    import os

    from push import logs
    from push.celery_app import make_app, worker_state
    from push.shards import require_shared_ledger

    _one_of(loglevel.upper(), ["DEBUG", "INFO", "WARNING", "ERROR"], "--loglevel")
    config = _config(**({"queue": queue} if queue else {}))
    require_shared_ledger(config.database_url)
    _engine(config).dispose()  # fail fast on a bad database; brings the schema to head
    for platform in ("apns", "fcm"):  # the provider settings it has must be usable
        if getattr(config, "apns_auth" if platform == "apns" else "fcm_credentials_file"):
            getattr(config, f"require_{platform}")()
    celery = make_app(config)
    logs.setup(debug=state.debug, fmt=state.log_format, level=getattr(logging, loglevel.upper()))
    os.environ.update({"PUSH_QUEUE": config.queue, "PUSH_DATABASE_URL": config.database_url})  # the task's settings
    worker_state()  # engine, loop and clients made now: a setting that cannot work stops here, not per task
    health = None
    if config.metrics_port is not None:
        from push.health import HealthServer

        health = HealthServer(config.metrics_host, config.metrics_port, _worker_checks(config))
        err.print(f"serving /metrics, /healthz, /readyz on {health.host}:{health.port}", markup=False,
                  highlight=False)
    try:
        celery.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", config.queue, "--loglevel", loglevel.upper(),
                            "--hostname", name or f"push-{os.getpid()}@%h", "--without-gossip",
                            "--without-mingle"])
    finally:
        if health is not None:
            health.close()


def _worker_checks(config: PushConfig) -> Callable[[], list[Any]]:
    def checks() -> list[Any]:
        import sqlalchemy as sa

        from push.celery_app import worker_state

        try:
            with worker_state().engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return [("database", True, "")]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return [("database", False, f"{type(exc).__name__}: {_first_line(exc)}")]
    return checks


def main() -> None:
    try:
        app()
    except StorageError as exc:  # raised outside a command (e.g. during shutdown)
        err.print(f"error: {exc}")
        sys.exit(1)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        err.print(f"error: database error: {type(exc).__name__}: {_first_line(exc)}", markup=False, highlight=False)
        sys.exit(1)
