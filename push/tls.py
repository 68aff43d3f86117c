"""TLS contexts: verification always on; a private CA is added, never substituted for checks.

The CA is loaded into an ``ssl.SSLContext`` handed straight to our transports,
so ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` (which silently override
``requests``' ``verify``) cannot change what we trust.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from push.errors import ConfigError


def make_ssl_context(ca_file: str | Path | None = None, *, client_cert: str | Path | None = None,
                     client_key: str | Path | None = None, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("PUSH_CA_FILE", f"cannot load CA bundle {ca_file}: {exc}") from None
    if client_cert:
        try:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("PUSH_APNS_CERT_FILE", f"cannot load client certificate {client_cert}: {exc}") from None
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx
