"""Venue clients against the sandbox venues over real HTTP and gRPC on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import yaml

from models.payloads import MalformedResponse
from sandbox import RunningSandbox, start
from services.venues.breaker import BreakerState, CircuitOpen
from services.venues.http import CustodianClient, ExchangeClient, HttpPolicy, VenueTimeout, VenueUnavailable
from services.venues.market_data import MarketDataClient, StreamState, UnknownSymbol

FAST = HttpPolicy(
    connect_timeout=0.5,
    read_timeout=0.5,
    retries=2,
    backoff_factor=0.01,
    backoff_jitter=0.01,
    breaker_threshold=3,
    breaker_cooldown=0.3,
)
ACCOUNT = "exchange-a-acc-1"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=11) as running:
        yield running


@pytest.fixture
def exchange(sandbox: RunningSandbox) -> Iterator[ExchangeClient]:
    with ExchangeClient(sandbox.exchange_urls["exchange-a"], name="exchange-a", policy=FAST) as client:
        yield client


@pytest.fixture
def market_data(sandbox: RunningSandbox) -> Iterator[MarketDataClient]:
    client = MarketDataClient(sandbox.market_data_target, update_interval_ms=20, backoff_initial=0.05, backoff_max=0.2)
    with client:
        yield client


# -- REST: happy paths -------------------------------------------------------------------------------


def test_exchange_client_reads_accounts_positions_and_balances(
    sandbox: RunningSandbox, exchange: ExchangeClient
) -> None:
    sandbox.world.set_position("exchange-a", ACCOUNT, "BTC-USDT", "-1.25", "61000.5")
    sandbox.world.set_price("BTC-USDT", "60000")

    accounts = exchange.accounts()
    positions = exchange.positions(ACCOUNT)
    balances = exchange.balances(ACCOUNT)

    assert [(a.account_id, a.account_type) for a in accounts.accepted] == [
        ("exchange-a-acc-1", "SPOT"),
        ("exchange-a-acc-2", "MARGIN"),
        ("exchange-a-acc-3", "FUTURES"),
    ]
    [btc] = positions.accepted
    assert (btc.symbol, btc.quantity, btc.avg_price, btc.mark_price) == (
        "BTC-USDT",
        Decimal("-1.25"),
        Decimal("61000.5"),
        Decimal(60000),
    )
    assert {b.asset: b.total for b in balances.accepted} == {
        "BTC": Decimal("2.5"),
        "USDT": Decimal(1_000_000),
    }
    assert positions.rejected == balances.rejected == []


def test_alias_dialect_exchange_parses_to_the_same_records(sandbox: RunningSandbox) -> None:
    sandbox.world.set_position("exchange-b", "exchange-b-acc-2", "ETH-USDT", "3.1", "2999.99")
    with ExchangeClient(sandbox.exchange_urls["exchange-b"], policy=FAST) as client:
        [eth] = client.positions("exchange-b-acc-2").accepted
        balances = client.balances("exchange-b-acc-2").accepted
    assert (eth.quantity, eth.avg_price) == (Decimal("3.1"), Decimal("2999.99"))
    assert {b.asset: (b.available, b.locked) for b in balances}["BTC"] == (Decimal(2), Decimal("0.5"))


def test_custodian_client_reads_every_endpoint(sandbox: RunningSandbox) -> None:
    sandbox.world.add_settlement("custodian-a", ACCOUNT, "USDT", "-2500.75")
    with CustodianClient(sandbox.custodian_urls["custodian-a"], policy=FAST, api_key="s3cret") as client:
        [client_account] = client.accounts().accepted
        master = client.master_balance("client-1").accepted
        segregated = client.segregated_balances("client-1").accepted
        [settlement] = client.pending_settlements().accepted
        assert "s3cret" not in repr(client)
    assert client_account.account_id == "client-1"
    assert {b.asset for b in master} == {"USDT", "BTC"}
    assert len({(b.venue, b.account_id) for b in segregated}) == 6
    assert (settlement.account_id, settlement.quantity) == (ACCOUNT, Decimal("-2500.75"))


def test_trading_flow_changes_positions_over_steps(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    before = {a: exchange.positions(a).accepted for a in ("exchange-a-acc-1", "exchange-a-acc-2")}
    sandbox.world.step(30)
    after = {a: exchange.positions(a).accepted for a in before}
    assert after != before
    assert all(not exchange.positions(a).rejected for a in before)


# -- REST: bad payloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("nan", "available 'NaN' is not finite"),
        ("negative_balance", "available -100 is negative"),
        ("missing_field", "missing field 'asset'"),
    ],
)
def test_a_bad_record_is_rejected_and_its_neighbours_kept(
    sandbox: RunningSandbox, exchange: ExchangeClient, mode: str, reason: str
) -> None:
    sandbox.malform("exchange-a", mode, endpoint="balances", count=1)
    result = exchange.balances(ACCOUNT)
    assert [b.asset for b in result.accepted] == ["USDT"]
    assert [r.reason for r in result.rejected] == [reason]
    assert len(exchange.balances(ACCOUNT).accepted) == 2  # the fault was for one response only


def test_a_future_timestamp_rejects_the_position(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    sandbox.world.set_position("exchange-a", ACCOUNT, "SOL-USDT", "10", "150")
    sandbox.world.set_position("exchange-a", ACCOUNT, "ETH-USDT", "1", "3000")
    sandbox.malform("exchange-a", "future_timestamp", endpoint="positions", count=1)
    result = exchange.positions(ACCOUNT)
    assert [p.symbol for p in result.accepted] == ["SOL-USDT"]
    assert "in the future" in result.rejected[0].reason


@pytest.mark.parametrize("mode", ["not_json", "wrong_shape"])
def test_a_wholly_malformed_body_raises(sandbox: RunningSandbox, exchange: ExchangeClient, mode: str) -> None:
    sandbox.malform("exchange-a", mode, endpoint="positions")
    with pytest.raises(MalformedResponse):
        exchange.positions(ACCOUNT)
    assert exchange.breaker_states()["positions"] is BreakerState.CLOSED


# -- REST: transport failures ------------------------------------------------------------------------


def test_500s_are_retried_then_reported_unavailable(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    sandbox.fail("exchange-a", 500, endpoint="positions")
    with pytest.raises(VenueUnavailable) as caught:
        exchange.positions(ACCOUNT)
    assert caught.value.status == 500
    assert sandbox.hits("exchange-a", "positions") == 1 + FAST.retries


def test_a_transient_503_is_retried_transparently(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    sandbox.fail("exchange-a", 503, endpoint="balances", count=1)
    assert len(exchange.balances(ACCOUNT).accepted) == 2
    assert sandbox.hits("exchange-a", "balances") == 2


def test_client_errors_are_not_retried(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    with pytest.raises(VenueUnavailable) as caught:
        exchange.positions("no-such-account")
    assert caught.value.status == 404
    assert sandbox.hits("exchange-a", "positions") == 1


def test_a_slow_endpoint_times_out_within_the_read_timeout(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    sandbox.slow("exchange-a", 3.0, endpoint="positions")
    policy = HttpPolicy(read_timeout=0.2, retries=1, backoff_factor=0.01, backoff_jitter=0)
    with ExchangeClient(sandbox.exchange_urls["exchange-a"], policy=policy) as client:
        began = time.monotonic()
        with pytest.raises(VenueTimeout):
            client.positions(ACCOUNT)
        elapsed = time.monotonic() - began
    assert 0.4 <= elapsed < 1.0  # two attempts of 0.2 s each, not the 3 s delay
    assert sandbox.hits("exchange-a", "positions") == 2


def test_repeated_failures_open_the_breaker_which_half_opens_after_the_cooldown(
    sandbox: RunningSandbox, exchange: ExchangeClient
) -> None:
    sandbox.fail("exchange-a", 502, endpoint="positions")
    for _ in range(FAST.breaker_threshold):
        with pytest.raises(VenueUnavailable):
            exchange.positions(ACCOUNT)
    hits = sandbox.hits("exchange-a", "positions")
    assert exchange.breaker_states()["positions"] is BreakerState.OPEN

    with pytest.raises(CircuitOpen):
        exchange.positions(ACCOUNT)
    assert sandbox.hits("exchange-a", "positions") == hits  # failed fast, no request
    assert exchange.balances(ACCOUNT).accepted  # other endpoints have their own breaker

    time.sleep(FAST.breaker_cooldown)
    assert exchange.breaker_states()["positions"] is BreakerState.HALF_OPEN
    with pytest.raises(VenueUnavailable):  # the probe fails: open again for another cool-down
        exchange.positions(ACCOUNT)
    assert exchange.breaker_states()["positions"] is BreakerState.OPEN

    sandbox.clear_faults()
    time.sleep(FAST.breaker_cooldown)
    exchange.positions(ACCOUNT)  # the probe succeeds
    assert exchange.breaker_states()["positions"] is BreakerState.CLOSED


def test_a_venue_that_is_down_fails_fast_and_recovers(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    sandbox.take_down("exchange-a")
    began = time.monotonic()
    with pytest.raises(VenueUnavailable) as caught:
        exchange.accounts()
    assert not isinstance(caught.value, VenueTimeout)
    assert time.monotonic() - began < 0.5  # refused, not waiting on a timeout
    sandbox.bring_up("exchange-a")
    assert len(exchange.accounts().accepted) == 3


# -- gRPC market data --------------------------------------------------------------------------------


def test_the_price_stream_fills_the_cache(sandbox: RunningSandbox, market_data: MarketDataClient) -> None:
    wait_for(lambda: len(market_data.snapshot()) == 4)
    assert market_data.state is StreamState.STREAMING
    assert market_data.last_message_at is not None
    sandbox.world.set_price("BTC-USDT", "64123.45")
    wait_for(lambda: market_data.snapshot()["BTC-USDT"].price == Decimal("64123.45"))  # exact, via repr


def test_the_client_reconnects_after_market_data_restarts(
    sandbox: RunningSandbox, market_data: MarketDataClient
) -> None:
    wait_for(lambda: market_data.state is StreamState.STREAMING)
    sandbox.take_down("market-data")
    wait_for(lambda: market_data.state is not StreamState.STREAMING)
    sandbox.world.set_price("ETH-USDT", "2500.5")
    sandbox.bring_up("market-data")
    wait_for(lambda: market_data.snapshot()["ETH-USDT"].price == Decimal("2500.5"))
    assert market_data.reconnects >= 1
    assert market_data.state is StreamState.STREAMING


def test_a_paused_stream_goes_quiet_and_the_last_message_time_shows_it(
    sandbox: RunningSandbox, market_data: MarketDataClient
) -> None:
    wait_for(lambda: market_data.last_message_at is not None)
    sandbox.control("POST", "stream", {"action": "pause"})
    time.sleep(0.1)  # let an update already in flight arrive
    quiet_since = market_data.last_message_at
    time.sleep(0.2)
    assert market_data.last_message_at == quiet_since
    sandbox.control("POST", "stream", {"action": "resume"})
    wait_for(lambda: market_data.last_message_at != quiet_since)


def test_a_bad_price_update_is_rejected_and_the_last_good_price_kept(
    sandbox: RunningSandbox, market_data: MarketDataClient
) -> None:
    wait_for(lambda: len(market_data.snapshot()) == 4)
    sandbox.malform("market-data", "nan", endpoint="StreamPrices", count=4)
    wait_for(lambda: market_data.rejected >= 4)
    assert all(r.price.is_finite() and r.price > 0 for r in market_data.snapshot().values())


def test_get_price_polls_with_a_deadline(sandbox: RunningSandbox) -> None:
    sandbox.world.set_price("SOL-USDT", "151.25")
    client = MarketDataClient(sandbox.market_data_target, get_price_timeout=0.3)
    try:
        record = client.get_price("SOL-USDT")
        assert (record.symbol, record.price) == ("SOL-USDT", Decimal("151.25"))
        assert client.snapshot()["SOL-USDT"] == record
        with pytest.raises(UnknownSymbol):
            client.get_price("DOGE-USDT")
        sandbox.slow("market-data", 2.0, endpoint="GetPrice")
        with pytest.raises(VenueTimeout):
            client.get_price("SOL-USDT")
        sandbox.take_down("market-data")
        with pytest.raises(VenueUnavailable):
            client.get_price("SOL-USDT")
    finally:
        client.stop()


# -- the HTTP control surface ------------------------------------------------------------------------


def test_the_control_endpoint_drives_the_world(sandbox: RunningSandbox, exchange: ExchangeClient) -> None:
    url = sandbox.control_url
    with requests.Session() as http:
        assert http.post(f"{url}/control/price", json={"symbol": "BTC-USDT", "price": "50000"}, timeout=2).ok
        assert http.post(f"{url}/control/shock", json={"percent": -10, "symbol": "BTC-USDT"}, timeout=2).ok
        body = {
            "venue": "exchange-a",
            "account_id": ACCOUNT,
            "symbol": "BTC-USDT",
            "quantity": "2",
            "avg_price": "1",
        }
        assert http.post(f"{url}/control/position", json=body, timeout=2).ok
        error = {"venue": "exchange-a", "endpoint": "accounts", "status": 503, "count": 5}
        assert http.post(f"{url}/control/error", json=error, timeout=2).ok
        missing = http.post(f"{url}/control/price", json={"symbol": "BTC-USDT"}, timeout=2)
        state = http.get(f"{url}/control/state", timeout=2).json()
    assert missing.status_code == 400
    assert "missing parameter 'price'" in missing.text
    assert state["prices"]["BTC-USDT"] == "45000.00000000"
    [position] = exchange.positions(ACCOUNT).accepted
    assert (position.quantity, position.mark_price) == (Decimal(2), Decimal(45000))
    with pytest.raises(VenueUnavailable):
        exchange.accounts()


# -- the documented contract -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "venue", "ids"),
    [
        ("exchange.yaml", "exchange-a", {"account_id": ACCOUNT}),
        ("custodian.yaml", "custodian-a", {"client_id": "client-1"}),
    ],
)
def test_every_documented_path_is_served_with_its_required_fields(
    sandbox: RunningSandbox, spec: str, venue: str, ids: dict[str, str]
) -> None:
    doc = yaml.safe_load((DOCS / "openapi" / spec).read_text(encoding="utf-8"))
    base = {**sandbox.exchange_urls, **sandbox.custodian_urls}[venue]
    with requests.Session() as http:
        for path, operations in doc["paths"].items():
            schema_ref = operations["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            schema = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
            response = http.get(base + path.format(**ids), timeout=2)
            assert response.status_code == 200, path
            assert set(schema["required"]) <= set(response.json()), path


def test_a_background_stepper_moves_the_world_when_configured() -> None:
    with start(seed=1, step_interval=0.01) as running:
        wait_for(lambda: running.world.steps >= 5)
        assert running.state()["prices"] != {s: str(p) for s, p in running.config.prices.items()}
