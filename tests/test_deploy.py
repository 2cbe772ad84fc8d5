"""deploy/: the nginx site parses with Debian's nginx, and health_sync marks replicas
that are dead or draining `down` (the scale-out test runs both for real)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _health_sync() -> Any:
    spec = importlib.util.spec_from_file_location(
        "health_sync", DEPLOY / "nginx" / "health_sync.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["health_sync"] = module
    spec.loader.exec_module(module)
    return module


def _replica(status: int) -> HTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status":"ok"}' if status == 200 else b'{"status":"draining"}'
            self.send_response(status if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    up, draining = _replica(200), _replica(503)
    with socket.socket() as s:  # a port nothing listens on: a dead replica
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    yield [f"127.0.0.1:{up.server_port}", f"127.0.0.1:{draining.server_port}", f"127.0.0.1:{dead}"]
    up.shutdown()
    draining.shutdown()


def test_health_sync_marks_dead_and_draining_replicas_down(
    replicas: list[str], tmp_path: Path
) -> None:
    sync = _health_sync()
    path = tmp_path / "upstreams.conf"
    reloads = tmp_path / "reloads"
    reload = ["sh", "-c", f"echo reload >> {reloads}"]
    assert sync.sync_once(replicas, path, reload, 1.0) is True
    lines = path.read_text().splitlines()[1:]
    assert lines == [
        f"server {replicas[0]} max_fails=1 fail_timeout=5s;",
        f"server {replicas[1]} max_fails=1 fail_timeout=5s down;",
        f"server {replicas[2]} max_fails=1 fail_timeout=5s down;",
    ]
    # Nothing changed: the file stays and nginx is not reloaded again.
    assert sync.sync_once(replicas, path, reload, 1.0) is False
    assert reloads.read_text().splitlines() == ["reload"]


def test_the_nginx_site_parses(replicas: list[str], tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    upstreams = tmp_path / "upstreams.conf"
    _health_sync().sync_once(replicas, upstreams, [], 1.0)
    site = (DEPLOY / "nginx" / "speech-to-speech.conf").read_text()
    site = site.replace("/etc/nginx/speech-to-speech-upstreams.conf", str(upstreams))
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ include {tmp_path}/site.conf; }}\n"
    )
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
