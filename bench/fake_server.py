"""Fallback server: ``fixtures.server.FakePushServer`` in its own process.

    python -m bench.fake_server '<BenchEnv JSON>'

Runs until SIGTERM. Trusts the bench's APNs key and service account, so it
validates every JWT and access token the clients send.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench.env import BenchEnv, test_pki
from fixtures.keys import ApnsKey, ServiceAccount
from fixtures.server import FakePushServer


def main(argv: list[str]) -> int:
    env = BenchEnv.from_json(argv[0])
    key = load_pem_private_key(Path(env.apns_key_file).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    apns_key = ApnsKey(Path(env.apns_key_file), env.apns_key_id, env.apns_team_id, key.public_key())
    info = json.loads(Path(env.service_account_file).read_text())
    sa_key = load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(sa_key, rsa.RSAPrivateKey)
    sa = ServiceAccount(Path(env.service_account_file), info["client_email"], sa_key.public_key(),
                        info["project_id"], info["private_key_id"], info["token_uri"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = FakePushServer(test_pki(env), apns_key=apns_key, service_account=sa, host=env.host, port=env.port)
    with server:
        while not stop.wait(1.0):
            # Forget recorded requests so memory stays flat over a long run.
            server.requests.clear()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
