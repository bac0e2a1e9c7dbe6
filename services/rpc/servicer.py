"""riskmonitor.v1.RiskMonitorService: validate, call a use case, convert, map domain errors to status codes.

No SQL here: reads go through ``services.alert_queries``, writes through the injected use cases.
"""

from __future__ import annotations

import bisect
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services import alert_queries as q
from services import page_tokens
from services.alert_watch import AlertEventPoller, SubscriberOverflow, replay_then_live
from services.errors import InvalidArgumentError, RiskMonitorError
from services.live_risk import LiveRisk, LiveTick
from services.rpc import convert as c
from services.rpc import ticks_convert as tc
from services.rpc.tick_stream import Received, grouped

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RiskMonitorService"].full_name
MAX_TICKS_PER_BATCH = 10_000
MAX_GROUP_TICKS = 20_000  # bounds one evaluation's latency when many batches are waiting

_R = TypeVar("_R")


class Acknowledge(Protocol):
    """The acknowledge use case: True if the alert changed, False if it was already acknowledged.
    Raises NotFoundError for an unknown id and ConflictError for a resolved alert."""

    def __call__(self, alert_id: int, *, actor: str, comment: str, now: datetime) -> bool: ...


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, RiskMonitorError):
        context.abort(grpc.StatusCode[exc.grpc_code], str(exc))
    if isinstance(exc, DBAPIError):
        if "canceling statement due to statement timeout" in str(exc.orig):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while querying the database")
        log.warning("database error in an RPC: %s", type(exc.orig).__name__)
        context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")
    raise exc


def _unary(method: Callable[..., _R]) -> Callable[..., _R]:
    """Domain and database errors become status codes; anything else is a logged INTERNAL (grpc's own)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> _R:
        try:
            return method(self, request, context)
        except (RiskMonitorError, DBAPIError) as exc:
            _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def _streaming(method: Callable[..., Iterator[_R]]) -> Callable[..., Iterator[_R]]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[_R]:
        try:
            yield from method(self, request, context)
        except (RiskMonitorError, DBAPIError) as exc:
            _abort(context, exc)

    return wrapper


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgumentError("page_size must not be negative")
    return min(value or q.DEFAULT_PAGE_SIZE, q.MAX_PAGE_SIZE)


def _enum(value: int, mapping: dict[Any, str], field: str) -> str | None:
    if value == 0:
        return None
    if value not in mapping:
        raise InvalidArgumentError(f"{field} has unknown value {value}")
    return mapping[value]


def _duration(seconds: float) -> Duration:
    out = Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


@dataclass
class RiskMonitorServicer(pb_grpc.RiskMonitorServiceServicer):
    engine: Engine
    poller: AlertEventPoller
    live: LiveRisk | None  # None: the tick path runs in a worker process (services/rpc/relay.py)
    acknowledge: Acknowledge
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def require_live(self) -> LiveRisk:
        if self.live is None:
            raise RuntimeError("no tick path in this process")  # RelayServicer overrides its callers
        return self.live

    @_unary
    def ListAlerts(self, request: pb.ListAlertsRequest, context: grpc.ServicerContext) -> pb.ListAlertsResponse:
        flt = q.AlertFilter(
            account=request.account or None,
            limit_type=request.limit_type or None,
            severity=_enum(request.severity, c.SEVERITY_FROM_PB, "severity"),
            state=_enum(request.state, c.STATE_FROM_PB, "state"),
            opened_after=c.from_ts(request, request.opened_after, "opened_after"),
            opened_before=c.from_ts(request, request.opened_before, "opened_before"),
            symbol=tc.symbol(request.symbol, "symbol") if request.symbol else None,
            newest_first=request.newest_first,
        )
        size = _page_size(request.page_size)
        cursor = page_tokens.decode(request.page_token, flt.digest_parts())
        with q.read_only(self.engine, context.time_remaining()) as conn:
            alerts, following = q.list_alerts(conn, flt, cursor, size)
        token = page_tokens.encode(following, flt.digest_parts()) if following else ""
        return pb.ListAlertsResponse(alerts=[c.alert_to_pb(a) for a in alerts], next_page_token=token)

    @_unary
    def GetAlert(self, request: pb.GetAlertRequest, context: grpc.ServicerContext) -> pb.GetAlertResponse:
        if request.alert_id <= 0:
            raise InvalidArgumentError("alert_id is required (> 0)")
        with q.read_only(self.engine, context.time_remaining()) as conn:
            alert, events = q.get_alert(conn, request.alert_id)
        return pb.GetAlertResponse(alert=c.alert_to_pb(alert), events=[c.event_to_pb(e) for e in events])

    @_unary
    def AcknowledgeAlert(
        self, request: pb.AcknowledgeAlertRequest, context: grpc.ServicerContext
    ) -> pb.AcknowledgeAlertResponse:
        if request.alert_id <= 0:
            raise InvalidArgumentError("alert_id is required (> 0)")
        if not request.actor.strip():
            raise InvalidArgumentError("actor is required")
        if not request.comment.strip():
            raise InvalidArgumentError("comment is required")
        changed = self.acknowledge(request.alert_id, actor=request.actor, comment=request.comment, now=self.clock())
        if changed:
            self.poller.wake()
        with q.read_only(self.engine, context.time_remaining()) as conn:
            alert, _ = q.get_alert(conn, request.alert_id)
        return pb.AcknowledgeAlertResponse(alert=c.alert_to_pb(alert), changed=changed)

    @_unary
    def ListAlertEvents(
        self, request: pb.ListAlertEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAlertEventsResponse:
        if request.alert_id < 0:
            raise InvalidArgumentError("alert_id must not be negative")
        flt = q.EventFilter(
            occurred_after=c.from_ts(request, request.occurred_after, "occurred_after"),
            occurred_before=c.from_ts(request, request.occurred_before, "occurred_before"),
            alert_id=request.alert_id or None,
        )
        size = _page_size(request.page_size)
        cursor = page_tokens.decode(request.page_token, flt.digest_parts())
        with q.read_only(self.engine, context.time_remaining()) as conn:
            events, following = q.list_events(conn, flt, cursor, size)
        token = page_tokens.encode(following, flt.digest_parts()) if following else ""
        return pb.ListAlertEventsResponse(events=[c.event_to_pb(e) for e in events], next_page_token=token)

    @_streaming
    def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAlertsResponse]:
        if request.resume_after_event_id < 0:
            raise InvalidArgumentError("resume_after_event_id must not be negative")
        accounts = list(request.accounts)

        def fetch_after(after: int, limit: int) -> list[q.AlertEventView]:
            with q.read_only(self.engine) as conn:
                return q.events_after(conn, after, limit)

        events = replay_then_live(
            lambda: self.poller.subscribe(accounts),
            request.resume_after_event_id,
            fetch_after,
            accounts=accounts,
            alive=context.is_active,
        )
        try:
            for event, replayed in events:
                yield pb.WatchAlertsResponse(event=c.event_to_pb(event), replayed=replayed)
        except SubscriberOverflow as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; resume with the last event id you processed")

    @_unary
    def GetComplianceStatus(
        self, request: pb.GetComplianceStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetComplianceStatusResponse:
        with q.read_only(self.engine, context.time_remaining()) as conn:
            statuses = q.compliance(conn, request.account or None)
        return pb.GetComplianceStatusResponse(statuses=[c.compliance_to_pb(s) for s in statuses])

    @_unary
    def GetRiskSummary(self, request: pb.GetRiskSummaryRequest, context: grpc.ServicerContext) -> pb.RiskSummary:
        if not request.account:
            raise InvalidArgumentError("account is required")
        return tc.summary_to_pb(self.require_live().summary(request.account))

    @_streaming
    def StreamTicks(
        self, request_iterator: Iterator[pb.TickBatch], context: grpc.ServicerContext
    ) -> Iterator[pb.TickBatchResult]:
        for group in grouped(request_iterator, max_ticks=MAX_GROUP_TICKS):
            if any(len(r.batch.ticks) > MAX_TICKS_PER_BATCH for r in group):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ticks: at most {MAX_TICKS_PER_BATCH} per batch")
            yield from self._tick_group(group)

    def _tick_group(self, group: list[Received]) -> Iterator[pb.TickBatchResult]:
        """Apply every batch of the group in order, evaluate once, answer each batch."""
        now = self.clock()
        flat: list[tuple[int, LiveTick]] = []
        errors: list[list[pb.TickError]] = []
        offsets: list[int] = []
        offset = 0
        for received in group:
            ticks, bad = tc.ticks_from_pb(received.batch.ticks, now)
            flat += [(offset + index, tick) for index, tick in ticks]
            errors.append(bad)
            offsets.append(offset)
            offset += len(received.batch.ticks)
        outcome = self.require_live().apply(flat, now)
        for rejected in outcome.rejected:
            pos = bisect.bisect_right(offsets, rejected.index) - 1
            errors[pos].append(
                pb.TickError(index=rejected.index - offsets[pos], field=rejected.field, reason=rejected.reason)
            )
        last = len(group) - 1
        for pos, received in enumerate(group):
            size = len(received.batch.ticks)
            yield pb.TickBatchResult(
                batch_id=received.batch.batch_id,
                ticks_applied=size - len(errors[pos]),
                changes=[tc.change_to_pb(ch) for ch in outcome.changes] if pos == last else [],
                errors=errors[pos],
                processing_time=_duration(time.perf_counter() - received.at),
                accounts_evaluated=outcome.accounts_evaluated if pos == last else 0,
                evaluated_with_next=pos != last,
            )

    @_unary
    def CheckOrder(self, request: pb.CheckOrderRequest, context: grpc.ServicerContext) -> pb.CheckOrderResponse:
        started = time.perf_counter()
        order = tc.order_from_pb(request)
        result = self.require_live().check_order(order, self.clock())
        return tc.order_check_to_pb(result, _duration(time.perf_counter() - started))
