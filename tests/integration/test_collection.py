"""Collection jobs against the sandbox venues (real HTTP and gRPC on loopback) and the real database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from jobs.collect import (
    CollectBalances,
    CollectCustody,
    Collection,
    CollectPositions,
    CollectPrices,
    CollectSettlements,
)
from sandbox import RunningSandbox, start
from services.collection import RunOutcome
from services.snapshot_store import SnapshotStore
from services.staleness import StalenessTracker
from services.venues.breaker import BreakerState
from services.venues.http import CustodianClient, ExchangeClient, HttpPolicy
from services.venues.market_data import MarketDataClient, StreamState

pytestmark = pytest.mark.integration

FAST = HttpPolicy(
    connect_timeout=0.5,
    read_timeout=0.3,
    retries=1,
    backoff_factor=0.01,
    backoff_jitter=0.01,
    breaker_threshold=2,
    breaker_cooldown=60.0,  # stays open for the whole test
)
EXCHANGES = ("exchange-a", "exchange-b")


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def run_row(engine: Engine, outcome: RunOutcome) -> Any:
    [row] = rows(
        engine,
        "SELECT id, status, records_accepted, records_rejected, error FROM collection_runs"
        " WHERE job = :job AND finished_at = :at",
        job=outcome.job,
        at=outcome.finished_at,
    )
    return row


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=5) as running:
        yield running


@pytest.fixture
def store(engine: Engine, sandbox: RunningSandbox) -> SnapshotStore:
    store = SnapshotStore(engine)
    for venue, url in {**sandbox.exchange_urls, **sandbox.custodian_urls}.items():
        store.ensure_venue(venue, "custodian" if venue.startswith("custodian") else "exchange", url)
    store.ensure_venue("market-data", "market_data", sandbox.market_data_target)
    return store


@pytest.fixture
def tracker() -> StalenessTracker:
    return StalenessTracker()


@pytest.fixture
def exchange_jobs(
    sandbox: RunningSandbox, store: SnapshotStore, tracker: StalenessTracker
) -> Iterator[dict[str, CollectPositions]]:
    """positions and balances jobs for both exchanges, keyed by job id."""
    clients = [ExchangeClient(sandbox.exchange_urls[v], name=v, policy=FAST) for v in EXCHANGES for _ in range(2)]
    jobs: list[CollectPositions] = []
    for n, venue in enumerate(EXCHANGES):
        jobs.append(CollectPositions(venue, clients[2 * n], store, tracker))
        jobs.append(CollectBalances(venue, clients[2 * n + 1], store, tracker))
    yield {job.id: job for job in jobs}
    for client in clients:
        client.close()


@pytest.fixture
def custodian(sandbox: RunningSandbox) -> Iterator[CustodianClient]:
    with CustodianClient(sandbox.custodian_urls["custodian-a"], name="custodian-a", policy=FAST) as client:
        yield client


@pytest.fixture
def market(sandbox: RunningSandbox) -> Iterator[MarketDataClient]:
    client = MarketDataClient(
        sandbox.market_data_target,
        update_interval_ms=50,
        backoff_initial=0.05,
        backoff_max=0.2,
        get_price_timeout=0.5,
        name="market-data",
    )
    with client:
        yield client


def latest_positions(engine: Engine, venue: str) -> dict[tuple[str, str], Decimal]:
    found = rows(
        engine,
        "SELECT a.external_id, p.symbol, p.quantity FROM position_latest p JOIN accounts a ON a.id = p.account_id"
        " WHERE a.venue_id = :venue",
        venue=venue,
    )
    return {(account, symbol): qty for account, symbol, qty in found}


# -- every kind arrives for every account ---------------------------------------------------------------


def test_positions_balances_custody_and_settlements_arrive_for_every_account(
    sandbox: RunningSandbox, engine: Engine, exchange_jobs: dict[str, CollectPositions], custodian: CustodianClient
) -> None:
    store, tracker = (
        exchange_jobs["collect.positions.exchange-a"].store,
        exchange_jobs["collect.positions.exchange-a"].tracker,
    )
    world = sandbox.world
    world.step(20)  # some trading, so accounts hold positions
    world.set_position("exchange-a", "exchange-a-acc-1", "BTC-USDT", "-1.25", "61000.5")
    world.set_position("exchange-b", "exchange-b-acc-3", "ETH-USDT", "3.1", "2999.99")
    settlement = world.add_settlement("custodian-a", "exchange-b-acc-2", "USDT", "-2500.75")

    outcomes = [job() for job in exchange_jobs.values()]
    outcomes.append(CollectCustody("custodian-a", custodian, store, tracker, EXCHANGES)())
    settle = CollectSettlements("custodian-a", custodian, store, tracker, EXCHANGES)
    outcomes.append(settle())

    assert [(o.job, o.status, o.error) for o in outcomes] == [(o.job, "succeeded", None) for o in outcomes]
    assert [run_row(engine, o).status for o in outcomes] == ["succeeded"] * 6
    for venue in EXCHANGES:  # every position of every account, exactly as the venue holds it
        expected = {
            (account_id, symbol): pos.quantity
            for account_id, account in world.exchanges[venue].items()
            for symbol, pos in account.positions.items()
        }
        assert latest_positions(engine, venue) == expected
    balances = rows(
        engine,
        "SELECT a.venue_id, a.external_id, b.asset, b.total FROM balance_latest b"
        " JOIN accounts a ON a.id = b.account_id WHERE a.venue_id IN ('exchange-a', 'exchange-b')",
    )
    assert {(v, acc) for v, acc, _asset, _total in balances} == {
        (v, f"{v}-acc-{i}") for v in EXCHANGES for i in (1, 2, 3)
    }
    assert {(acc, asset): total for _v, acc, asset, total in balances}[("exchange-b-acc-1", "BTC")] == Decimal("2.5")

    custody = rows(
        engine,
        "SELECT held.venue_id, held.external_id, c.asset, c.total FROM custody_balance_latest c"
        " JOIN accounts held ON held.id = c.account_id JOIN accounts cust ON cust.id = c.custodian_account_id"
        " WHERE cust.venue_id = 'custodian-a'",
    )
    assert ("custodian-a", "client-1", "BTC", Decimal(10)) in custody  # master (omnibus) balance
    segregated = {(v, acc) for v, acc, asset, _t in custody if v != "custodian-a" and asset == "USDT"}
    assert segregated == {(v, f"{v}-acc-{i}") for v in EXCHANGES for i in (1, 2, 3)}

    [stored] = rows(
        engine,
        "SELECT s.status, s.quantity, a.venue_id, a.external_id FROM settlements s"
        " JOIN accounts a ON a.id = s.account_id WHERE s.custodian_id = 'custodian-a' AND s.settlement_id = :id",
        id=settlement,
    )
    assert tuple(stored) == ("PENDING", Decimal("-2500.75"), "exchange-b", "exchange-b-acc-2")

    # The custodian settles it: it leaves the pending list, and the table says so.
    with world.locked():
        world.settlements["custodian-a"][0].status = "SETTLED"
    assert settle().status == "succeeded"
    [(status,)] = rows(
        engine,
        "SELECT status FROM settlements WHERE custodian_id = 'custodian-a' AND settlement_id = :id",
        id=settlement,
    )
    assert status == "CLEARED"
    assert {kind for _venue, kind in tracker.freshness()} == {"positions", "balances", "custody"}


# -- bad records and failing accounts -----------------------------------------------------------------


def test_a_malformed_record_is_rejected_and_stored_while_its_neighbours_are_kept(
    sandbox: RunningSandbox, engine: Engine, exchange_jobs: dict[str, CollectPositions], tracker: StalenessTracker
) -> None:
    sandbox.malform("exchange-a", "negative_balance", endpoint="balances", count=1)
    outcome = exchange_jobs["collect.balances.exchange-a"]()

    row = run_row(engine, outcome)
    assert (row.status, row.records_rejected, row.records_accepted) == ("partial", 1, 5)  # 3 accounts x 2 assets - 1
    [(payload, reason)] = rows(engine, "SELECT payload, reason FROM rejected_records WHERE run_id = :r", r=row.id)
    assert reason == "exchange-a-acc-1: available -100 is negative"
    assert payload["available"] == "-100"
    kept = rows(
        engine,
        "SELECT b.asset FROM balance_latest b JOIN accounts a ON a.id = b.account_id"
        " WHERE a.venue_id = 'exchange-a' AND a.external_id = 'exchange-a-acc-1'",
    )
    assert [asset for (asset,) in kept] == ["USDT"]  # the neighbour of the bad BTC record
    assert tracker.newest("exchange-a", "balances") == outcome.finished_at  # the venue answered: fresh


def test_a_failing_account_makes_the_run_partial_and_keeps_its_previous_snapshot(
    sandbox: RunningSandbox, engine: Engine, exchange_jobs: dict[str, CollectPositions], tracker: StalenessTracker
) -> None:
    job = exchange_jobs["collect.positions.exchange-a"]
    sandbox.world.set_position("exchange-a", "exchange-a-acc-1", "SOL-USDT", "10", "150")
    sandbox.world.set_position("exchange-a", "exchange-a-acc-2", "SOL-USDT", "20", "150")
    first = job()
    assert first.status == "succeeded"

    sandbox.world.set_position("exchange-a", "exchange-a-acc-1", "SOL-USDT", "11", "150")
    sandbox.world.set_position("exchange-a", "exchange-a-acc-2", "SOL-USDT", "21", "150")
    # The first account's request and its one retry fail; the other accounts answer.
    sandbox.fail("exchange-a", 503, endpoint="positions", count=1 + FAST.retries)
    second = job()

    row = run_row(engine, second)
    assert row.status == "partial"
    assert row.error.startswith("1 of 3 accounts failed: exchange-a-acc-1: exchange-a positions: HTTP 503")
    latest = latest_positions(engine, "exchange-a")
    assert latest[("exchange-a-acc-1", "SOL-USDT")] == Decimal(10)  # previous snapshot kept
    assert latest[("exchange-a-acc-2", "SOL-USDT")] == Decimal(21)  # the others collected
    assert tracker.newest("exchange-a", "positions") == first.finished_at  # not complete: not fresher


def test_an_account_whose_every_record_is_rejected_keeps_its_previous_snapshot(
    sandbox: RunningSandbox, engine: Engine, exchange_jobs: dict[str, CollectPositions], tracker: StalenessTracker
) -> None:
    job = exchange_jobs["collect.positions.exchange-a"]
    sandbox.world.set_position("exchange-a", "exchange-a-acc-1", "SOL-USDT", "10", "150")  # its only position
    first = job()
    assert first.status == "succeeded"

    sandbox.malform("exchange-a", "nan", endpoint="positions", count=1)  # acc-1's request comes first
    second = job()

    row = run_row(engine, second)
    assert (row.status, row.records_rejected) == ("partial", 1)
    assert row.error == "1 of 3 accounts failed: exchange-a-acc-1: all 1 records rejected"
    [(reason,)] = rows(engine, "SELECT reason FROM rejected_records WHERE run_id = :r", r=row.id)
    assert reason == "exchange-a-acc-1: quantity 'NaN' is not finite"  # the reason is stored all the same
    # Not an empty (flat) book: the account's exposure stays what the venue last reported validly.
    assert latest_positions(engine, "exchange-a")[("exchange-a-acc-1", "SOL-USDT")] == Decimal(10)
    assert tracker.newest("exchange-a", "positions") == first.finished_at


def test_a_run_whose_every_account_fails_still_stores_the_records_it_refused(
    sandbox: RunningSandbox, engine: Engine, exchange_jobs: dict[str, CollectPositions]
) -> None:
    for n in (1, 2, 3):
        sandbox.world.set_position("exchange-a", f"exchange-a-acc-{n}", "SOL-USDT", str(n), "150")
    sandbox.malform("exchange-a", "nan", endpoint="positions", count=3)  # every account's only record
    outcome = exchange_jobs["collect.positions.exchange-a"]()

    row = run_row(engine, outcome)
    assert (row.status, row.records_accepted, row.records_rejected) == ("failed", 0, 3)
    stored = rows(engine, "SELECT reason FROM rejected_records WHERE run_id = :r ORDER BY reason", r=row.id)
    assert [r for (r,) in stored] == [f"exchange-a-acc-{n}: quantity 'NaN' is not finite" for n in (1, 2, 3)]


# -- venue outages ----------------------------------------------------------------------------------------


def _break(sandbox: RunningSandbox, how: str) -> None:
    if how == "500":
        sandbox.fail("exchange-a", 500)
    elif how == "timeout":
        sandbox.slow("exchange-a", 2.0)  # > FAST.read_timeout
    else:
        sandbox.take_down("exchange-a")


@pytest.mark.parametrize("how", ["500", "timeout", "down"])
def test_a_broken_venue_opens_its_breaker_records_failed_runs_and_goes_stale_while_others_collect(
    sandbox: RunningSandbox,
    engine: Engine,
    exchange_jobs: dict[str, CollectPositions],
    tracker: StalenessTracker,
    how: str,
) -> None:
    broken, healthy = exchange_jobs["collect.positions.exchange-a"], exchange_jobs["collect.positions.exchange-b"]
    assert broken().status == healthy().status == "succeeded"
    fresh_at = tracker.newest("exchange-a", "positions")
    assert fresh_at is not None

    _break(sandbox, how)
    failed = [broken() for _ in range(FAST.breaker_threshold + 1)]
    others = [healthy() for _ in range(2)]

    assert [run_row(engine, o).status for o in failed] == ["failed"] * len(failed)
    assert all(o.error and o.error.startswith("accounts: ") for o in failed)
    assert "circuit for exchange-a/accounts is open" in str(failed[-1].error)  # failed fast, no request
    assert broken.client.breaker_states()["accounts"] is BreakerState.OPEN
    assert [run_row(engine, o).status for o in others] == ["succeeded", "succeeded"]
    collection = Collection(tracker, http_clients=[(job.venue_id, job.client) for job in exchange_jobs.values()])
    collection.start()  # attaches the scrape-time gauges
    try:
        state = REGISTRY.get_sample_value
        assert state("risk_monitor_circuit_breaker_state", {"venue": "exchange-a", "endpoint": "accounts"}) == 2
        assert state("risk_monitor_circuit_breaker_state", {"venue": "exchange-b", "endpoint": "accounts"}) == 0
        assert state("risk_data_staleness_seconds", {"venue": "exchange-a", "kind": "positions"}) is not None
    finally:
        collection.close()

    now = datetime.now(UTC)
    assert tracker.newest("exchange-a", "positions") == fresh_at
    assert (tracker.age("exchange-a", "positions", now) or 0) > (tracker.age("exchange-b", "positions", now) or 0)
    later = now + timedelta(seconds=10)
    assert tracker.age("exchange-a", "positions", later) == pytest.approx((later - fresh_at).total_seconds())


# -- prices -----------------------------------------------------------------------------------------------


def latest_price(engine: Engine, symbol: str) -> Decimal:
    [(price,)] = rows(engine, "SELECT price FROM price_latest WHERE venue_id = 'market-data' AND symbol = :s", s=symbol)
    return Decimal(price)


REFRESH = timedelta(seconds=0.3)


def test_the_price_job_snapshots_the_stream_and_keeps_going_after_market_data_restarts(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, tracker: StalenessTracker, market: MarketDataClient
) -> None:
    job = CollectPrices("market-data", market, store, tracker, REFRESH)
    wait_for(lambda: len(market.snapshot()) == 4)
    first = job()
    assert (first.status, first.accepted) == ("succeeded", 4)
    assert len(rows(engine, "SELECT 1 FROM price_snapshots WHERE run_id = :r", r=run_row(engine, first).id)) == 4

    sandbox.take_down("market-data")
    wait_for(lambda: market.state is not StreamState.STREAMING)
    time.sleep(REFRESH.total_seconds() + 0.1)  # every cached price is now older than the refresh window
    down = job()
    assert down.status == "failed"
    assert "4 of 4 symbols failed" in str(down.error)
    assert tracker.newest("market-data", "prices") == first.finished_at

    sandbox.world.set_price("ETH-USDT", "2500.5")
    sandbox.bring_up("market-data")
    wait_for(lambda: market.state is StreamState.STREAMING and market.snapshot()["ETH-USDT"].price == Decimal("2500.5"))
    back = job()
    assert back.status == "succeeded"
    assert latest_price(engine, "ETH-USDT") == Decimal("2500.5")
    assert tracker.newest("market-data", "prices") == back.finished_at


def test_a_quiet_stream_is_covered_by_polling(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, tracker: StalenessTracker, market: MarketDataClient
) -> None:
    job = CollectPrices("market-data", market, store, tracker, REFRESH, symbols=("SOL-USDT", "BTC-USDT"))
    wait_for(lambda: len(market.snapshot()) == 4)
    sandbox.control("POST", "stream", {"action": "pause"})
    time.sleep(0.1)  # let an update in flight arrive
    sandbox.world.set_price("SOL-USDT", "151.25")
    time.sleep(REFRESH.total_seconds() + 0.1)
    polled_before = sandbox.hits("market-data", "GetPrice")

    outcome = job()

    assert (outcome.status, outcome.accepted) == ("succeeded", 2)
    assert sandbox.hits("market-data", "GetPrice") >= polled_before + 2  # both symbols were polled
    assert latest_price(engine, "SOL-USDT") == Decimal("151.25")


def test_a_rejected_price_update_is_stored_with_its_reason(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, tracker: StalenessTracker, market: MarketDataClient
) -> None:
    wait_for(lambda: len(market.snapshot()) == 4)
    sandbox.malform("market-data", "nan", endpoint="StreamPrices", count=1)
    wait_for(lambda: market.rejected >= 1)
    outcome = CollectPrices("market-data", market, store, tracker, REFRESH)()
    assert outcome.status == "partial"
    stored = rows(
        engine, "SELECT payload, reason FROM rejected_records WHERE run_id = :r", r=run_row(engine, outcome).id
    )
    assert [(p["price"], r) for p, r in stored] == [("nan", "price nan is not finite")]
