"""``/metrics``, ``/healthz`` and ``/readyz`` for the processes push-feedback runs.

A standard-library ``ThreadingHTTPServer`` on a daemon thread, so a probe never
waits behind a job. ``/metrics`` is the Prometheus text format of the library's
registry (``push.metrics.REGISTRY``) plus this process's own ``process_*`` and
``python_*`` series; ``/healthz`` answers 200 while the process serves at all;
``/readyz`` answers 200 when every readiness check passes and 503 otherwise,
one ``name: ok|failing: detail`` line per check.

Kubernetes::

    livenessProbe:  {httpGet: {path: /healthz, port: 9464}, periodSeconds: 10}
    readinessProbe: {httpGet: {path: /readyz,  port: 9464}, periodSeconds: 30, timeoutSeconds: 5}
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.registry import Collector

from push import metrics

log = logging.getLogger("push.health")

Check = tuple[str, bool, str]  # (name, passing, detail)


class _Library(Collector):
    def collect(self) -> Iterable[Any]:
        return metrics.REGISTRY.collect()


def serving_registry() -> CollectorRegistry:
    """The library's metrics and this process's process_/python_ series (kept off ``REGISTRY``
    itself, so bridging it into a host registry that has them already never collides)."""
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    reg.register(_Library())
    return reg


class HealthServer:
    """Serves until ``close()``; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, host: str, port: int, ready: Callable[[], list[Check]],
                 registry: CollectorRegistry | None = None) -> None:
        reg = registry or serving_registry()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(reg), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    try:
                        checks = ready()
                    except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
                        checks = [("readiness", False, f"{type(exc).__name__}: {exc}")]
                    body = "".join(f"{name}: {'ok' if ok else 'failing'}{': ' + detail if detail else ''}\n"
                                   for name, ok, detail in checks)
                    self._send(200 if all(ok for _, ok, _ in checks) else 503, body.encode())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes are not log lines
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="push-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
