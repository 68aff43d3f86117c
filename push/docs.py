"""Generate ``docs/outcomes.md`` from the outcome tables: ``python -m push.docs [--check]``."""

from __future__ import annotations

import sys
from pathlib import Path

from push.outcome_table import DEFAULT_TABLE, OutcomeTable

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "outcomes.md"

CHOICES = """\
## Choices {#choices}

Where the seeds are silent, coarse or in conflict, this is what the tables do and why.

| # | Topic | Choice |
|---|---|---|
| 1 | Blank type or reason in a seed row | A blank failure type is stored as `undefined`, a blank failure reason as reason 0 `undefined` (e.g. FCM "illegal keywords": soft / 0). |
| 2 | Device quota exceeded | Seed 003's Android V1 bullets say *no retry*; its V2 (FCM v1) table says *retry*. The V2 table wins: soft / refused / retry. |
| 3 | Every Apple reason | The seed has one row "all other errors → soft / refused / no". Each documented reason still gets its own row with those values, so reports tell them apart. This includes 429 and 5xx: the seed says no retry, and we keep it; override the row to retry (e.g. `{"apns:503:ServiceUnavailable": {"retry": true}}`). |
| 4 | `undefined` failure type | Used by the seed's iOS "network connection lost" row. It never moves a quarantine counter. |
| 5 | Scope | `token` rows move quarantine counters; `provider` rows (credentials, throttling, 5xx, network, OAuth) and `message` rows (our own request is malformed: payload too big, bad header) are logged but never touch a device's counter, so a broken key or a payload bug cannot quarantine every device. |
| 6 | FCM INVALID_ARGUMENT | Only proves a dead token with a BadRequest violation on `message.token`, Google's "not a valid FCM registration token" text, or an ApnsError `Unregistered` / `BadDeviceToken` / `ExpiredToken`. Otherwise ignored / undefined / no (seed V2 "Invalid argument"). |
| 7 | FCM answers without FcmError | 401 → soft / refused / no after one OAuth refresh (seed "error authenticating the sender account"); 403 → same row; 404 (wrong project or endpoint) and other 4xx → the seed's "unexpected error code" values; 429 → as quota; 5xx (any body) → "FCM temporarily unavailable" soft / unreachable / retry. |
| 8 | Connection lost and timeouts | May have been delivered. APNs: undefined / unreachable / retry (seed iOS row); FCM: soft / unreachable / retry (seed V2 rows). Requests the server provably did not process (GOAWAY above `last_stream_id`, REFUSED_STREAM) are resent at once by the transport and never reach these rows. |
| 8b | Interrupted sends | A notification found in flight (intent written, no outcome) when a delivery is resumed after a crash may or may not have reached the provider. It is recorded once as `interrupted` (APNs: undefined / unreachable; FCM: soft / unreachable) with **no retry**: at most once beats a duplicate push. At most two launch blocks (2 × `PUSH_CONCURRENCY`) can be in this state per crash. |
| 9 | OAuth errors not in the seed | `invalid_client`, `deleted_client`, `admin_policy_enforced`, `org_internal` take the seed's credential-error values (ignored / refused / no); `internal_failure`, `server_error`, `temporarily_unavailable` and HTTP 5xx/408/429 take the "connection issue" values (ignored / refused / retry). |
| 10 | APNs environment-key reason | Both spellings (`BadEnvironmentKeyIdInToken` from Apple's table, `BadEnvironmentKeyInToken` seen on the wire) have rows. |
| 11 | APNs `BadDeviceToken` | Soft / refused (seed "all other errors"), scope token: it may mean a token of the other environment, so it counts towards quarantine instead of quarantining at once. |
| 12 | Error text | Stored normalized (tokens, ids, long numbers and dates → `#xxx#`, addresses → `*`) so one qualification rule groups all errors of a kind; the first full text is kept on the rule. |
"""


def render(table: OutcomeTable = DEFAULT_TABLE) -> str:
    lines = [
        "# Outcome tables",
        "",
        "Generated from `push/outcome_table.py` by `python -m push.docs`; CI fails if this file is stale.",
        "Every provider answer maps to one row: failure type, failure reason (seed 004 technical value),",
        "retry, scope (who the error is about) and the immediate action. Override rows with",
        "`PUSH_OUTCOME_OVERRIDES` (a JSON file of rule key → fields) or `OutcomeTable.with_overrides`.",
        "",
    ]
    titles = {"apns": "APNs (HTTP/2)", "fcm": "FCM HTTP v1", "oauth": "Google OAuth token endpoint"}
    for provider, title in titles.items():
        lines += [f"## {title}", "", "| Rule | Type | Reason | Retry | Scope | Action | Seed source | Note |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in table:
            if r.provider != provider:
                continue
            ftype = r.failure_type.value if r.failure_type else "— (success)"
            lines.append(
                f"| `{r.key}` | {ftype} | {int(r.failure_reason)} {r.failure_reason.label} | "
                f"{'yes' if r.retry else 'no'} | {r.scope.value} | {r.action.value} | {r.source} | {r.note} |"
            )
        lines.append("")
    lines.append(CHOICES)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not DOC_PATH.exists() or DOC_PATH.read_text() != text:
            print(f"{DOC_PATH} is stale: run `python -m push.docs`", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
