"""The snapshot write path against the real migrated schema."""

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from services.snapshot_store import AccountSnapshot, DuplicateBatch, Rejection, RunRecord, SnapshotStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(engine: Engine) -> SnapshotStore:
    return SnapshotStore(engine)


@pytest.fixture
def venue(store: SnapshotStore) -> str:
    venue_id = f"ex-{uuid.uuid4().hex[:8]}"
    store.ensure_venue(venue_id, "exchange", "http://127.0.0.1:1")
    return venue_id


def _run(venue: str, at: datetime, kind: str = "positions") -> RunRecord:
    return RunRecord("collect_positions", venue, kind, at - timedelta(milliseconds=40), at)


def _pos(symbol: str, qty: str, at: datetime = T0) -> tuple[object, ...]:
    return (symbol, Decimal(qty), Decimal("100"), Decimal("101"), None, at)


def _latest(engine: Engine, account_id: int) -> dict[str, Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT symbol, quantity FROM position_latest WHERE account_id = :a"), {"a": account_id}
        )
        return {str(symbol): qty for symbol, qty in rows}


def test_account_ids_are_stable_and_created_once(store: SnapshotStore, venue: str, engine: Engine) -> None:
    first = store.account_ids(venue, ["a", "b"])
    again = SnapshotStore(engine).account_ids(venue, ["b", "a", "c"])  # a fresh cache asks the database
    assert again["a"] == first["a"]
    assert again["b"] == first["b"]
    assert len(set(again.values())) == 3


def test_latest_view_shows_each_accounts_newest_batch(store: SnapshotStore, venue: str, engine: Engine) -> None:
    ids = store.account_ids(venue, ["a", "b"])
    store.write_snapshots(
        _run(venue, T0),
        T0,
        [
            AccountSnapshot(ids["a"], T0, [_pos("BTC-USDT", "1.5"), _pos("ETH-USDT", "-3")]),
            AccountSnapshot(ids["b"], T0, [_pos("BTC-USDT", "2")]),
        ],
    )
    t1 = T0 + timedelta(seconds=2)
    # Account a closed its ETH short; b had no new data in this run and keeps its previous book.
    store.write_snapshots(_run(venue, t1), t1, [AccountSnapshot(ids["a"], t1, [_pos("BTC-USDT", "1.25", t1)])])
    assert _latest(engine, ids["a"]) == {"BTC-USDT": Decimal("1.25")}
    assert _latest(engine, ids["b"]) == {"BTC-USDT": Decimal("2")}
    with engine.connect() as conn:
        history = conn.scalar(text("SELECT count(*) FROM position_snapshots WHERE account_id = :a"), {"a": ids["a"]})
    assert history == 3  # history keeps every batch


def test_an_account_whose_positions_all_closed_has_an_empty_latest_book(
    store: SnapshotStore, venue: str, engine: Engine
) -> None:
    ids = store.account_ids(venue, ["a"])
    store.write_snapshots(_run(venue, T0), T0, [AccountSnapshot(ids["a"], T0, [_pos("BTC-USDT", "1")])])
    t1 = T0 + timedelta(seconds=2)
    store.write_snapshots(_run(venue, t1), t1, [AccountSnapshot(ids["a"], t1, [])])
    assert _latest(engine, ids["a"]) == {}


def test_rejected_records_are_stored_with_payload_and_reason(store: SnapshotStore, venue: str, engine: Engine) -> None:
    ids = store.account_ids(venue, ["a"])
    bad = {"symbol": "BTC-USDT", "quantity": "NaN", "avg_price": Decimal("1.10")}
    result = store.write_snapshots(
        _run(venue, T0),
        T0,
        [AccountSnapshot(ids["a"], T0, [_pos("ETH-USDT", "4")])],
        [Rejection(bad, "quantity 'NaN' is not a finite number")],
    )
    assert (result.accepted, result.rejected, result.status) == (1, 1, "partial")
    with engine.connect() as conn:
        payload, reason, run_status = conn.execute(
            text(
                "SELECT r.payload, r.reason, c.status FROM rejected_records r"
                " JOIN collection_runs c ON c.id = r.run_id WHERE r.run_id = :run"
            ),
            {"run": result.run_id},
        ).one()
    assert payload == {"symbol": "BTC-USDT", "quantity": "NaN", "avg_price": "1.10"}
    assert reason == "quantity 'NaN' is not a finite number"
    assert run_status == "partial"
    assert _latest(engine, ids["a"]) == {"ETH-USDT": Decimal("4")}


def test_a_retried_batch_is_refused_without_duplicating(store: SnapshotStore, venue: str, engine: Engine) -> None:
    ids = store.account_ids(venue, ["a"])
    batch = [AccountSnapshot(ids["a"], T0, [_pos("BTC-USDT", "1")])]
    store.write_snapshots(_run(venue, T0), T0, batch)
    with pytest.raises(DuplicateBatch):
        store.write_snapshots(_run(venue, T0), T0, batch)
    with engine.connect() as conn:
        runs = conn.scalar(text("SELECT count(*) FROM collection_runs WHERE venue_id = :v"), {"v": venue})
        rows = conn.scalar(text("SELECT count(*) FROM position_snapshots WHERE account_id = :a"), {"a": ids["a"]})
    assert (runs, rows) == (1, 1)


def test_an_error_mid_batch_leaves_nothing(store: SnapshotStore, venue: str, engine: Engine) -> None:
    ids = store.account_ids(venue, ["a"])

    class Exploding(list[tuple[object, ...]]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield _pos("BTC-USDT", "1")
            raise RuntimeError("connection lost mid-batch")

    with pytest.raises(RuntimeError):
        store.write_snapshots(_run(venue, T0), T0, [AccountSnapshot(ids["a"], T0, Exploding())])
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM collection_runs WHERE venue_id = :v"), {"v": venue}) == 0
        assert conn.scalar(text("SELECT count(*) FROM position_snapshots WHERE account_id = :a"), {"a": ids["a"]}) == 0
        assert conn.scalar(text("SELECT count(*) FROM snapshot_heads WHERE account_id = :a"), {"a": ids["a"]}) == 0


def test_balances_and_custody_balances_have_latest_views(store: SnapshotStore, venue: str, engine: Engine) -> None:
    ids = store.account_ids(venue, ["a"])
    store.write_snapshots(
        _run(venue, T0, "balances"),
        T0,
        [AccountSnapshot(ids["a"], T0, [("USDT", Decimal("90"), Decimal("10"), Decimal("100"), T0)])],
    )
    custodian = f"cu-{uuid.uuid4().hex[:8]}"
    store.ensure_venue(custodian, "custodian")
    client = store.account_ids(custodian, ["client-1"])["client-1"]
    store.write_snapshots(
        _run(custodian, T0, "custody_balances"),
        T0,
        [AccountSnapshot(client, T0, [(ids["a"], "USDT", Decimal("99.5"), T0)])],
    )
    with engine.connect() as conn:
        total = conn.scalar(text("SELECT total FROM balance_latest WHERE account_id = :a"), {"a": ids["a"]})
        held = conn.scalar(
            text("SELECT total FROM custody_balance_latest WHERE account_id = :a AND custodian_account_id = :c"),
            {"a": ids["a"], "c": client},
        )
    assert (total, held) == (Decimal("100"), Decimal("99.5"))


def test_prices_update_latest_only_forward(store: SnapshotStore, engine: Engine) -> None:
    source = f"md-{uuid.uuid4().hex[:8]}"
    store.ensure_venue(source, "market_data")
    t1 = T0 + timedelta(seconds=1)
    store.write_prices(_run(source, t1, "prices"), t1, [("BTC-USDT", Decimal("65000.5"), None, t1)])
    t2 = T0 + timedelta(seconds=2)
    # A late price observed before the one we hold must not replace it.
    store.write_prices(_run(source, t2, "prices"), t2, [("BTC-USDT", Decimal("64000"), None, T0)])
    with engine.connect() as conn:
        price = conn.scalar(text("SELECT price FROM price_latest WHERE venue_id = :v"), {"v": source})
        history = conn.scalar(text("SELECT count(*) FROM price_snapshots WHERE venue_id = :v"), {"v": source})
    assert (price, history) == (Decimal("65000.5"), 2)


KILLED_WRITER = """
import sys, time
from datetime import UTC, datetime
from decimal import Decimal
from services import database
from services.snapshot_store import AccountSnapshot, RunRecord, SnapshotStore

url, venue, account_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

class Slow(list):
    def __iter__(self):
        for i in range(10_000_000):
            if i == 1000:
                print("copying", flush=True)
            if i >= 1000:
                time.sleep(0.001)
            yield (f"S{i}", Decimal(1), None, None, None, at)

store = SnapshotStore(database.make_engine(url))
run = RunRecord("collect_positions", venue, "positions", at, at)
store.write_snapshots(run, at, [AccountSnapshot(account_id, at, Slow())])
"""


def test_a_run_killed_mid_write_leaves_no_partial_batch(
    store: SnapshotStore, venue: str, engine: Engine, database_url: str
) -> None:
    account_id = store.account_ids(venue, ["a"])["a"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, database_url, venue, str(account_id)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "copying"  # rows are streaming into the COPY now
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    with engine.connect() as conn:
        # The server notices the dead client and rolls its transaction back.
        conn.execute(text("SELECT pg_sleep(0.2)"))
        rows = conn.scalar(text("SELECT count(*) FROM position_snapshots WHERE account_id = :a"), {"a": account_id})
        runs = conn.scalar(text("SELECT count(*) FROM collection_runs WHERE venue_id = :v"), {"v": venue})
    assert (rows, runs) == (0, 0)
