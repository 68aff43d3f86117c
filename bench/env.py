"""Throwaway credentials and the settings every benchmark subprocess shares."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fixtures.tls import TestPKI

APNS_TOPIC = "com.example.bench"
FCM_APP = "android-bench"
PROJECT_ID = "bench-project"
STATIC_ACCESS_TOKEN = "ya29.bench-static-access-token"


@dataclass(frozen=True)
class BenchEnv:
    """Paths and addresses handed to every worker as JSON."""

    workdir: str
    host: str
    port: int
    ca_file: str
    cert_file: str  # server certificate chain (PEM), for nginx
    key_file: str  # server private key (PEM), for nginx
    apns_key_file: str
    apns_key_id: str
    apns_team_id: str
    service_account_file: str
    project_id: str
    server: str = "nginx"  # "nginx" | "fake" (fixtures.server.FakePushServer)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchEnv:
        return cls(**json.loads(text))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_env(workdir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> BenchEnv:
    """A CA, a server certificate for 127.0.0.1, an APNs .p8 key and a service account."""
    import trustme

    from fixtures.keys import make_apns_key, make_service_account

    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    ca = trustme.CA(organization_name="push-feedback bench CA")
    leaf = ca.issue_cert(host, "localhost")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "server-chain.pem", workdir / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key_file))
    key = make_apns_key(workdir)
    sa = make_service_account(workdir, token_uri=f"https://{host}:{port}/token", project_id=PROJECT_ID)
    return BenchEnv(str(workdir), host, port, str(ca_file), str(cert_file), str(key_file), str(key.path),
                    key.key_id, key.team_id, str(sa.path), PROJECT_ID)


def test_pki(env: BenchEnv) -> TestPKI:
    """A ``TestPKI`` for ``FakePushServer`` from the files ``make_env`` wrote.

    trustme cannot reload a CA, so the fake server gets a fresh CA whose server
    certificate is replaced by ours; only ``server_ssl_context`` is used.
    """
    import trustme

    from fixtures.tls import TestPKI

    pki = TestPKI(trustme.CA(), Path(env.workdir), Path(env.ca_file), _FileLeaf(env))  # type: ignore[arg-type]
    return pki


class _FileLeaf:
    """Duck-types ``trustme.LeafCert.configure_cert`` from PEM files."""

    def __init__(self, env: BenchEnv) -> None:
        self._env = env

    def configure_cert(self, ctx: object) -> None:
        ctx.load_cert_chain(self._env.cert_file, self._env.key_file)  # type: ignore[attr-defined]
