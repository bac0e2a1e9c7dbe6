"""A server interceptor that records a span ``rpc <method>`` per served RPC, with its gRPC status code.

It sits first in the chain, so calls refused by authentication are traced too. A caller's ``traceparent``
metadata makes the span its child. With tracing off it returns the handler untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry import trace

from services import tracing

if TYPE_CHECKING:  # generic in the stubs only
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class TracingInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or not tracing.enabled():
            return handler
        method: str = handler_call_details.method
        # Only traceparent/tracestate are read: other metadata (authorization) never reaches a span.
        headers = {
            k: v
            for k, v in (handler_call_details.invocation_metadata or ())
            if k in ("traceparent", "tracestate") and isinstance(v, str)
        }
        return _traced(handler, method, headers)


def _traced(handler: Handler, method: str, headers: dict[str, str]) -> Handler:
    """A handler of the same shape whose behaviour runs inside the span (this runs on the worker thread)."""
    service, _, name = method.lstrip("/").rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def start() -> trace.Span:
        return tracing.start_span(f"rpc {method}", kind=tracing.SpanKind.SERVER, parent_headers=headers, **attributes)

    def finish(span: trace.Span, context: grpc.ServicerContext, error: BaseException | None) -> None:
        code = _status(context, error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            tracing.record_error(span, code.name)
        span.end()

    def unary_response(behaviour: Callable[[Any, grpc.ServicerContext], Any] | None) -> Any:
        assert behaviour is not None  # the handler's shape says which behaviour is set

        def run(request: Any, context: grpc.ServicerContext) -> Any:
            span = start()
            error: BaseException | None = None
            try:
                with trace.use_span(span, end_on_exit=False):
                    return behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(span, context, error)

        return run

    def stream_response(behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]] | None) -> Any:
        assert behaviour is not None

        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            span = start()
            error: BaseException | None = None
            try:
                # The span is made current per step only: grpc may close the generator from elsewhere.
                with trace.use_span(span, end_on_exit=False):
                    responses = iter(behaviour(request, context))
                while True:
                    with trace.use_span(span, end_on_exit=False):
                        item = next(responses, _END)
                    if item is _END:
                        return
                    yield item
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(span, context, error)

        return run

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kw)
    return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kw)


_END = object()


def _status(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the call ended with, as far as the server can tell."""
    # code() is set by abort()/set_code(); grpcio has it since 1.38, the type stubs do not.
    read_code = getattr(context, "code", None)
    code: grpc.StatusCode | None = read_code() if read_code is not None else None
    if code is not None:
        return code
    if error is not None and not isinstance(error, GeneratorExit):
        return grpc.StatusCode.UNKNOWN  # grpc turns an unexpected exception into UNKNOWN
    if error is not None or not context.is_active():
        # The client went away (or its deadline passed) and the stream was closed or gave up.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK
