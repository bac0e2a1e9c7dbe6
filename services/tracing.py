"""OpenTelemetry tracing: off by default; with ``tracing.otlp_endpoint`` set, spans go to an OTLP/HTTP collector.

The composition root calls ``configure()`` once and ``Tracing.shutdown()`` on stop (it flushes the batch).
The active tracer is held here rather than in OTel's global provider: that global can be set only once
per process, so tests (and a restarted Monitor) could not switch tracing on and off again. Spans still
nest through OTel's context, so ``trace.get_current_span()`` and W3C propagation work as usual.

When off, ``span()`` yields the API's invalid span without touching the SDK: zero cost on hot paths.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

__all__ = [
    "SpanKind",
    "Tracing",
    "annotate",
    "configure",
    "current_ids",
    "current_trace_id",
    "enabled",
    "inject",
    "record_error",
    "shutdown",
    "span",
    "start_span",
]

_TRACER_NAME = "risk-monitor"
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_tracer: trace.Tracer | None = None  # None: tracing is off


@dataclass
class Tracing:
    """The configured SDK provider; ``shutdown()`` flushes pending spans and turns tracing off again."""

    provider: TracerProvider

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        global _tracer  # noqa: PLW0603 - the one switch the helpers read
        with _lock:
            _tracer = None
        self.provider.shutdown()  # BatchSpanProcessor exports what is queued before it returns


def configure(
    endpoint: str,
    *,
    service_name: str,
    instance: str = "",
    environment: str = "",
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> Tracing | None:
    """Start exporting spans to ``endpoint`` (an OTLP/HTTP traces URL); ``None`` when the endpoint is empty."""
    global _tracer  # noqa: PLW0603 - see the module docstring
    if not endpoint:
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    attributes: dict[str, AttributeValue] = {"service.name": service_name}
    if instance:
        attributes["service.instance.id"] = instance
    if environment:
        attributes["deployment.environment.name"] = environment
    provider = TracerProvider(
        resource=Resource.create(attributes),
        # Parent-based: an RPC whose caller sampled its trace is kept whole whatever the ratio.
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with _lock:
        _tracer = provider.get_tracer(_TRACER_NAME)
    return Tracing(provider)


def shutdown(handle: Tracing | None) -> None:
    """Flush and stop ``handle`` (from ``configure``); nothing when tracing was off."""
    if handle is not None:
        handle.shutdown()


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent_headers: Mapping[str, str] | None = None,
    **attributes: AttributeValue,
) -> Iterator[Span]:
    """A span around the block, current for its duration. An exception marks it ERROR and propagates.

    ``parent_headers``: an incoming request's headers; its ``traceparent``, if any, becomes the parent.

    Only the exception's type is recorded: messages of transport errors can carry URLs and credentials.
    """
    tracer = _tracer
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    parent = _propagator.extract(parent_headers) if parent_headers else None
    with tracer.start_as_current_span(
        name, parent, kind, attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            record_error(current, exc)
            raise


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent_headers: Mapping[str, str] | None = None,
    **attributes: AttributeValue,
) -> Span:
    """A span that is not made current (for streams: the caller attaches it per step and ends it)."""
    tracer = _tracer
    if tracer is None:
        return trace.INVALID_SPAN
    parent = _propagator.extract(parent_headers) if parent_headers else None
    return tracer.start_span(name, parent, kind, attributes, record_exception=False, set_status_on_exception=False)


def annotate(**attributes: AttributeValue) -> None:
    """Set attributes on the active span (a no-op outside one)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(attributes)


def record_error(current: Span, exc: BaseException | str) -> None:
    """Mark a span failed with the error's type (or a short reason); never the message, see ``span``."""
    reason = exc if isinstance(exc, str) else type(exc).__name__
    current.set_status(Status(StatusCode.ERROR, reason))
    if not isinstance(exc, str):
        current.set_attribute("error.type", reason)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, or None outside a sampled span.

    An unsampled span is never exported, so logs and audit events naming it would point nowhere."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    ids = current_ids()
    return ids[0] if ids else None


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent`` for the active span to outgoing request headers (nothing outside a span).

    Unsampled spans propagate too (flag 00), so the receiver does not start a sampled trace of its own."""
    if trace.get_current_span().get_span_context().is_valid:
        _propagator.inject(headers)
