"""The local fake APNs + FCM + OAuth server, run as a separate process pinned to one core.

Preferred: nginx from Debian's packages (HTTP/2 over TLS, ``return`` rules per
token prefix, one njs handler for FCM because its token is in the body). It does
not validate JWTs or access tokens. Fallback: ``fixtures.server.FakePushServer``
(pure Python, validates everything, but tops out near the client's own speed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from bench.env import STATIC_ACCESS_TOKEN, BenchEnv
from fixtures.scenarios import APNS_SCENARIOS, FCM_SCENARIOS, apns_token

NGINX_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
NJS_MODULE = "ngx_http_js_module.so"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# APNs dead tokens all start with this prefix (fixtures.scenarios.apns_token("unregistered", i)).
APNS_DEAD_PREFIX = apns_token("unregistered", 0)[:8]
FCM_DEAD_MARK = "scn_unregistered_"


class BenchServer(Protocol):
    description: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def over_limit(self) -> int: ...


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: list[str], core: int) -> list[str]:
    """``cmd`` prefixed with ``taskset -c core`` where taskset exists and there are two cores."""
    return ["taskset", "-c", str(core), *cmd] if have_taskset() else cmd


def process_tree_cpu(pid: int) -> float:
    """utime + stime (seconds) of ``pid`` and its direct children, from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def find_nginx() -> tuple[str, str] | None:
    """(nginx binary, njs module path) if both are installed."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    module = next((f"{d}/{NJS_MODULE}" for d in NGINX_MODULE_DIRS if os.path.exists(f"{d}/{NJS_MODULE}")), None)
    return (binary, module) if binary and module else None


def install_nginx(log: Path) -> bool:
    """Install nginx and its njs module from Debian's packages (root only)."""
    if find_nginx():
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light", "libnginx-mod-http-js"]
    with log.open("ab") as out:
        if subprocess.run(cmd, stdout=out, stderr=out, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], stdout=out, stderr=out, env=env, check=False)
            subprocess.run(cmd, stdout=out, stderr=out, env=env, check=False)
    return find_nginx() is not None


def _js_string(data: bytes) -> str:
    return json.dumps(data.decode())


def nginx_config(env: BenchEnv, module: str, root: Path) -> str:
    """nginx.conf for the fake APNs/FCM/OAuth endpoints on ``env.port``."""
    apns_dead = APNS_SCENARIOS["unregistered"]
    fcm_dead = FCM_SCENARIOS["unregistered"]
    token_json = json.dumps({"access_token": STATIC_ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})
    js = root / "fcm.js"
    js.write_text(
        "var DEAD = " + _js_string(fcm_dead.body) + ";\n"
        "function send(r) {\n"
        "    var body = r.requestText || '';\n"
        f"    if (body.indexOf({json.dumps(FCM_DEAD_MARK)}) !== -1) {{\n"
        "        r.headersOut['Content-Type'] = 'application/json; charset=UTF-8';\n"
        f"        r.return({fcm_dead.status}, DEAD);\n"
        "        return;\n"
        "    }\n"
        "    var project = r.uri.split('/')[3];\n"
        "    r.headersOut['Content-Type'] = 'application/json; charset=UTF-8';\n"
        "    r.return(200, '{\\n  \"name\": \"projects/' + project + '/messages/0:' + r.variables.request_id"
        " + '\"\\n}\\n');\n"
        "}\n"
        "export default {send};\n"
    )
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""\
{user}load_module {module};
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    default_type application/json;
    js_import fcm from {js};
    keepalive_requests 1000000000;
    keepalive_timeout 3600s;
    http2_max_concurrent_streams 1000;
    http2_recv_timeout 3600s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen {env.host}:{env.port} ssl http2 backlog=1024;
        ssl_certificate {env.cert_file};
        ssl_certificate_key {env.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /token {{
            add_header Cache-Control no-store always;
            return 200 '{token_json}';
        }}
        location ^~ /3/device/{APNS_DEAD_PREFIX} {{
            add_header apns-id $http_apns_id always;
            return {apns_dead.status} '{apns_dead.body.decode()}';
        }}
        location ^~ /3/device/ {{
            add_header apns-id $http_apns_id always;
            return 200;
        }}
        location ~ ^/v1/projects/[^/]+/messages:send$ {{
            js_content fcm.send;
        }}
        location / {{
            return 404 '{{"error":"not found"}}';
        }}
    }}
}}
"""


class NginxServer:
    """nginx (one worker) on ``env.port``, pinned to core 0."""

    def __init__(self, env: BenchEnv, binary: str, module: str, core: int = 0) -> None:
        self.env = env
        self.binary = binary
        self.root = Path(env.workdir) / "nginx"
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(nginx_config(env, module, self.root))
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr.strip()
        self.description = (f"nginx ({version.split('/')[-1] if '/' in version else version}, 1 worker, "
                            f"HTTP/2 + TLS, njs for FCM; JWTs/access tokens not validated)")

    def start(self) -> None:
        cmd = pinned([self.binary, "-p", str(self.root), "-c", str(self.conf), "-e", str(self.root / "error.log")],
                     self.core)
        err = (self.root / "stderr.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True)
        _wait_listening(self.env, self.proc, self.root / "error.log")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: master stops its worker
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.proc = None

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def over_limit(self) -> int:
        return 0


class FakeServerProcess:
    """``fixtures.server.FakePushServer`` in its own process (``python -m bench.fake_server``)."""

    def __init__(self, env: BenchEnv, core: int = 0) -> None:
        self.env = env
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None
        self.description = ("fixtures.server.FakePushServer in a subprocess (pure Python: nginx unavailable; "
                            "the server may be the bottleneck)")

    def start(self) -> None:
        root = Path(self.env.workdir)
        cmd = pinned([sys.executable, "-m", "bench.fake_server", self.env.to_json()], self.core)
        err = (root / "fake_server.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True,
                                     cwd=Path(__file__).resolve().parent.parent)
        _wait_listening(self.env, self.proc, root / "fake_server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def over_limit(self) -> int:
        return 0


def _wait_listening(env: BenchEnv, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection((env.host, env.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {env.authority} within {timeout}s")


class LatencyServerProcess:
    """``bench.latency_server`` (jh2, APNs-like stream limits, a fixed delay before each answer)."""

    def __init__(self, env: BenchEnv, delay_ms: int, core: int = 0) -> None:
        self.env = env
        self.delay_ms = delay_ms
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None
        self.count_file = Path(env.workdir) / "over-limit-streams"
        self.description = (f"bench.latency_server ({delay_ms} ms before each answer; HTTP/2 + TLS on jh2, "
                            "1 stream until the first request is accepted, then 1,000)")

    def start(self) -> None:
        root = Path(self.env.workdir)
        cmd = pinned([sys.executable, "-m", "bench.latency_server", self.env.to_json(), str(self.delay_ms / 1000),
                      str(self.count_file)], self.core)
        err = (root / "latency_server.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True,
                                     cwd=Path(__file__).resolve().parent.parent)
        _wait_listening(self.env, self.proc, root / "latency_server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def over_limit(self) -> int:
        """Streams clients opened beyond the announced MAX_CONCURRENT_STREAMS, so far."""
        try:
            return int(self.count_file.read_text() or 0)
        except (OSError, ValueError):
            return 0
