"""Loopback HTTP servers: one per sandbox venue (REST API with faults) and the control endpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sandbox.documents import BadRequest, CustodianDocuments, ExchangeDocuments, NotFound, Route
from sandbox.faults import FaultBook, corrupt

log = logging.getLogger(__name__)

ControlHandler = Callable[[str, str, dict[str, Any]], Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a venue that goes down comes back on the same port

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        super().__init__(address, handler)
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open (kept-alive) connection, so a venue taken down stops answering at once."""
        with self._open_lock:
            open_now, self._open = list(self._open), set()
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Usually a client that gave up on a slow response (BrokenPipe): expected in fault tests.
        log.debug("sandbox HTTP handler failed for %s", client_address, exc_info=True)


class _JsonHandler(BaseHTTPRequestHandler):
    server_version = "risk-monitor-sandbox/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_body(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, doc: Any) -> None:
        self.send_body(status, json.dumps(doc, default=str).encode())

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(
            status,
            {"error": {"code": HTTPStatus(status).phrase.upper().replace(" ", "_"), "message": message}},
        )


class _VenueHandler(_JsonHandler):
    # Keep-alive, as real venues do (every answer has a Content-Length): a client's pooled connection is
    # reused instead of a TCP connect per request. An idle connection is closed after `timeout` seconds.
    protocol_version = "HTTP/1.1"
    timeout = 30
    # Headers and body go out in two writes: with Nagle on, a kept-alive connection waits for the client's
    # delayed ACK (~40 ms) before the body, per request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        venue = cast(VenueServer, cast(_Server, self.server).owner)
        url = urlsplit(self.path)
        try:
            route = venue.documents.route(url.path, parse_qs(url.query))
        except NotFound:
            self.send_error_json(404, f"no route {url.path}")
            return
        except BadRequest as exc:
            self.send_error_json(400, str(exc))
            return
        venue.faults.started(venue.name)
        try:
            self._answer(venue, route)
        finally:
            venue.faults.finished(venue.name)

    def _answer(self, venue: VenueServer, route: Route) -> None:
        outcome = venue.faults.take(venue.name, route.endpoint)
        if outcome.delay:
            venue.stopping.wait(outcome.delay)
        if outcome.status:
            self.send_error_json(outcome.status, f"injected {outcome.status} on {venue.name}/{route.endpoint}")
            return
        try:
            doc = route.render()
        except NotFound as exc:
            self.send_error_json(404, exc.what)
            return
        if outcome.malformed == "not_json":
            self.send_body(200, b"<html><body>upstream hiccup</body></html>", "text/html")
        elif outcome.malformed:
            self.send_json(200, corrupt(doc, outcome.malformed))
        else:
            self.send_json(200, doc)


class _ControlHandler(_JsonHandler):
    def do_GET(self) -> None:
        self._dispatch("GET", {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            params = json.loads(self.rfile.read(length) or b"{}", parse_float=Decimal)
        except ValueError:
            self.send_error_json(400, "body is not JSON")
            return
        if not isinstance(params, dict):
            self.send_error_json(400, "body must be a JSON object")
            return
        self._dispatch("POST", params)

    def _dispatch(self, method: str, params: dict[str, Any]) -> None:
        path = urlsplit(self.path).path
        if not path.startswith("/control/"):
            self.send_error_json(404, f"no route {path}")
            return
        control = cast(ControlServer, cast(_Server, self.server).owner).control
        try:
            result = control(method, path.removeprefix("/control/"), params)
        except NotFound as exc:
            self.send_error_json(404, exc.what)
        except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
            self.send_error_json(400, str(exc))
        else:
            self.send_json(200, result if result is not None else {"ok": True})


class _Listener:
    """A ThreadingHTTPServer that can be closed (connections refused) and reopened on its port."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        if self._server is not None:
            return
        self._server = _Server((self.host, self.port), self.handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.url}",
            daemon=True,
        )
        self._thread.start()

    def down(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)


class VenueServer(_Listener):
    handler = _VenueHandler

    def __init__(
        self,
        name: str,
        documents: ExchangeDocuments | CustodianDocuments,
        faults: FaultBook,
        stopping: threading.Event,
        *,
        host: str,
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.name, self.documents, self.faults, self.stopping = name, documents, faults, stopping


class ControlServer(_Listener):
    handler = _ControlHandler

    def __init__(self, handler: ControlHandler, *, host: str, port: int = 0) -> None:
        super().__init__(host, port)
        self.control = handler
