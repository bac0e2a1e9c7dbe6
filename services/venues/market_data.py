"""gRPC client for `marketdata.MarketDataService`: a streaming latest-price cache plus polled GetPrice.

A background thread consumes `StreamPrices` into a thread-safe cache and reconnects with
exponential backoff and jitter when the stream breaks. `get_price()` is a unary call with a
deadline, for symbols the stream has not covered recently. Doubles from the wire become Decimals
through their shortest round-trip text (`Decimal(repr(x))`), never their binary expansion.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import grpc
from marketdata import market_data_pb2, market_data_pb2_grpc

from models.payloads import DEFAULT_MAX_SKEW, InvalidRecord, MalformedResponse, PriceRecord, parse_price
from services import metrics, tracing
from services.venues.http import VenueTimeout, VenueUnavailable

log = logging.getLogger(__name__)

VENUE = "market-data"


class UnknownSymbol(LookupError):
    def __init__(self, symbol: str) -> None:
        super().__init__(f"market data has no price for {symbol!r}")
        self.symbol = symbol


class StreamState(StrEnum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # stream requested, no message yet
    STREAMING = "streaming"  # messages arriving
    BACKING_OFF = "backing_off"  # stream broke; waiting before reconnecting
    STOPPED = "stopped"


def _status(exc: grpc.RpcError) -> grpc.StatusCode | None:
    # Errors raised by calls are also grpc.Call objects; the stubs cannot express that.
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def price_fields(update: market_data_pb2.PriceUpdate) -> dict[str, Any]:
    """A `PriceUpdate` as the plain mapping `models.payloads.parse_price` validates."""
    timestamp = update.timestamp.ToDatetime(tzinfo=UTC) if update.HasField("timestamp") else None
    return {
        "symbol": update.symbol,
        "price": update.price,  # float: parse_price converts via repr, the shortest round trip
        "volume": update.volume,
        "timestamp": timestamp,
        "source": update.source,
    }


class MarketDataClient:
    """Streams prices for `symbols` (all quoted symbols when empty) into `snapshot()`."""

    def __init__(
        self,
        target: str,
        symbols: Iterable[str] = (),
        *,
        update_interval_ms: int = 0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        get_price_timeout: float = 2.0,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = VENUE,
    ) -> None:
        self.target = target
        self.name = name  # the venue id in metrics and errors
        self.symbols = tuple(symbols)
        self.update_interval_ms = update_interval_ms
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.get_price_timeout = get_price_timeout
        self.max_skew, self.clock = max_skew, clock
        # Let the channel itself retry connecting at about our pace instead of gRPC's 1 s..120 s.
        reconnect_ms = int(backoff_initial * 1000)
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
                ("grpc.min_reconnect_backoff_ms", reconnect_ms),
                ("grpc.max_reconnect_backoff_ms", int(backoff_max * 1000)),
            ],
        )
        self._stub = market_data_pb2_grpc.MarketDataServiceStub(self._channel)
        self._lock = threading.Lock()
        self._prices: dict[str, PriceRecord] = {}
        self._received: dict[str, datetime] = {}  # our clock when each symbol was last refreshed
        # Recent rejected updates (fields, reason) for the price job to store; bounded if nobody drains.
        self._rejections: deque[tuple[dict[str, Any], str]] = deque(maxlen=1000)
        self._state = StreamState.IDLE
        self._last_message_at: datetime | None = None
        self._call: Any = None  # the live StreamPrices call, so stop() can cancel it
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconnects = 0
        self.rejected = 0

    # -- observable state ---------------------------------------------------------------------------

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def last_message_at(self) -> datetime | None:
        return self._last_message_at

    def snapshot(self) -> dict[str, PriceRecord]:
        with self._lock:
            return dict(self._prices)

    def received(self) -> dict[str, datetime]:
        """When each cached symbol was last refreshed (stream or poll), by our clock: a quiet market
        repeats the venue's timestamp, so this, not `PriceRecord.timestamp`, shows a silent stream."""
        with self._lock:
            return dict(self._received)

    def drain_rejections(self) -> list[tuple[dict[str, Any], str]]:
        """Rejected updates since the last call: (raw fields, reason)."""
        with self._lock:
            drained = list(self._rejections)
            self._rejections.clear()
        return drained

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("market data client already started")
        self._thread = threading.Thread(target=self._run, name="market-data-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self._channel.close()
        self._state = StreamState.STOPPED

    def __enter__(self) -> MarketDataClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- polling ------------------------------------------------------------------------------------

    def get_price(self, symbol: str, *, timeout: float | None = None) -> PriceRecord:
        """Latest price by unary call (deadline `timeout` or `get_price_timeout`); updates the cache."""
        request = market_data_pb2.PriceRequest(symbol=symbol)
        started = time.perf_counter()
        outcome = "ok"
        with tracing.span(
            "venue GetPrice", kind=tracing.SpanKind.CLIENT, venue=self.name, endpoint="GetPrice", symbol=symbol
        ) as span:
            try:
                update = self._stub.GetPrice(request, timeout=timeout or self.get_price_timeout)
            except grpc.RpcError as exc:
                code = _status(exc)
                span.set_attribute("rpc.grpc.status_code", code.value[0] if code else -1)
                if code == grpc.StatusCode.NOT_FOUND:
                    outcome = "client_error"
                    raise UnknownSymbol(symbol) from None
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    outcome = "timeout"
                    raise VenueTimeout(self.name, "GetPrice", "deadline exceeded") from None
                outcome = "unavailable"
                raise VenueUnavailable(self.name, "GetPrice", f"gRPC {code.name if code else exc}") from None
            finally:
                span.set_attribute("outcome", outcome)
                metrics.VENUE_REQUESTS.labels(self.name, "GetPrice", outcome).inc()
                metrics.VENUE_REQUEST_DURATION.labels(self.name, "GetPrice").observe(time.perf_counter() - started)
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        try:
            record = parse_price(price_fields(update), now=self.clock(), max_skew=self.max_skew)
        except (InvalidRecord, ValueError) as exc:
            raise MalformedResponse(f"GetPrice({symbol}): {exc}") from None
        self._store(record)
        return record

    # -- streaming ----------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._state = StreamState.CONNECTING
            request = market_data_pb2.StreamRequest(
                symbols=list(self.symbols), update_interval_ms=self.update_interval_ms
            )
            call = self._stub.StreamPrices(request)
            with self._lock:
                self._call = call
            if self._stopping.is_set():  # stop() ran before the call was registered
                call.cancel()
            try:
                for update in call:
                    self._on_update(update)
                    failures = 0
                log.warning("market data stream from %s ended; reconnecting", self.target)
            except grpc.RpcError as exc:
                if self._stopping.is_set():
                    break
                code = _status(exc)
                log.warning("market data stream from %s broke: %s", self.target, code)
            finally:
                with self._lock:
                    self._call = None
            if self._stopping.is_set():
                break
            failures += 1
            self.reconnects += 1
            self._state = StreamState.BACKING_OFF
            self._stopping.wait(self._backoff(failures))
        self._state = StreamState.STOPPED

    def _backoff(self, failures: int) -> float:
        # "Equal jitter": half the exponential delay fixed, half random, so reconnects spread out.
        ceiling = min(self.backoff_max, self.backoff_initial * float(2 ** (failures - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (jitter, not security)

    def _on_update(self, update: market_data_pb2.PriceUpdate) -> None:
        now = self.clock()
        self._last_message_at = now
        self._state = StreamState.STREAMING
        try:
            record = parse_price(price_fields(update), now=now, max_skew=self.max_skew)
        except (InvalidRecord, ValueError) as exc:
            # Queue before counting: a reader that sees the count must find the rejection to drain.
            with self._lock:
                self._rejections.append((_raw(update), str(exc)))
                self.rejected += 1
            log.warning("rejected price update for %r: %s", update.symbol, exc)
            return
        self._store(record)

    def _store(self, record: PriceRecord) -> None:
        with self._lock:
            current = self._prices.get(record.symbol)
            if current is None or record.timestamp >= current.timestamp:  # ignore out-of-order updates
                self._prices[record.symbol] = record
                self._received[record.symbol] = self.clock()


def _raw(update: market_data_pb2.PriceUpdate) -> dict[str, Any]:
    """A rejected update as JSON-safe fields: floats as their repr (NaN is not valid JSON)."""
    return {key: repr(value) if isinstance(value, float) else value for key, value in price_fields(update).items()}
