"""Batched venue requests (`batch` accounts per request) against the sandbox over real HTTP.

A batched run must write exactly what a per-account run writes, in fewer requests, and keep the
per-account guarantees: a bad record is rejected with its reason, a failed request costs only its own
chunk's accounts (they keep their previous snapshot), and a failed entry only its own account.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from jobs.collect import CollectBalances, CollectCustody, CollectPositions
from sandbox import RunningSandbox, start
from services.snapshot_store import SnapshotStore
from services.staleness import StalenessTracker
from services.venues.http import CustodianClient, ExchangeClient, HttpPolicy, VenueUnavailable

pytestmark = pytest.mark.integration

ACCOUNTS = 12
BATCH = 5  # chunks of 5, 5 and 2
POLICY = HttpPolicy(connect_timeout=1.0, read_timeout=5.0, retries=0, backoff_factor=0.01)
EXCHANGES = ("exchange-a", "exchange-b")


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=11, accounts_per_exchange=ACCOUNTS) as running:
        running.world.step(10)  # some trading, so accounts hold positions and balances
        yield running


@pytest.fixture
def store(engine: Engine, sandbox: RunningSandbox) -> SnapshotStore:
    store = SnapshotStore(engine)
    for venue, url in sandbox.exchange_urls.items():
        store.ensure_venue(venue, "exchange", url)
    for venue, url in sandbox.custodian_urls.items():
        store.ensure_venue(venue, "custodian", url)
    return store


@pytest.fixture
def exchange(sandbox: RunningSandbox) -> Iterator[ExchangeClient]:
    with ExchangeClient(sandbox.exchange_urls["exchange-a"], name="exchange-a", policy=POLICY) as client:
        yield client


def _positions_of_run(engine: Engine, run_id: int) -> dict[tuple[str, str], Any]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT a.external_id, p.symbol, p.quantity, p.avg_price, p.mark_price, p.observed_at"
                " FROM position_snapshots p JOIN accounts a ON a.id = p.account_id WHERE p.run_id = :r"
            ),
            {"r": run_id},
        )
        return {(acc, sym): rest for acc, sym, *rest in found}


def _run(engine: Engine, job: str, since: datetime) -> list[tuple[int, str, str | None]]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT id, status, error FROM collection_runs WHERE job = :job AND started_at >= :since"
                " ORDER BY started_at"
            ),
            {"job": job, "since": since},
        )
        return [(int(i), str(s), e) for i, s, e in found]


def test_a_batched_run_writes_what_a_per_account_run_writes_in_fewer_requests(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, exchange: ExchangeClient
) -> None:
    since = datetime.now(UTC)
    job = CollectPositions("exchange-a", exchange, store, StalenessTracker())
    batched = CollectPositions("exchange-a", exchange, store, StalenessTracker(), batch=BATCH)
    before = sandbox.hits("exchange-a", "positions")
    assert job().status == "succeeded"
    one_each = sandbox.hits("exchange-a", "positions") - before
    assert batched().status == "succeeded"
    chunks = sandbox.hits("exchange-a", "positions") - before - one_each

    assert (one_each, chunks) == (ACCOUNTS, 3)
    (first, _, _), (second, _, _) = _run(engine, job.id, since)
    per_account, per_batch = _positions_of_run(engine, first), _positions_of_run(engine, second)
    assert len(per_account) >= ACCOUNTS  # the world traded: positions exist
    assert per_batch == per_account  # the world did not step between the runs


def test_batched_custody_writes_both_halves_for_every_client(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore
) -> None:
    since = datetime.now(UTC)
    with CustodianClient(sandbox.custodian_urls["custodian-a"], name="custodian-a", policy=POLICY) as client:
        outcomes = [
            CollectCustody("custodian-a", client, store, StalenessTracker(), EXCHANGES, batch=b)() for b in (0, 2)
        ]
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    runs = [run_id for run_id, _, _ in _run(engine, "collect.custody.custodian-a", since)]
    with engine.connect() as conn:
        contents = [
            sorted(
                conn.execute(
                    text(
                        "SELECT a.external_id, c.asset, c.account_id = c.custodian_account_id, c.total"
                        " FROM custody_balance_snapshots c JOIN accounts a ON a.id = c.account_id WHERE c.run_id = :r"
                    ),
                    {"r": run_id},
                ).all()
            )
            for run_id in runs
        ]
    assert len(contents) == 2
    assert contents[0] == contents[1]
    assert {master for _, _, master, _ in contents[1]} == {True, False}  # master and segregated rows both


def test_a_bad_record_in_a_batch_is_rejected_with_its_reason_and_the_rest_kept(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, exchange: ExchangeClient
) -> None:
    sandbox.malform("exchange-a", "nan", endpoint="balances", count=1)  # the first chunk's first record
    since = datetime.now(UTC)
    outcome = CollectBalances("exchange-a", exchange, store, StalenessTracker(), batch=BATCH)()
    assert (outcome.status, outcome.rejected, outcome.error) == ("partial", 1, None)
    [(run_id, _, _)] = _run(engine, "collect.balances.exchange-a", since)
    with engine.connect() as conn:
        [(payload, reason)] = conn.execute(
            text("SELECT payload, reason FROM rejected_records WHERE run_id = :r"), {"r": run_id}
        ).all()
        accounts = conn.execute(
            text("SELECT count(DISTINCT account_id) FROM balance_snapshots WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert reason == "exchange-a-acc-1: available 'NaN' is not finite"
    assert payload["available"] == "NaN"
    assert accounts == ACCOUNTS  # the account keeps its other balances; every other account complete


def test_a_failed_chunk_costs_only_its_accounts_which_keep_their_previous_snapshot(
    sandbox: RunningSandbox, engine: Engine, store: SnapshotStore, exchange: ExchangeClient
) -> None:
    since = datetime.now(UTC)
    job = CollectPositions("exchange-a", exchange, store, StalenessTracker(), batch=BATCH)
    assert job().status == "succeeded"
    sandbox.fail("exchange-a", 503, endpoint="positions", count=1)  # the first chunk's request, no retry
    outcome = job()

    assert outcome.status == "partial"
    assert outcome.error is not None
    assert outcome.error.startswith(f"{BATCH} of {ACCOUNTS} accounts failed: exchange-a-acc-1")
    assert "HTTP 503" in outcome.error
    (first, _, _), (second, status, _) = _run(engine, job.id, since)
    assert status == "partial"
    with engine.connect() as conn:
        latest_run = dict(
            conn.execute(
                text(
                    "SELECT DISTINCT a.external_id, p.run_id FROM position_latest p"
                    " JOIN accounts a ON a.id = p.account_id WHERE p.run_id IN (:first, :second)"
                ),
                {"first": first, "second": second},
            ).all()
        )
    failed = {f"exchange-a-acc-{n}" for n in range(1, BATCH + 1)}
    held = {acc for acc in latest_run if acc in failed}
    assert held  # the failed chunk's accounts hold positions...
    assert {latest_run[acc] for acc in held} == {first}  # ...and keep the first run's snapshot
    assert {run for acc, run in latest_run.items() if acc not in failed} == {second}


def test_an_unknown_id_fails_alone_and_an_oversized_batch_is_refused(exchange: ExchangeClient) -> None:
    got = exchange.positions_batch(["exchange-a-acc-1", "no-such-account"])
    assert list(got.results) == ["exchange-a-acc-1"]
    assert got.failures["no-such-account"].startswith("venue error:")
    with pytest.raises(VenueUnavailable, match="HTTP 400") as info:
        exchange.positions_batch([f"acc-{n}" for n in range(1001)])
    assert info.value.status == 400
