"""Secrets stay out of logs and tables, device tokens are masked, TLS is always verified,
and SQL values travel as bound parameters."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from datetime import datetime, timezone
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from fixtures.scenarios import apns_token, fcm_token, ok_apns_token, ok_fcm_token
from push.apns import ApnsClient
from push.fcm import FcmClient
from push.tls import make_ssl_context
from push.transport import H2Transport
from tables import store
from tables.models import Quarantine, QuarantineReleaseLog
from tests.faults.helpers import (
    apns_n,
    assert_ledger,
    fault,
    fcm_n,
    log_rows,
    make_config,
    run_batch,
    text_columns_containing,
)

LOGGERS = ("", "push", "httpx", "httpcore", "google", "google.auth", "hpack", "h2", "tables", "jobs", "asyncio")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The fake server runs in this process (thread "fake-push-…") and its h2/hpack log what *it*
        # decodes; only what the library under test logs counts.
        if not record.threadName.startswith("fake-push-"):
            self.records.append(record)

    def texts(self) -> list[str]:
        """Each record as everything a handler could write: message, extras, traceback."""
        fmt = logging.Formatter()
        standard = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
        out = []
        for r in self.records:
            text = r.getMessage()
            if r.exc_info:
                text += "\n" + fmt.formatException(r.exc_info)
            extras = {k: v for k, v in vars(r).items() if k not in standard}
            out.append(f"{r.name}: {text} {extras!r}")
        return out


@pytest.fixture(params=["all-debug", "httpx-quiet"])
def all_logs(request):
    """DEBUG on every logger that could see a request, a handler on each (google turns propagation off).

    ``httpx-quiet`` leaves httpx at WARNING: the clients then take their direct path into the
    transport (no httpx request object), which must be just as quiet about secrets.
    """
    handler = Collect()
    saved = []
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        quiet = request.param == "httpx-quiet" and name == "httpx"
        lg.setLevel(logging.WARNING if quiet else logging.DEBUG)
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg, level in saved:
            lg.setLevel(level)
            lg.removeHandler(handler)


def pem_lines(pem: str) -> list[str]:
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]


def secrets_of_run(fake_server, apns_key, service_account) -> dict[str, str]:
    """What must never leak, taken from what the server actually received."""
    found: dict[str, str] = {}
    for r in fake_server.requests:
        if r.provider == "apns" and r.bearer:
            found["APNs provider JWT"] = r.bearer
            found["APNs JWT signature"] = r.bearer.rsplit(".", 1)[1]
        elif r.provider == "fcm" and r.bearer:
            found["OAuth access token"] = r.bearer
        elif r.provider == "oauth" and r.body:
            assertion = parse_qs(r.body.decode())["assertion"][0]
            found["OAuth JWT assertion"] = assertion
            found["OAuth assertion signature"] = assertion.rsplit(".", 1)[1]
    for i, line in enumerate(pem_lines(apns_key.path.read_text())):
        found[f"APNs .p8 key line {i}"] = line
    for i, line in enumerate(pem_lines(service_account.info["private_key"])):
        found[f"service-account key line {i}"] = line
    found["service-account private_key_id"] = service_account.private_key_id
    return found


def test_no_secret_in_logs_or_tables_and_tokens_masked(db, fake_server, apns_key, service_account, all_logs):
    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, stream_timeout=0.5)
    notifs = ([apns_n(ok_apns_token(i)) for i in range(20)] + [fcm_n(ok_fcm_token(i)) for i in range(20)]
              + [apns_n(apns_token(name, 1)) for name in ("unregistered", "bad_device_token",
                                                         "expired_provider_token", "invalid_provider_token",
                                                         "rst_cancel", "no_response", "goaway")]
              + [fcm_n(fcm_token(name, 1)) for name in ("unregistered", "invalid_token", "unavailable",
                                                       "unauthenticated_no_fcm_error", "drop", "no_response")])
    run_batch(notifs, cfg, "sec-1")
    assert_ledger(engine, "sec-1", len(notifs), fake_server.accepted)
    secrets = secrets_of_run(fake_server, apns_key, service_account)
    for needed in ("APNs provider JWT", "OAuth access token", "OAuth JWT assertion"):
        assert needed in secrets, f"the run did not exercise the {needed}"
    logs = all_logs.texts()
    assert len(logs) > 50, "DEBUG logging was on: the libraries did log"
    leaks = {name for name, s in secrets.items() for text in logs if s in text}
    where = sorted({text.split(":", 1)[0] for s in secrets.values() for text in logs if s in text})
    assert not leaks, f"secrets in log lines: {sorted(leaks)} (loggers: {where})"
    assert not text_columns_containing(engine, secrets)

    # Device tokens: never in full in a log line (masked by default).
    tokens = [n.token for n in notifs]
    full = sorted({text[:160] for t in tokens for text in logs if t in text})
    assert not full, f"full device tokens in log lines: {full[:3]}"


def test_json_and_text_log_output_parse_and_hold_no_secret(db, fake_server, apns_key, service_account, all_logs):
    """What push.logs' formatters would write for every record of a run (PUSH_LOG_FORMAT=json, and text),
    debug on so tracebacks are included: each JSON line parses; no secret and no full token in either."""
    from push.logs import JsonFormatter, TextFormatter

    engine, url = db
    cfg = make_config(fake_server, apns_key, service_account, url, stream_timeout=0.5)
    notifs = ([apns_n(ok_apns_token(i)) for i in range(10)] + [fcm_n(ok_fcm_token(i)) for i in range(10)]
              + [apns_n(apns_token(name, 2)) for name in ("unregistered", "expired_provider_token", "rst_cancel",
                                                         "goaway")]
              + [fcm_n(fcm_token(name, 2)) for name in ("unregistered", "unauthenticated_no_fcm_error", "drop")])
    run_batch(notifs, cfg, "sec-json")
    secrets = secrets_of_run(fake_server, apns_key, service_account)
    assert "APNs provider JWT" in secrets and "OAuth access token" in secrets
    json_lines = [JsonFormatter(debug=True).format(r) for r in all_logs.records]
    text_lines = [TextFormatter(debug=True).format(r) for r in all_logs.records]
    assert len(json_lines) > 50
    for line in json_lines:
        assert "\n" not in line
        assert {"time", "level", "logger", "event"} <= set(json.loads(line))
    for name, lines in (("json", json_lines), ("text", text_lines)):
        leaks = {label for label, secret in secrets.items() for line in lines if secret in line}
        assert not leaks, f"secrets in {name} log output: {sorted(leaks)}"
        full = sorted({line[:160] for n in notifs for line in lines if n.token in line})
        assert not full, f"full device tokens in {name} log output: {full[:3]}"


def test_oauth_and_jwt_failures_log_no_secret(fake_server, apns_key, service_account, all_logs):
    fake_server.oauth_mode = "invalid_grant"
    cfg = make_config(fake_server, apns_key, service_account)

    async def main():
        f = FcmClient(cfg)
        try:
            return await f.send(fcm_n(ok_fcm_token(1)))
        finally:
            await f.aclose()
    out = asyncio.run(main())
    assert out.rule == "oauth:invalid_grant"
    secrets = secrets_of_run(fake_server, apns_key, service_account)
    assert "OAuth JWT assertion" in secrets
    logs = all_logs.texts()
    assert any("OAuth token refresh failed" in t for t in logs)
    assert not {name for name, s in secrets.items() for text in logs if s in text}


# --------------------------------------------------------------------------- TLS


def test_transport_refuses_a_context_without_verification():
    off = ssl.create_default_context()
    off.check_hostname = False
    off.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verif"):
        H2Transport(ssl_context=off)
    no_hostname = ssl.create_default_context()
    no_hostname.check_hostname = False
    with pytest.raises(ValueError, match="host name"):
        H2Transport(ssl_context=no_hostname)
    optional = ssl.create_default_context()
    optional.check_hostname = False
    optional.verify_mode = ssl.CERT_OPTIONAL
    with pytest.raises(ValueError):
        H2Transport(ssl_context=optional)
    unverified = ssl._create_unverified_context()
    with pytest.raises(ValueError):
        H2Transport(ssl_context=unverified)
    ctx = make_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    H2Transport(ssl_context=ctx)  # the library's own context is accepted


def test_untrusted_server_certificate_gives_connection_lost_never_success(db, fake_server, apns_key,
                                                                          service_account, tmp_path):
    engine, url = db
    # A CA bundle that does not include the fake server's CA: the system store plus an unrelated CA.
    import trustme
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    cfg = make_config(fake_server, apns_key, service_account, url, ca_file=str(other), stream_timeout=1.0)
    notifs = [apns_n(ok_apns_token(i)) for i in range(10)] + [fcm_n(ok_fcm_token(i)) for i in range(10)]
    rep = run_batch(notifs, cfg, "tls-1")
    fault("untrusted server certificate", 2)
    assert rep.sent == 0
    assert_ledger(engine, "tls-1", 20, fake_server.accepted)
    assert not [r for r in fake_server.requests if r.provider in ("apns", "fcm", "oauth")], \
        "no request may reach a server whose certificate failed verification"
    for r in log_rows(engine, "tls-1"):
        assert r.status == "retry_pending" and "certificate" in r.error_text.lower(), r.error_text
        if r.platform == "apns":
            assert "APNs connection lost: not sent" in r.error_text, r.error_text
        else:  # FCM needs an OAuth token first: the token endpoint is the same untrusted server
            assert r.error_text.startswith("OAuth connection lost"), r.error_text


def test_certificate_for_another_host_name_is_refused(fake_server, apns_key, service_account, pki):
    """A certificate from a trusted CA but for another name: the client refuses it (check_hostname on)."""
    leaf = pki.ca.issue_cert("push.example.org")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2"])
    handshakes: list[bool] = []

    async def handle(reader, writer):
        handshakes.append(True)
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        cfg = make_config(fake_server, apns_key, service_account, apns_base_url=f"https://127.0.0.1:{port}",
                          stream_timeout=1.0)
        c = ApnsClient(cfg)
        try:
            return await c.send(apns_n(ok_apns_token(1)))
        finally:
            await c.aclose()
            server.close()
            await server.wait_closed()

    out = asyncio.run(main())
    fault("certificate for another host name")
    assert out.rule == "apns:connection_lost" and "not sent" in out.error_text, out.error_text
    assert "certificate" in out.raw_error_text.lower() or "hostname" in out.raw_error_text.lower(), out.raw_error_text
    assert not out.ok and not handshakes, "the TLS handshake must fail before any request is handled"


# --------------------------------------------------------------------------- SQL parameters


@pytest.mark.parametrize("hostile", ["x' OR '1'='1", "%", "_", "' ; DELETE FROM quarantine; --", "\\", "%%' --"])
def test_release_filters_match_literally(engine, hostile):
    t = Quarantine.__table__
    now = datetime.now(timezone.utc)
    rows = [
        {"platform": "apns", "app": "a", "token": "tok-plain", "status": "quarantine", "error_count": 1,
         "error_text": "APNs 410 Unregistered", "updated_at": now},
        {"platform": "apns", "app": "a", "token": "tok-percent", "status": "quarantine", "error_count": 1,
         "error_text": "quota 100% used_up", "updated_at": now},
        {"platform": "fcm", "app": "x' OR '1'='1", "token": "x' OR '1'='1", "status": "quarantine",
         "error_count": 1, "error_text": "it's x' OR '1'='1 here", "updated_at": now},
    ]
    with engine.begin() as c:
        c.execute(sa.insert(t), rows)

    def matches(**kw):
        with engine.begin() as c:
            return store.release_quarantine(c, released_by="test", dry_run=True, **kw)

    def literal_count(field, value, substring=False):
        return sum((value.lower() in (r[field] or "").lower()) if substring else (r[field] == value) for r in rows)

    assert matches(token=hostile) == literal_count("token", hostile)
    assert matches(app=hostile) == literal_count("app", hostile)
    assert matches(error_text_contains=hostile) == literal_count("error_text", hostile, substring=True)
    with engine.begin() as c:
        released = store.release_quarantine(c, released_by=hostile, error_text_contains=hostile)
    assert released == literal_count("error_text", hostile, substring=True)
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == 3  # nothing deleted
        logged = c.execute(sa.select(QuarantineReleaseLog.__table__.c.released_by)).scalars().all()
    assert all(s.startswith(hostile) for s in logged)
