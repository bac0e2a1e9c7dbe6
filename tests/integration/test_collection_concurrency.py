"""Concurrent per-account requests within one collection run, against the sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from jobs.collect import CollectBalances, CollectPositions
from sandbox import RunningSandbox, start
from services.snapshot_store import SnapshotStore
from services.staleness import StalenessTracker
from services.venues.fan_out import FanOut
from services.venues.http import ExchangeClient, HttpPolicy

pytestmark = pytest.mark.integration

ACCOUNTS = 24
CONCURRENCY = 4
POLICY = HttpPolicy(connect_timeout=1.0, read_timeout=5.0, retries=1, backoff_factor=0.01, connections=CONCURRENCY)


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=5, accounts_per_exchange=ACCOUNTS) as running:
        yield running


@pytest.fixture
def store(engine: Engine, sandbox: RunningSandbox) -> SnapshotStore:
    store = SnapshotStore(engine)
    for venue, url in sandbox.exchange_urls.items():
        store.ensure_venue(venue, "exchange", url)
    return store


@pytest.fixture
def fan_out() -> Iterator[FanOut]:
    pool = FanOut("exchange-a", CONCURRENCY)
    yield pool
    pool.close()


def _run_rows(engine: Engine, job: str, since: datetime) -> list[tuple[str, int, int, str | None]]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT r.status, r.records_accepted, (SELECT count(DISTINCT p.account_id) FROM position_snapshots p"
                " WHERE p.run_id = r.id), r.error FROM collection_runs r WHERE r.job = :job AND r.started_at >= :since"
                " ORDER BY r.started_at"
            ),
            {"job": job, "since": since},
        )
        return [(str(s), int(a), int(n), e) for s, a, n, e in found]


def test_a_run_has_at_most_the_venue_concurrency_of_requests_in_flight_and_writes_one_batch(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, fan_out: FanOut
) -> None:
    for n in range(ACCOUNTS):
        sandbox.world.set_position("exchange-a", f"exchange-a-acc-{n + 1}", "BTC-USDT", str(n + 1), "60000")
    sandbox.slow("exchange-a", 0.2, endpoint="positions")  # long enough for the requests to overlap
    since = datetime.now(UTC)
    with ExchangeClient(sandbox.exchange_urls["exchange-a"], name="exchange-a", policy=POLICY) as client:
        job = CollectPositions("exchange-a", client, store, StalenessTracker(), fan_out=fan_out.map)
        outcome = job()

    assert outcome.status == "succeeded"
    assert sandbox.faults.hits["exchange-a", "positions"] == ACCOUNTS  # one request per account, no retry
    # Overlapping requests, never more than the bulkhead allows (a sequential run would peak at 1).
    assert 1 < sandbox.faults.peak_in_flight["exchange-a"] <= CONCURRENCY
    # One run, one batch: every account's snapshot carries this run's id.
    assert _run_rows(engine, job.id, since) == [("succeeded", ACCOUNTS, ACCOUNTS, None)]
    with engine.connect() as conn:
        quantities = dict(
            conn.execute(
                text(
                    "SELECT a.external_id, p.quantity FROM position_latest p JOIN accounts a ON a.id = p.account_id"
                    " WHERE a.venue_id = 'exchange-a' AND p.symbol = 'BTC-USDT'"
                )
            ).all()
        )
    assert {k: int(v) for k, v in quantities.items()} == {f"exchange-a-acc-{n + 1}": n + 1 for n in range(ACCOUNTS)}


def test_one_failing_account_among_concurrent_requests_costs_only_its_own_snapshot(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, fan_out: FanOut
) -> None:
    # No retries here: whichever request comes first gets the one 503, so exactly one account fails.
    sandbox.fail("exchange-a", 503, endpoint="balances", count=1)
    since = datetime.now(UTC)
    policy = replace(POLICY, retries=0)
    with ExchangeClient(sandbox.exchange_urls["exchange-a"], name="exchange-a", policy=policy) as client:
        job = CollectBalances("exchange-a", client, store, StalenessTracker(), fan_out=fan_out.map)
        outcome = job()
        # The breaker is per endpoint and saw one failed call; the next run goes through cleanly.
        assert client.breaker_states() == {"accounts": "closed", "balances": "closed"}
        again = job()

    assert outcome.status == "partial"
    assert outcome.error is not None
    assert outcome.error.startswith(f"1 of {ACCOUNTS} accounts failed: exchange-a-acc-")
    assert "HTTP 503" in outcome.error
    assert again.status == "succeeded"
    with engine.connect() as conn:
        per_run = conn.execute(
            text(
                "SELECT r.status, count(DISTINCT b.account_id) FROM collection_runs r"
                " JOIN balance_snapshots b ON b.run_id = r.id WHERE r.job = :job AND r.started_at >= :since"
                " GROUP BY r.id, r.status ORDER BY min(r.started_at)"
            ),
            {"job": job.id, "since": since},
        ).all()
    assert [(str(s), int(n)) for s, n in per_run] == [("partial", ACCOUNTS - 1), ("succeeded", ACCOUNTS)]
