"""The HTTP listener: health, readiness and /metrics (stdlib server; no framework for three routes).

``GET /api/v1/health``  liveness, in the shape the trading ecosystem's services use.
``GET /api/v1/ready``   200 when every readiness check passes, 503 with the reasons otherwise.
``GET /metrics``        Prometheus exposition.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from services import metrics, metrics_merge

log = logging.getLogger(__name__)

# A readiness check returns None when healthy, or a short reason when not.
ReadinessCheck = Callable[[], str | None]


class HttpApi:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        service: str,
        instance: str,
        version: str,
        environment: str,
        readiness: dict[str, ReadinessCheck],
        details: Callable[[], dict[str, object]] | None = None,
        exposition: Callable[[], bytes] | None = None,
    ) -> None:
        self._identity = {
            "service": service,
            "instance": instance,
            "version": version,
            "environment": environment,
        }
        self._readiness = readiness
        self._details = details  # extra fields of the health document (e.g. the jobs this replica leads)
        self._exposition = exposition or metrics_merge.exposition()  # /metrics: with workers, theirs merged in
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- routes -------------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"status": "healthy", **self._identity, "timestamp": datetime.now(UTC).isoformat()}
        if self._details is not None:
            body.update(self._details())
        return HTTPStatus.OK, body

    def ready(self) -> tuple[int, dict[str, Any]]:
        reasons: dict[str, str] = {}
        for name, check in self._readiness.items():
            try:
                problem = check()
            except Exception as exc:  # noqa: BLE001 - a failing check means "not ready", never a 500
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                reasons[name] = problem
        metrics.READY.set(0 if reasons else 1)
        body: dict[str, Any] = {
            "status": "not_ready" if reasons else "ready",
            **self._identity,
            "timestamp": datetime.now(UTC).isoformat(),
            "checks": {name: reasons.get(name, "ok") for name in self._readiness},
        }
        return (HTTPStatus.SERVICE_UNAVAILABLE if reasons else HTTPStatus.OK), body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self
        routes: dict[str, Callable[[], tuple[int, dict[str, Any]]]] = {
            "/api/v1/health": api.health,
            "/api/v1/ready": api.ready,
        }

        class Handler(BaseHTTPRequestHandler):
            server_version = "risk-monitor"
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                started = time.perf_counter()
                path = self.path.split("?", 1)[0]
                route = path if path in routes or path == "/metrics" else "other"
                status: int
                if path == "/metrics":
                    status = HTTPStatus.OK
                    self._send(status, api._exposition(), CONTENT_TYPE_LATEST)
                elif path in routes:
                    status, body = routes[path]()
                    self._send(status, json.dumps(body).encode(), "application/json")
                else:
                    status = HTTPStatus.NOT_FOUND
                    body = {"error": "not_found", "message": f"no route {path}"}
                    self._send(status, json.dumps(body).encode(), "application/json")
                metrics.HTTP_REQUESTS.labels("GET", route, str(int(status))).inc()
                metrics.HTTP_REQUEST_DURATION.labels("GET", route).observe(time.perf_counter() - started)
                if status >= 500 and route != "/api/v1/ready":
                    metrics.HTTP_REQUEST_ERRORS.labels("GET", route).inc()

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

        return Handler
