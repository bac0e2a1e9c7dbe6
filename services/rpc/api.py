"""The riskmonitor.v1 API as one unit for the composition root: servicer, live feed, tick writer, auth, TLS.

``services/app.py`` builds it with the real use cases, hands ``registration``/``interceptors``/
``credentials`` to ``build_server``, and calls ``start()``/``stop()`` around the server's lifetime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine

from models.risk import Limit, RiskBook
from services import alert_queries
from services.alert_feed import AlertFeed
from services.alert_store import acknowledge as store_acknowledge
from services.alert_watch import AlertEventPoller
from services.config import Settings
from services.errors import ConfigError
from services.live_risk import LiveRisk
from services.rpc.auth import TokenAuthInterceptor, load_tokens
from services.rpc.relay import RelayServicer, TickPathTarget
from services.rpc.server import ServiceRegistration, tls_credentials
from services.rpc.servicer import SERVICE_NAME, Acknowledge, RiskMonitorServicer
from services.rpc.trace_interceptor import TracingInterceptor
from services.tick_alerts import Persist, TickAlertWriter

OPERATOR_METHODS = ("AcknowledgeAlert", "StreamTicks")  # they change state; everything else reads


@dataclass
class RiskApi:
    servicer: RiskMonitorServicer
    poller: AlertEventPoller
    writer: TickAlertWriter
    interceptors: Sequence[grpc.ServerInterceptor] = ()
    credentials: grpc.ServerCredentials | None = None
    feed: AlertFeed | None = None  # in-process writers' feed: wakes the poller right after their commits
    _started: bool = field(default=False)
    _bridge: threading.Thread | None = None

    @property
    def registration(self) -> ServiceRegistration:
        return (lambda server: pb_grpc.add_RiskMonitorServiceServicer_to_server(self.servicer, server), SERVICE_NAME)

    def start(self) -> None:
        self.poller.start()
        self.writer.start()
        if self.feed is not None:
            self._bridge = threading.Thread(target=self._wake_on_feed, args=(self.feed,), name="alert-feed-wake")
            self._bridge.daemon = True
            self._bridge.start()
        self._started = True

    def _wake_on_feed(self, feed: AlertFeed) -> None:
        """The feed says "committed"; the poller reads the log itself, so overflow here loses nothing."""
        sub = feed.subscribe()
        while not self.poller.stopped:
            if sub.get(timeout=1.0) is not None:
                self.poller.wake()
        sub.close()

    def close_streams(self) -> None:
        """Before the gRPC server stops: end open WatchAlerts streams (status OK) and stop polling."""
        if self._started:
            self.poller.stop()

    def flush(self) -> None:
        """After the gRPC server stopped (no more ticks): persist every queued tick alert change."""
        if self._started:
            self.writer.stop()


def build_api(
    settings: Settings,
    engine: Engine,
    *,
    book: RiskBook | None,
    limits: Sequence[Limit] | Callable[[], Sequence[Limit]],
    acknowledge: Acknowledge,
    persist: Persist,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    feed: AlertFeed | None = None,
    relay: Callable[[], TickPathTarget] | None = None,
) -> RiskApi:
    """The API; with ``relay``, the tick path (``book``, ``limits``) lives in a worker process it relays to."""
    s = settings
    with alert_queries.read_only(engine) as conn:
        start_after = alert_queries.last_event_id(conn)

    def fetch_after(after: int, limit: int) -> list[alert_queries.AlertEventView]:
        with alert_queries.read_only(engine) as conn:
            return alert_queries.events_after(conn, after, limit)

    poller = AlertEventPoller(
        fetch_after,
        start_after=start_after,
        interval_s=s.grpc_watch_poll_interval_s,
        queue_size=s.grpc_watch_queue_size,
    )
    writer = TickAlertWriter(persist, warn_depth=s.grpc_tick_queue_size, on_persisted=poller.wake)
    servicer: RiskMonitorServicer
    if relay is not None:
        servicer = RelayServicer(engine, poller, None, acknowledge, clock, target=relay)
    else:
        assert book is not None
        servicer = RiskMonitorServicer(engine, poller, LiveRisk(book, limits, clock(), writer), acknowledge, clock)
    principals = load_tokens(s.grpc_tokens, s.grpc_tokens_file)
    # Tracing first, so refused calls are traced too; it passes handlers through while tracing is off.
    interceptors: list[grpc.ServerInterceptor] = [TracingInterceptor()]
    if principals:
        interceptors.append(
            TokenAuthInterceptor(principals, protected_service=SERVICE_NAME, operator_methods=OPERATOR_METHODS)
        )
    if bool(s.grpc_tls_cert) != bool(s.grpc_tls_key):
        raise ConfigError("'grpc.tls_cert' and 'grpc.tls_key' must be set together")
    if s.grpc_tls_client_ca and not s.grpc_tls_cert:
        raise ConfigError("'grpc.tls_client_ca' (mutual TLS) needs 'grpc.tls_cert' and 'grpc.tls_key'")
    credentials = tls_credentials(s.grpc_tls_cert, s.grpc_tls_key, s.grpc_tls_client_ca) if s.grpc_tls_cert else None
    return RiskApi(servicer, poller, writer, interceptors, credentials, feed)


def acknowledge_with_store(
    engine: Engine, *, channels: Callable[[], Sequence[str]], feed: AlertFeed | None = None
) -> Acknowledge:
    """The servicer's Acknowledge over the alert store: True when this request acknowledged the alert."""

    def acknowledge(alert_id: int, *, actor: str, comment: str, now: datetime) -> bool:
        result = store_acknowledge(
            engine,
            alert_id,
            actor=actor,
            comment=comment,
            now=now,
            channels=channels(),
            publish=feed.publish if feed else None,
        )
        return result.event is not None

    return acknowledge
