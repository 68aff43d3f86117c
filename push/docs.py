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
| 3 | Every Apple reason; APNs throttling and outages | The seed has one row "all other errors → soft / refused / no". Each documented reason still gets its own row with those values, so reports tell them apart. **Retry:** 429 (`TooManyRequests`, `TooManyProviderTokenUpdates`, any other 429) and 5xx (`InternalServerError`, `ServiceUnavailable`, `Shutdown`, any other 5xx, also with a non-JSON body) keep the seed's soft / refused for the final verdict but are retried with the pipeline's backoff (1 min, doubling; `Retry-After` honoured when present) within the validity period and `PUSH_RETRY_MAX_ATTEMPTS`. Sources: the seed's coarse "no retry" is about rejections, and a short outage must not drop a whole delivery; Apple: 5xx "may be retried", `TooManyRequests` "retry after a delay" (protocols.md §1.8; Apple's "after 15 minutes" is read as advice for the same payload, §6.2, so the ordinary backoff is used); peers retry them: gorush (APNs ≥ 500), firebase-admin (500/503), django-push-notifications' users, the common pattern in protocols.md §4. Override a row to turn it off, e.g. `{"apns:503:ServiceUnavailable": {"retry": false}}`. |
| 4 | `undefined` failure type | Used by the seed's iOS "network connection lost" row. It never moves a quarantine counter. |
| 5 | Scope | `token` rows move quarantine counters; `provider` rows (credentials, throttling, 5xx, network, OAuth) and `message` rows (our own request is malformed: payload too big, bad header) are logged but never touch a device's counter, so a broken key or a payload bug cannot quarantine every device. `PayloadTooLarge` (413) stays `message`: a too-large payload is our fault, not the device's. |
| 6 | FCM INVALID_ARGUMENT | Only proves a dead token with a BadRequest violation on `message.token`, Google's "not a valid FCM registration token" text, or an ApnsError `Unregistered` / `BadDeviceToken` / `ExpiredToken`. Otherwise ignored / undefined / no (seed V2 "Invalid argument"). |
| 7 | FCM answers without FcmError | 401 → soft / refused / no after one OAuth refresh (seed "error authenticating the sender account"), whatever the body; 403 → same row; 404 (wrong project or endpoint) and other 4xx → the seed's "unexpected error code" values; 429 → as quota, whatever the body (empty, HTML or JSON), honouring `Retry-After`; 5xx (any body) → "FCM temporarily unavailable" soft / unreachable / retry. A body that is not JSON on any other status → `fcm:non_json`. |
| 8 | Connection lost and timeouts | May have been delivered. APNs: undefined / unreachable / retry (seed iOS row); FCM: soft / unreachable / retry (seed V2 rows). Requests the server provably did not process (GOAWAY above `last_stream_id`, REFUSED_STREAM) are resent at once by the transport and never reach these rows. |
| 8b | Interrupted sends | A notification found in flight (intent written, no outcome) when a delivery is resumed after a crash may or may not have reached the provider. It is recorded once as `interrupted` (APNs: undefined / unreachable; FCM: soft / unreachable) with **no retry**: at most once beats a duplicate push. At most two launch blocks (2 × `PUSH_CONCURRENCY`) can be in this state per crash. |
| 9 | OAuth errors not in the seed | `invalid_client`, `deleted_client`, `admin_policy_enforced`, `org_internal` take the seed's credential-error values (ignored / refused / no); `internal_failure`, `server_error`, `temporarily_unavailable` and HTTP 5xx/408/429 take the "connection issue" values (ignored / refused / retry). The transient values count whether Google sends them as `error` or as `error_description` (e.g. `invalid_grant` / `internal_failure`), as google-auth's `_can_retry` reads both (protocols.md §3.3). |
| 10 | APNs environment-key reason | Both spellings (`BadEnvironmentKeyIdInToken` from Apple's table, `BadEnvironmentKeyInToken` seen on the wire) have rows. |
| 11 | APNs `BadDeviceToken` | Soft / refused (seed "all other errors"), scope token: it may mean a token of the other environment, so it counts towards quarantine instead of quarantining at once. |
| 12 | Error text | Stored normalized (tokens, ids, long numbers and dates → `#xxx#`, addresses → `*`) so one qualification rule groups all errors of a kind; the first full text is kept on the rule. |
| 13 | APNs reason the table does not know | Falls back on its status, one row per status Apple documents, scoped as Apple's status table puts it (protocols.md §1.6): 403 → `provider` (certificate or provider token), 404 / 405 → `message` (our `:path` / method), 413 → `message` (our payload), 429 → `provider`, retried (throttling), 5xx → `provider`, retried; a 4xx Apple does not document → `provider`. None counts against the device: Apple has added 403 reasons before (`UnrelatedKeyIdInToken`, `BadEnvironmentKeyInToken` whose wire spelling differs from the docs), and under a `token` fallback the next one would quarantine every token of an app within five deliveries. Values stay the seed's "all other errors" (soft / refused). |
| 14 | APNs 400 with an unknown reason | A judgement: `message` (our request), not `token`. The three 400 reasons about the device (`BadDeviceToken`, `DeviceTokenNotForTopic`, `MissingDeviceToken`) have rows of their own; the 400 reasons Apple added since are about request features (the broadcast table, protocols.md §1.7: `MissingChannelId`, `BadChannelId`, `FeatureNotEnabled`, `MissingPushType`…); protocols.md §5 classes "any other 4xx" as a payload/request error; a wrongly quarantined token needs a manual release while a missed one only costs further sends until a documented reason or a 410 arrives. |
| 15 | APNs 410 with an unknown reason | Hard / user unknown, scope `token`, timestamp kept (`apns:410:*`): the seed's "Unregistration" row and Apple's "410: the device token is no longer active for the topic" are about the status, whatever the reason string. |
| 16 | APNs answer whose body is not JSON | An HTML page from a proxy or a cut-off body came back from the provider side: the seed's "APNs message rejection: all other errors" (soft / refused / no, scope `provider`, `apns:non_json`), not the "message creation/analysis – unexpected content format" row, which is about the message we built and keeps reason 0 for our own content errors found before sending (`apns:invalid_content`). A non-JSON 429 or 5xx is throttling / an outage (`apns:429:*`, `apns:5xx:*`, retried, choice 3). A non-JSON 410 is not trusted to be Apple's and does not quarantine. |
| 17 | FCM errorCode the table does not know | Falls back (firebase-admin does the same): the HTTP status's own row first (401: refresh once, 403, 404, 429: quota), then the `google.rpc.Status.status` (`INTERNAL` → seed "Internal", `UNAVAILABLE` → "Unavailable", `RESOURCE_EXHAUSTED` → "Device quota exceeded", `DEADLINE_EXCEEDED` → "temporarily unavailable (timeouts)", all retried), then any other 5xx → seed "Internal" values, retried (`fcm:error_code:5xx`), and only then "unexpected error code" (`fcm:error_code:*`). So a 500 `INTERNAL` with a new errorCode is retried as the seed's Internal row says (firebase-admin, sygnal and gorush retry it), and a 401 with a new errorCode refreshes the OAuth token once and resends, as firebase-admin does; only `THIRD_PARTY_AUTH_ERROR` / `APNS_AUTH_ERROR` (the APNs / web-push credential behind FCM) do not refresh. `UNSPECIFIED_ERROR` keeps its own row. An errorCode that is not an upper-case enum name cannot name another row. |
| 18 | Malformed answers | `classify` never raises on what a server sends: every level of a JSON body (FcmError, ApnsError, BadRequest `fieldViolations` and each violation, APNs `reason` / `timestamp`, OAuth `error` / `error_description`) is type-checked; a detail of the wrong shape proves nothing and is skipped, so a 400 with a malformed BadRequest is still a 400 rejection (`fcm:INVALID_ARGUMENT`), never a "connection lost" resent until the validity ends. |
| 19 | Fallback order | Written as data (`FALLBACKS`, `STATUS_DECIDES` in `push/outcome_table.py`): for each kind of answer the keys tried in order; the first row the table holds wins. Override rows to change values; the order itself is the table's. |
| 20 | Seed 003 "Android V1" (legacy FCM HTTP API) | Google retired the legacy FCM HTTP and XMPP APIs (deprecated 2023-06-20, shut down in 2024; the same announcement removed the `/batch` endpoint, protocols.md §2.10). push-feedback speaks FCM HTTP v1 only. Each V1 bullet is carried by the v1 rows listed in [Seed 003 Android V1 bullets](#android-v1); where V1 and V2 disagree, V2 (seed 003's FCM v1 table) wins. |
"""

#: Seed 003's Android V1 bullets (the legacy FCM HTTP API), each with the FCM v1 rows that now carry it.
LEGACY_V1: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Payload length exceeded: retry performed, soft error, Refused",
     ("fcm:payload_too_large",)),
    ("Connection issue: retry performed, soft error, Refused",
     ("fcm:connection_lost", "fcm:timeout", "oauth:connection")),
    ("Service availability issue: retry performed, soft error, Refused",
     ("fcm:UNAVAILABLE", "fcm:INTERNAL", "fcm:5xx:no_fcm_error", "fcm:status:UNAVAILABLE", "fcm:status:INTERNAL",
      "fcm:error_code:5xx")),
    ("Device quota exceeded: no retry, soft error, Refused",
     ("fcm:QUOTA_EXCEEDED", "fcm:429:no_fcm_error", "fcm:status:RESOURCE_EXHAUSTED")),
    ("Invalid or unregistered token: no retry, hard error, Refused",
     ("fcm:UNREGISTERED", "fcm:INVALID_ARGUMENT:token", "fcm:apns:Unregistered", "fcm:apns:BadDeviceToken",
      "fcm:apns:ExpiredToken")),
    ("Unexpected error: no retry, hard error, Refused",
     ("fcm:error_code:*", "fcm:UNSPECIFIED_ERROR", "fcm:4xx:no_fcm_error", "fcm:404:no_fcm_error", "fcm:non_json")),
    ("Sender account issue: no retry, hard error, Refused",
     ("fcm:401:no_fcm_error", "fcm:403:no_fcm_error", "fcm:SENDER_ID_MISMATCH", "fcm:THIRD_PARTY_AUTH_ERROR",
      "fcm:APNS_AUTH_ERROR")),
)

_V1_WHY = {
    "Payload length exceeded": "checked before sending (never sent, so no retry can help): V2 \"payload too big\"",
    "Connection issue": "V2 \"network connection lost\": soft / unreachable / retry",
    "Service availability issue": "V2 \"Internal\" / \"Unavailable\" / \"temporarily unavailable\"",
    "Device quota exceeded": "V2 says retry and wins (choice 2)",
    "Invalid or unregistered token": "V2 \"Invalid registration / not registered\": hard / user unknown",
    "Unexpected error": "V2 \"unexpected error code\": ignored / refused / no",
    "Sender account issue": "V2 \"error authenticating the sender account\", \"Sender ID mismatch\", "
                            "\"Third party authentication error\"",
}


def _legacy_v1(table: OutcomeTable) -> list[str]:
    lines = [
        "## Seed 003 Android V1 bullets {#android-v1}",
        "",
        "Seed 003's \"For Android V1\" bullets describe the legacy FCM HTTP API, which Google retired (deprecated",
        "2023-06-20, shut down in 2024). push-feedback speaks FCM HTTP v1 only; each bullet is carried by these v1",
        "rows (values as in the FCM table above; where V1 and V2 disagree, V2 wins). The Baidu note has no",
        "counterpart: push-feedback has no Baidu connector.",
        "",
        "| V1 bullet | v1 rows now carrying it | Values there |",
        "|---|---|---|",
    ]
    for bullet, keys in LEGACY_V1:
        rows = ", ".join(f"`{k}`" for k in keys)
        lines.append(f"| {bullet} | {rows} | {_V1_WHY[bullet.split(':')[0]]} |")
    lines.append("")
    return lines



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
    lines += _legacy_v1(table)
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
