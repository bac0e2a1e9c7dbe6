"""Sandbox `marketdata.MarketDataService` over gRPC: prices from the world, stoppable and pausable."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
from marketdata import market_data_pb2, market_data_pb2_grpc

from sandbox.faults import FaultBook
from sandbox.world import Quote, SandboxWorld, UnknownEntity

VENUE = "market-data"


class MarketDataServicer(market_data_pb2_grpc.MarketDataServiceServicer):
    def __init__(self, world: SandboxWorld, faults: FaultBook, stopping: threading.Event) -> None:
        self.world, self.faults, self.stopping = world, faults, stopping
        self.streaming = threading.Event()  # cleared: open streams stay connected but send nothing
        self.streaming.set()

    def _update(self, symbol: str, quote: Quote, endpoint: str) -> market_data_pb2.PriceUpdate:
        outcome = self.faults.take(VENUE, endpoint)
        price = float(quote.price)
        timestamp = quote.timestamp
        if outcome.malformed == "nan":
            price = math.nan
        elif outcome.malformed == "negative_balance":
            price = -price
        elif outcome.malformed == "future_timestamp":
            timestamp += timedelta(days=1)
        update = market_data_pb2.PriceUpdate(
            symbol=symbol,
            price=price,
            volume=float(quote.volume),
            source="sandbox",
            change_info=market_data_pb2.ChangeInfo(
                previous_price=float(quote.previous),
                change=float(quote.price - quote.previous),
                change_percent=float((quote.price - quote.previous) / quote.previous * 100) if quote.previous else 0.0,
            ),
        )
        update.timestamp.FromDatetime(timestamp)
        return update

    def GetPrice(
        self, request: market_data_pb2.PriceRequest, context: grpc.ServicerContext
    ) -> market_data_pb2.PriceUpdate:
        outcome = self.faults.take(VENUE, "GetPrice")
        if outcome.delay:
            self.stopping.wait(outcome.delay)
        if outcome.status:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"injected {outcome.status}")
        with self.world.locked():
            try:
                quote = self.world.quote(request.symbol)
            except UnknownEntity as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            return self._update(request.symbol, quote, "GetPrice")

    def StreamPrices(
        self, request: market_data_pb2.StreamRequest, context: grpc.ServicerContext
    ) -> Iterator[market_data_pb2.PriceUpdate]:
        with self.world.locked():
            symbols = list(request.symbols) or list(self.world.quotes)
            unknown = [s for s in symbols if s not in self.world.quotes]
        if unknown:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown symbols {unknown}")
        interval_ms = request.update_interval_ms or self.world.config.stream_interval_ms
        interval = max(interval_ms, 10) / 1000
        while context.is_active() and not self.stopping.is_set():
            if self.streaming.is_set():
                with self.world.locked():
                    updates = [self._update(s, self.world.quote(s), "StreamPrices") for s in symbols]
                yield from updates
            self.stopping.wait(interval)


class MarketDataServer:
    """The gRPC server; `down()` kills it (open streams break), `up()` serves again on the same port."""

    def __init__(self, world: SandboxWorld, faults: FaultBook, *, host: str, port: int = 0) -> None:
        self.world, self.faults, self.host, self.port = world, faults, host, port
        self._server: grpc.Server | None = None
        self._stopping = threading.Event()
        self.servicer = MarketDataServicer(world, faults, self._stopping)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        if self._server is not None:
            return
        self._stopping = threading.Event()
        self.servicer.stopping = self._stopping
        # Every open stream holds a worker thread; 32 covers the tests and the demo with headroom.
        server = grpc.server(ThreadPoolExecutor(max_workers=32, thread_name_prefix="sandbox-md"))
        market_data_pb2_grpc.add_MarketDataServiceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._server = server

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # Abort first, so clients see a broken stream (UNAVAILABLE/CANCELLED), not a clean end.
            done = server.stop(grace=None)
            self._stopping.set()
            done.wait(timeout=5)

    def pause_stream(self) -> None:
        self.servicer.streaming.clear()

    def resume_stream(self) -> None:
        self.servicer.streaming.set()
