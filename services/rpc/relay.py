"""With workers (services/workers.py) the tick path lives in its own process: this servicer answers
every RPC as before and relays the three that need the tick path's in-memory state (StreamTicks,
CheckOrder, GetRiskSummary) to that process's loopback gRPC port. Authentication, TLS and tracing stay
here; the hop carries a per-start secret, so nothing else on the host can use the internal port.

The relay passes messages through (about 50 per second at 5k ticks/s in batches of 100), so the tick
path's CPU (re-valuing every account a tick moves) is spent in its own process, not under this
process's GIL, where it would delay the scheduler.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc

from services.rpc.auth import denied
from services.rpc.servicer import RiskMonitorServicer

SECRET_HEADER = "x-risk-monitor-worker"  # noqa: S105 - a header name; its value is per start


class SharedSecretInterceptor(grpc.ServerInterceptor):
    """Refuse every call that does not carry the parent's secret (the internal port is loopback-only)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        presented = next((v for k, v in metadata if k == SECRET_HEADER), "")
        value = presented.encode() if isinstance(presented, str) else presented
        if handler is None or hmac.compare_digest(value, self._secret):
            return handler
        return denied(handler, grpc.StatusCode.PERMISSION_DENIED, "internal port: not the parent process")


@dataclass
class TickPathTarget:
    """Where the tick path listens, and the channel to it (opened on first use, one per target)."""

    port: int
    secret: str
    _channel: grpc.Channel | None = None
    _stub: pb_grpc.RiskMonitorServiceStub | None = None

    def stub(self) -> pb_grpc.RiskMonitorServiceStub:
        if self._stub is None:
            self._channel = grpc.insecure_channel(
                f"127.0.0.1:{self.port}",
                options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
            )
            self._stub = pb_grpc.RiskMonitorServiceStub(self._channel)
        return self._stub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SECRET_HEADER, self.secret),)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


@dataclass
class RelayServicer(RiskMonitorServicer):
    """The servicer with the tick path relayed to ``target()`` (the tick-path worker's current port)."""

    target: Callable[[], TickPathTarget] = field(default=lambda: TickPathTarget(0, ""))

    def _relay_error(self, exc: grpc.RpcError, context: grpc.ServicerContext) -> None:
        # The stub's errors are also grpc.Call (code, details); a bare RpcError is a local failure.
        code = getattr(exc, "code", lambda: grpc.StatusCode.UNAVAILABLE)()
        details = getattr(exc, "details", lambda: str(exc))()
        if code is grpc.StatusCode.CANCELLED and not context.is_active():
            return  # our own client went away
        context.abort(code, details or "tick path unavailable")

    def _relay_unary(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        target = self.target()
        call = getattr(target.stub(), method)
        try:
            return call(request, timeout=context.time_remaining(), metadata=target.metadata)
        except grpc.RpcError as exc:
            self._relay_error(exc, context)
            raise

    def GetRiskSummary(self, request: pb.GetRiskSummaryRequest, context: grpc.ServicerContext) -> pb.RiskSummary:
        return self._relay_unary("GetRiskSummary", request, context)  # type: ignore[no-any-return]

    def CheckOrder(self, request: pb.CheckOrderRequest, context: grpc.ServicerContext) -> pb.CheckOrderResponse:
        return self._relay_unary("CheckOrder", request, context)  # type: ignore[no-any-return]

    def StreamTicks(
        self, request_iterator: Iterator[pb.TickBatch], context: grpc.ServicerContext
    ) -> Iterator[pb.TickBatchResult]:
        target = self.target()
        call = target.stub().StreamTicks(request_iterator, metadata=target.metadata)

        def cancel() -> None:
            call.cancel()  # our client went away: end the internal stream too

        context.add_callback(cancel)
        try:
            yield from call
        except grpc.RpcError as exc:
            self._relay_error(exc, context)
