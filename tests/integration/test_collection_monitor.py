"""A real Monitor (scheduler, per-venue pools, price stream) collecting from the sandbox for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from sandbox import RunningSandbox, start
from services.app import Monitor
from services.config import Settings
from services.venue_settings import VenueSettings
from services.venues.market_data import StreamState
from tests.integration.collection_runs import SANDBOX_JOBS, succeeded

pytestmark = pytest.mark.integration


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=9, step_interval=0.2) as running:
        yield running


def test_a_running_monitor_collects_every_venue_and_a_slow_venue_delays_no_other(
    sandbox: RunningSandbox, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    venues = (
        *(VenueSettings(v, "exchange", url=url) for v, url in sandbox.exchange_urls.items()),
        VenueSettings("custodian-a", "custodian", url=sandbox.custodian_urls["custodian-a"]),
        VenueSettings("market-data", "market_data", target=sandbox.market_data_target),
    )
    settings = Settings(
        database_url=database_url,
        embedded_data_dir=str(tmp_path),
        http_port=0,
        grpc_port=0,
        venues=venues,
        collection_prices_interval_s=0.2,
        collection_positions_interval_s=0.3,
        collection_balances_interval_s=0.3,
        collection_settlements_interval_s=0.5,
        collection_connect_timeout_s=0.5,
        collection_read_timeout_s=5.0,
        collection_workers=2,  # as many threads as an exchange has jobs: a shared pool this size would starve
        runtime_workers=False,  # in this process, so its registry and collection are the ones read below
    )
    began = datetime.now(UTC)
    monitor = Monitor(settings)
    monitor.start()
    try:
        wait_for(lambda: set(succeeded(engine, began)) == SANDBOX_JOBS)
        age = REGISTRY.get_sample_value("risk_data_staleness_seconds", {"venue": "exchange-b", "kind": "positions"})
        assert age is not None
        assert age < 10
        breaker = {"venue": "exchange-a", "endpoint": "accounts"}
        assert REGISTRY.get_sample_value("risk_monitor_circuit_breaker_state", breaker) == 0
        calls = {"venue": "exchange-a", "endpoint": "positions", "outcome": "ok"}
        assert (REGISTRY.get_sample_value("risk_monitor_venue_requests_total", calls) or 0) > 0

        # exchange-a now takes 2 s per request, so both its jobs hang for many intervals: they hold
        # exchange-a's two threads, and every other venue keeps collecting on its own pool.
        sandbox.slow("exchange-a", 2.0)
        time.sleep(0.5)
        slow_since = datetime.now(UTC)
        wait_for(lambda: succeeded(engine, slow_since).get("collect.positions.exchange-b", 0) >= 5, timeout=15)
        runs = succeeded(engine, slow_since)
        assert runs.get("collect.custody.custodian-a", 0) >= 2
        assert runs.get("collect.prices.market-data", 0) >= 2
        assert runs.get("collect.positions.exchange-a", 0) < runs["collect.positions.exchange-b"]
        stale_a = REGISTRY.get_sample_value("risk_data_staleness_seconds", {"venue": "exchange-a", "kind": "positions"})
        stale_b = REGISTRY.get_sample_value("risk_data_staleness_seconds", {"venue": "exchange-b", "kind": "positions"})
        assert stale_a is not None
        assert stale_b is not None
        assert stale_a > stale_b
        sandbox.clear_faults()
    finally:
        monitor.stop()
    assert monitor.collection is not None
    assert all(m.state is StreamState.STOPPED for m in monitor.collection.market_data)
    # Detached at stop: a stopped monitor exports no staleness.
    assert (
        REGISTRY.get_sample_value("risk_data_staleness_seconds", {"venue": "exchange-b", "kind": "positions"}) is None
    )
