"""OpenTelemetry tracing end to end: spans reach a real OTLP/HTTP receiver on 127.0.0.1:0 (no mocks).

Covers job runs, venue HTTP and gRPC calls, served RPCs, notification dispatch (traceparent and the audit
event's trace id) and trace ids in log lines; and that with tracing off nothing is exported.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine

from jobs.schedule import instrumented
from sandbox import RunningSandbox, start
from services import database, tracing
from services.app import Monitor
from services.config import Settings
from services.logs import JsonFormatter, TextFormatter
from services.notifications.channels import AuditChannel, HttpJsonPoster
from services.notifications.dispatcher import Dispatcher
from services.venues.http import ExchangeClient, HttpPolicy, VenueUnavailable
from services.venues.market_data import MarketDataClient, UnknownSymbol
from services.workers import WorkerProcess
from tests.ecosystem_fixtures import Receiver, wait_until
from tests.integration.outbox_rows import add_event, insert_alert
from tests.integration.rpc_harness import serving
from tests.unit import worker_jobs

pytestmark = pytest.mark.integration

FAST = HttpPolicy(connect_timeout=0.5, read_timeout=2.0, retries=0)
TOKEN = "reader-token-0123456789"


@dataclass
class OtlpReceiver:
    """A minimal OTLP/HTTP collector: accepts POST /v1/traces (protobuf) and keeps the decoded spans."""

    spans: list[tuple[dict[str, str], Span]] = field(default_factory=list)  # (resource attributes, span)
    posts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    request = ExportTraceServiceRequest.FromString(body)
                    with receiver._lock:
                        receiver.posts += 1
                        for resource_spans in request.resource_spans:
                            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                            for scope in resource_spans.scope_spans:
                                receiver.spans.extend((resource, s) for s in scope.spans)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [s for _, s in self.spans if s.name == name]

    def one(self, name: str) -> Span:
        found = self.named(name)
        assert len(found) == 1, (name, sorted({s.name for _, s in self.spans}))
        return found[0]


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        value = a.value
        out[a.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced(otlp: OtlpReceiver) -> Iterator[tracing.Tracing]:
    handle = tracing.configure(otlp.start(), service_name="rm-test", instance="i-1", environment="test")
    assert handle is not None
    try:
        yield handle
    finally:
        handle.shutdown()  # also switches tracing off again for the next test
    assert not tracing.enabled()


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=7, step_interval=None) as running:
        yield running


@pytest.fixture
def log_lines() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """JSON and text renderings of every record logged under ``tracing_test``."""
    json_out, text_out = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(json_out), logging.StreamHandler(text_out)]
    handlers[0].setFormatter(JsonFormatter("rm-test", "i-1"))
    handlers[1].setFormatter(TextFormatter())
    logger = logging.getLogger("tracing_test")
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    yield json_out, text_out
    for handler in handlers:
        logger.removeHandler(handler)


def test_jobs_and_venue_calls_are_traced_and_logs_carry_the_trace_id(
    traced: tracing.Tracing, otlp: OtlpReceiver, sandbox: RunningSandbox, log_lines: tuple[io.StringIO, io.StringIO]
) -> None:
    seen: dict[str, str | None] = {}

    def collect() -> None:
        seen["trace_id"] = tracing.current_trace_id()
        logging.getLogger("tracing_test").info("collecting")
        with ExchangeClient(
            sandbox.exchange_urls["exchange-a"], name="exchange-a", api_key="k-secret", policy=FAST
        ) as c:
            c.accounts()
            with pytest.raises(VenueUnavailable):
                c.positions("no-such-account")

    def broken() -> None:
        raise RuntimeError("boom")

    instrumented("collect_test", collect)()
    instrumented("broken_test", broken)()  # never raises into the scheduler, but its span says ERROR
    sandbox.world.set_price("SOL-USDT", "151.25")
    client = MarketDataClient(sandbox.market_data_target, get_price_timeout=2.0)
    try:
        client.get_price("SOL-USDT")
        with pytest.raises(UnknownSymbol):
            client.get_price("DOGE-USDT")
    finally:
        client.stop()
    assert traced.flush()

    job = otlp.one("job collect_test")
    assert job.trace_id.hex() == seen["trace_id"]
    assert attrs(job)["job"] == "collect_test"
    assert job.status.code != Status.STATUS_CODE_ERROR
    accounts = otlp.one("venue accounts")
    assert accounts.parent_span_id == job.span_id
    assert accounts.trace_id == job.trace_id
    assert accounts.kind == Span.SPAN_KIND_CLIENT
    assert attrs(accounts) == {
        "venue": "exchange-a",
        "endpoint": "accounts",
        "http.response.status_code": 200,
        "outcome": "ok",
    }
    positions = otlp.one("venue positions")
    assert attrs(positions)["http.response.status_code"] == 404
    assert attrs(positions)["outcome"] == "client_error"
    assert positions.status.code == Status.STATUS_CODE_ERROR
    # Neither the URL (account ids, maybe credentials) nor the API key reaches a span.
    exported = b"".join(s.SerializeToString() for _, s in otlp.spans)
    assert b"k-secret" not in exported
    assert b"no-such-account" not in exported
    assert b"127.0.0.1" not in exported

    failed = otlp.one("job broken_test")
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert failed.trace_id != job.trace_id
    [found, missing] = otlp.named("venue GetPrice")
    assert (attrs(found)["rpc.grpc.status_code"], attrs(found)["outcome"]) == (0, "ok")
    assert (attrs(missing)["rpc.grpc.status_code"], attrs(missing)["outcome"]) == (5, "client_error")
    assert {r["service.name"] for r, _ in otlp.spans} == {"rm-test"}

    json_out, text_out = log_lines
    [line] = [json.loads(x) for x in json_out.getvalue().splitlines()]
    assert (line["message"], line["job"], line["trace_id"]) == ("collecting", "collect_test", seen["trace_id"])
    assert line["span_id"] == job.span_id.hex()
    assert f"trace_id={seen['trace_id']}" in text_out.getvalue()


def test_served_rpcs_are_traced_with_their_status_and_the_callers_parent(
    traced: tracing.Tracing, otlp: OtlpReceiver, engine: Engine
) -> None:
    parent_trace = uuid.uuid4().hex
    traceparent = f"00-{parent_trace}-{'ab' * 8}-01"
    with serving(engine, settings=Settings(grpc_tokens=f"reader:dash:{TOKEN}")) as api:
        auth = ("authorization", f"Bearer {TOKEN}")
        api.stub.ListAlerts(pb.ListAlertsRequest(), timeout=10, metadata=[auth, ("traceparent", traceparent)])
        with pytest.raises(grpc.RpcError) as refused:
            api.stub.ListAlerts(pb.ListAlertsRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert traced.flush()

    ok, denied = sorted(
        otlp.named("rpc /riskmonitor.v1.RiskMonitorService/ListAlerts"), key=lambda s: s.start_time_unix_nano
    )
    assert ok.kind == Span.SPAN_KIND_SERVER
    assert ok.trace_id.hex() == parent_trace
    assert ok.parent_span_id.hex() == "ab" * 8
    assert attrs(ok) == {
        "rpc.system": "grpc",
        "rpc.service": "riskmonitor.v1.RiskMonitorService",
        "rpc.method": "ListAlerts",
        "rpc.grpc.status_code": 0,
    }
    assert ok.status.code != Status.STATUS_CODE_ERROR
    assert attrs(denied)["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert denied.status.code == Status.STATUS_CODE_ERROR
    assert denied.trace_id.hex() != parent_trace
    exported = b"".join(s.SerializeToString() for _, s in otlp.spans)
    assert TOKEN.encode() not in exported  # metadata other than traceparent never reaches a span


def test_a_streaming_rpc_is_one_span_that_ends_when_the_stream_does(
    traced: tracing.Tracing, otlp: OtlpReceiver, engine: Engine
) -> None:
    name = "rpc /riskmonitor.v1.RiskMonitorService/WatchAlerts"
    with serving(engine) as api:
        stream = api.stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=1.0)
        with pytest.raises(grpc.RpcError) as ended:
            list(stream)
        assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

        def exported() -> bool:
            traced.flush()
            return bool(otlp.named(name))

        wait_until(exported, timeout_s=20)  # the server ends its span when grpc closes the generator
    [span] = otlp.named(name)
    assert span.kind == Span.SPAN_KIND_SERVER
    # The server saw the client's deadline pass (or, on a slow machine, only the closed stream).
    assert attrs(span)["rpc.grpc.status_code"] in {
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        grpc.StatusCode.CANCELLED.value[0],
    }
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert span.end_time_unix_nano > span.start_time_unix_nano


def test_notification_dispatch_sends_traceparent_and_the_audit_event_names_the_trace(
    traced: tracing.Tracing, otlp: OtlpReceiver, engine: Engine, receiver: Receiver
) -> None:
    port = receiver.start()
    name = f"audit-{uuid.uuid4().hex[:8]}"
    alert = insert_alert(engine, limit_type="drawdown", severity="critical")
    add_event(engine, alert, "opened", [name])
    channel = AuditChannel(f"http://127.0.0.1:{port}", HttpJsonPoster(timeout_s=2.0), name=name)
    dispatcher = Dispatcher(database.session_factory(engine), {name: channel}, jitter=lambda: 0.5)
    instrumented("dispatch_test", dispatcher)()
    assert traced.flush()

    [request] = receiver.requests
    span = otlp.one(f"notify {name}")
    trace_id = span.trace_id.hex()
    assert span.trace_id == otlp.one("job dispatch_test").trace_id
    version, header_trace, parent, flags = request.headers["traceparent"].split("-")
    assert (version, header_trace, parent) == ("00", trace_id, span.span_id.hex())
    assert int(flags, 16) & 1  # sampled (the SDK may also set the random-trace-id flag)
    assert request.json()["message"].endswith(f"; trace {trace_id}")
    assert attrs(span)["http.response.status_code"] == 200


def test_an_unsampled_trace_is_not_exported_nor_named_in_logs(
    otlp: OtlpReceiver, log_lines: tuple[io.StringIO, io.StringIO]
) -> None:
    handle = tracing.configure(otlp.start(), service_name="rm-test", sample_ratio=0.0)
    assert handle is not None
    try:
        seen: dict[str, object] = {}

        def job() -> None:
            seen["trace_id"] = tracing.current_trace_id()
            headers: dict[str, str] = {}
            tracing.inject(headers)
            seen["traceparent"] = headers.get("traceparent", "")
            logging.getLogger("tracing_test").info("not sampled")

        instrumented("unsampled_test", job)()
        assert handle.flush()
    finally:
        handle.shutdown()
    assert otlp.spans == []
    assert seen["trace_id"] is None
    assert int(str(seen["traceparent"]).rsplit("-", 1)[1], 16) & 1 == 0  # propagated as "not sampled"
    [line] = [json.loads(x) for x in log_lines[0].getvalue().splitlines()]
    assert "trace_id" not in line


def test_with_tracing_off_nothing_is_exported_and_logs_have_no_trace_id(
    otlp: OtlpReceiver, sandbox: RunningSandbox, log_lines: tuple[io.StringIO, io.StringIO], receiver: Receiver
) -> None:
    assert tracing.configure("", service_name="rm-test") is None  # the default: no endpoint, no tracing
    # Switched on and off again (as Monitor.stop does): from then on nothing reaches the collector.
    handle = tracing.configure(otlp.start(), service_name="rm-test")
    assert handle is not None
    handle.shutdown()
    assert not tracing.enabled()

    def collect() -> None:
        assert tracing.current_trace_id() is None
        logging.getLogger("tracing_test").info("collecting")
        with ExchangeClient(sandbox.exchange_urls["exchange-a"], name="exchange-a", policy=FAST) as c:
            c.accounts()
        HttpJsonPoster(timeout_s=2.0).post(f"http://127.0.0.1:{port}/x", b"{}", {})

    port = receiver.start()
    instrumented("untraced_test", collect)()
    handle.flush()

    assert otlp.posts == 0
    assert otlp.spans == []
    [line] = [json.loads(x) for x in log_lines[0].getvalue().splitlines()]
    assert line["job"] == "untraced_test"
    assert "trace_id" not in line
    assert "span_id" not in line
    assert "trace_id" not in log_lines[1].getvalue()
    [request] = receiver.requests
    assert "traceparent" not in {k.lower() for k in request.headers}


def test_the_monitor_traces_when_configured_and_flushes_on_stop(database_url: str, otlp: OtlpReceiver) -> None:
    settings = Settings(
        database_url=database_url,
        http_port=0,
        grpc_port=0,
        service_instance="i-9",
        tracing_otlp_endpoint=otlp.start(),
        tracing_service_name="rm-monitor-test",
    )
    monitor = Monitor(settings)
    monitor.start()
    try:
        assert tracing.enabled()
        with grpc.insecure_channel(f"127.0.0.1:{monitor.grpc_port}") as channel:
            pb_grpc.RiskMonitorServiceStub(channel).ListAlerts(pb.ListAlertsRequest(), timeout=10)
    finally:
        monitor.stop()
    assert not tracing.enabled()
    # No flush here: stop() must have exported what was still queued in the batch processor.
    rpc = otlp.one("rpc /riskmonitor.v1.RiskMonitorService/ListAlerts")
    resource = next(r for r, s in otlp.spans if s is rpc)
    assert (resource["service.name"], resource["service.instance.id"]) == ("rm-monitor-test", "i-9")


def test_a_run_in_a_worker_process_joins_the_callers_trace(traced: tracing.Tracing, otlp: OtlpReceiver) -> None:
    settings = Settings(log_level="WARNING", service_instance="i-1", tracing_otlp_endpoint=otlp.url)
    worker = WorkerProcess("traced", worker_jobs.echo, settings, ("hi",), call_timeout_s=20)
    try:
        with tracing.span("job collect.positions.x"):
            assert worker.call("say", "ann").startswith("hi ann")
    finally:
        worker.stop(timeout_s=10)  # the child flushes its spans as it exits
    traced.flush()
    job = otlp.one("job collect.positions.x")
    run = otlp.one("worker traced say")
    assert run.trace_id == job.trace_id
    assert run.parent_span_id == job.span_id
    assert run.kind == Span.SpanKind.SPAN_KIND_SERVER
    resource = next(r for r, s in otlp.spans if s is run)
    assert resource["service.instance.id"].endswith(":traced")  # exported by the child, as the worker
