"""Real ecosystem parts for tests: Alertmanager and Redis as subprocesses on loopback, promtool, and a
recording HTTP receiver. Loaded from tests/conftest.py (``pytest_plugins``).

The binaries come from Debian packages that scripts/test installs (prometheus, prometheus-alertmanager,
redis-server). A missing binary fails the test with the package to install: nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package {package} (scripts/test does)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 20.0, interval_s: float = 0.05) -> None:
    """Poll with a deadline (no fixed sleeps: these machines are shared and slow at times)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --- Alertmanager -------------------------------------------------------------------------------------

_ALERTMANAGER_CONFIG = """
route:
  receiver: blackhole
  group_wait: 1h
receivers:
  - name: blackhole
"""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def alertmanager_url() -> Iterator[str]:
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    with tempfile.TemporaryDirectory(prefix="rm-am-") as tmp:
        config = Path(tmp) / "alertmanager.yml"
        config.write_text(_ALERTMANAGER_CONFIG)
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: process.poll() is not None or _http_ok(url + "/-/ready"), timeout_s=30)
            assert process.poll() is None, "alertmanager exited at start"
            yield url
        finally:
            _stop(process)


def alertmanager_alerts(url: str, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"filter={k}%3D%22{v}%22" for k, v in filters.items())
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as resp:
        data: list[dict[str, Any]] = json.load(resp)
    return data


# --- Redis --------------------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Redis on 127.0.0.1:6379 when it answers (CI machines), else our own redis-server on a free port.

    Tests use database 15 of a shared server and only keys they name uniquely."""
    if _redis_answers(6379):
        yield "redis://127.0.0.1:6379/15"
        return
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rm-redis-") as tmp:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: process.poll() is not None or _redis_answers(port))
            assert process.poll() is None, "redis-server exited at start"
            yield f"redis://127.0.0.1:{port}/15"
        finally:
            _stop(process)


# --- a recording HTTP receiver ------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1:0 that records POSTs and deduplicates by ``Idempotency-Key``.

    ``status`` is what it answers (set 503 to play a receiver that is down); ``requests`` holds every
    request, ``accepted`` the first accepted request per key.
    """

    status: int = 200
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, Received] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                item = Received(self.path, dict(self.headers.items()), body)
                with receiver._lock:
                    receiver.requests.append(item)
                    status = receiver.status
                    key = item.headers.get("Idempotency-Key", "")
                    if 200 <= status < 300 and key not in receiver.accepted:
                        receiver.accepted[key] = item
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received_keys(self) -> list[str]:
        with self._lock:
            return [r.headers.get("Idempotency-Key", "") for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()
