"""The text COPY of the snapshot write path through real PostgreSQL: what goes in reads back equal."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from services.copy_text import array_literal
from services.snapshot_store import PRICE_LATEST_UPSERT, AccountSnapshot, RunRecord, SnapshotStore

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
# Text a venue could send that the COPY text format must escape (or must not mistake for NULL).
AWKWARD = ["tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "", "ünïcødé €", "quote\"'"]
# Edges of NUMERIC(38, 18) and the forms str(Decimal) takes.
NUMBERS = [
    Decimal("99999999999999999999.999999999999999999"),
    Decimal("-99999999999999999999.999999999999999999"),
    Decimal("0.000000000000000001"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("1.50E-7"),
    Decimal("0E-12"),
    Decimal("123456789.123456789"),
]


@pytest.fixture
def store(engine: Engine) -> SnapshotStore:
    return SnapshotStore(engine)


def _venue(store: SnapshotStore, kind: str = "exchange") -> str:
    venue_id = f"v-{uuid.uuid4().hex[:8]}"
    store.ensure_venue(venue_id, kind)
    return venue_id


def _run(venue: str, kind: str, at: datetime) -> RunRecord:
    return RunRecord(f"collect_{kind}", venue, kind, at - timedelta(milliseconds=40), at)


def _select(engine: Engine, sql: str, **params: object) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def test_position_rows_read_back_equal(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store)
    account = store.account_ids(venue, ["a"])["a"]
    rows: list[tuple[Any, ...]] = []
    for n, symbol in enumerate(AWKWARD):
        number = NUMBERS[n % len(NUMBERS)]
        observed = (T0 - timedelta(seconds=n, microseconds=n)).astimezone(IST if n % 2 else UTC)
        rows.append((symbol, number, None if n % 3 == 0 else number.copy_negate(), Decimal(n), None, observed))
    result = store.write_snapshots(_run(venue, "positions", T0), T0, [AccountSnapshot(account, T0, rows)])
    assert (result.accepted, result.rejected, result.status) == (len(rows), 0, "succeeded")

    stored = _select(
        engine,
        "SELECT symbol, quantity, avg_price, mark_price, realized_pnl, observed_at, collected_at, run_id"
        " FROM position_snapshots WHERE account_id = :a",
        a=account,
    )
    assert sorted((r[:6] for r in stored), key=lambda r: r[0]) == sorted(rows, key=lambda r: r[0])
    assert {(r[6], r[7]) for r in stored} == {(T0, result.run_id)}


def test_balance_and_custody_rows_read_back_equal(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store)
    account = store.account_ids(venue, ["a"])["a"]
    balances = [(asset, NUMBERS[n], Decimal(0), NUMBERS[-1 - n], T0) for n, asset in enumerate(AWKWARD)]
    store.write_snapshots(_run(venue, "balances", T0), T0, [AccountSnapshot(account, T0, balances)])
    assert sorted(
        _select(
            engine,
            "SELECT asset, available, locked, total, observed_at FROM balance_snapshots WHERE account_id = :a",
            a=account,
        )
    ) == sorted(balances)

    custodian = _venue(store, "custodian")
    client = store.account_ids(custodian, ["client"])["client"]
    held = [(account, asset, NUMBERS[n], T0.astimezone(IST)) for n, asset in enumerate(AWKWARD)]
    store.write_snapshots(_run(custodian, "custody_balances", T0), T0, [AccountSnapshot(client, T0, held)])
    assert sorted(
        _select(
            engine,
            "SELECT account_id, asset, total, observed_at FROM custody_balance_snapshots"
            " WHERE custodian_account_id = :c",
            c=client,
        )
    ) == sorted(held)


def test_prices_read_back_equal_and_fill_price_latest(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store, "market_data")
    prices = [(symbol, NUMBERS[n], None if n % 2 else NUMBERS[-1 - n], T0) for n, symbol in enumerate(AWKWARD)]
    store.write_prices(_run(venue, "prices", T0), T0, prices)
    snapshot = _select(
        engine, "SELECT symbol, price, volume, observed_at FROM price_snapshots WHERE venue_id = :v", v=venue
    )
    latest = _select(engine, "SELECT symbol, price, volume, observed_at FROM price_latest WHERE venue_id = :v", v=venue)
    assert sorted(snapshot) == sorted(latest) == sorted(prices)


def test_a_venue_id_needing_escapes_is_written_too(store: SnapshotStore, engine: Engine) -> None:
    venue = f"md\t{uuid.uuid4().hex[:6]}\\ü"
    store.ensure_venue(venue, "market_data")
    store.write_prices(_run(venue, "prices", T0), T0, [("BTC-USDT", Decimal("1"), None, T0)])
    assert _select(engine, "SELECT symbol FROM price_latest WHERE venue_id = :v", v=venue) == [("BTC-USDT",)]


def test_an_unwritable_value_rejects_its_row_and_keeps_the_batch(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store)
    ids = store.account_ids(venue, ["a", "b"])
    good = ("ETH-USDT", Decimal("2"), None, None, None, T0)
    batch = [
        AccountSnapshot(ids["a"], T0, [good, ("BTC-USDT", Decimal("NaN"), None, None, None, T0)]),
        AccountSnapshot(ids["b"], T0, [good, ("SOL-USDT", Decimal("1"), Decimal("-Infinity"), None, None, T0)]),
    ]
    result = store.write_snapshots(_run(venue, "positions", T0), T0, batch)
    assert (result.accepted, result.rejected, result.status) == (2, 2, "partial")

    stored = _select(
        engine,
        "SELECT account_id, symbol FROM position_snapshots WHERE account_id IN (:a, :b) ORDER BY account_id",
        a=ids["a"],
        b=ids["b"],
    )
    assert stored == [(ids["a"], "ETH-USDT"), (ids["b"], "ETH-USDT")]
    rejected = _select(engine, "SELECT payload, reason FROM rejected_records WHERE run_id = :r", r=result.run_id)
    assert sorted((p["account_id"], p["symbol"], reason) for p, reason in rejected) == [
        (ids["a"], "BTC-USDT", "quantity NaN is not a finite number"),
        (ids["b"], "SOL-USDT", "avg_price -Infinity is not a finite number"),
    ]
    run = _select(
        engine, "SELECT status, records_accepted, records_rejected FROM collection_runs WHERE id = :r", r=result.run_id
    )
    assert run == [("partial", 2, 2)]


def test_unwritable_prices_are_rejected_and_the_rest_reach_price_latest(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store, "market_data")
    prices = [
        ("BTC-USDT", Decimal("65000"), None, T0),
        ("ETH-USDT", Decimal("sNaN"), None, T0),
        ("NUL\x00-USDT", Decimal("1"), None, T0),
        ("SOL-USDT", Decimal("150"), Decimal("Infinity"), T0),
        ("XRP-USDT", Decimal("0.5"), None, T0.replace(tzinfo=None)),
    ]
    result = store.write_prices(_run(venue, "prices", T0), T0, prices)
    assert (result.accepted, result.rejected, result.status) == (1, 4, "partial")
    assert _select(engine, "SELECT symbol, price FROM price_latest WHERE venue_id = :v", v=venue) == [
        ("BTC-USDT", Decimal("65000"))
    ]
    reasons = _select(engine, "SELECT payload, reason FROM rejected_records WHERE run_id = :r", r=result.run_id)
    assert sorted((p["symbol"], reason) for p, reason in reasons) == [
        ("ETH-USDT", "price sNaN is not a finite number"),
        ("NUL\\u0000-USDT", "symbol text 'NUL\\x00-USDT' contains a NUL character"),
        ("SOL-USDT", "volume Infinity is not a finite number"),
        ("XRP-USDT", "observed_at time 2026-03-02T09:30:00.123456 has no UTC offset"),
    ]


def test_price_latest_keeps_the_newest_observation(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store, "market_data")
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2, 3))
    store.write_prices(
        _run(venue, "prices", t1), t1, [("BTC-USDT", Decimal("100"), None, t1), ("ETH", Decimal("1"), None, t1)]
    )
    # Late data: BTC observed before what is held must not replace it; ETH's newer one must.
    store.write_prices(
        _run(venue, "prices", t2), t2, [("BTC-USDT", Decimal("90"), None, T0), ("ETH", Decimal("2"), None, t2)]
    )
    # The same observation time again replaces (ties go to the newer run), a new symbol is inserted.
    store.write_prices(
        _run(venue, "prices", t3), t3, [("BTC-USDT", Decimal("101"), None, t1), ("SOL", Decimal("3"), None, t3)]
    )
    latest = _select(
        engine,
        "SELECT symbol, price, observed_at, collected_at FROM price_latest WHERE venue_id = :v ORDER BY symbol",
        v=venue,
    )
    assert latest == [
        ("BTC-USDT", Decimal("101"), t1, t3),
        ("ETH", Decimal("2"), t2, t2),
        ("SOL", Decimal("3"), t3, t3),
    ]
    history = _select(engine, "SELECT count(*) FROM price_snapshots WHERE venue_id = :v", v=venue)
    assert history == [(6,)]


def test_price_latest_finds_the_runs_rows_by_primary_key(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store, "market_data")
    symbols = [f"S{i}" for i in range(50)]
    for s in range(20):  # earlier runs of the same day: the rows a scan would have to read
        at = T0 + timedelta(seconds=s)
        store.write_prices(_run(venue, "prices", at), at, [(x, Decimal(s), None, at) for x in symbols])
    with engine.connect() as conn:
        conn.execute(text("ANALYZE price_snapshots"))
        plan = "\n".join(
            str(row[0])
            for row in conn.execute(
                text(f"EXPLAIN (COSTS OFF) {PRICE_LATEST_UPSERT}"),
                {"symbols": array_literal(symbols), "venue": venue, "at": T0 + timedelta(seconds=19)},
            )
        )
        conn.rollback()
    scans = [line for line in plan.splitlines() if "price_snapshots" in line and "Scan" in line]
    assert scans, plan
    assert all(re.search(r"Index (Only )?Scan using \S+_pkey on", line) for line in scans), plan


def test_heads_move_forward_only(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store)
    ids = store.account_ids(venue, ["a", "b"])
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    row = ("BTC-USDT", Decimal("1"), None, None, None, T0)
    store.write_snapshots(_run(venue, "positions", t2), t2, [AccountSnapshot(ids["a"], t2.astimezone(IST), [row])])
    # An out-of-order run: moves b (new) but not a (already at t2).
    store.write_snapshots(
        _run(venue, "positions", t1), t1, [AccountSnapshot(ids["a"], t1, [row]), AccountSnapshot(ids["b"], t1, [row])]
    )
    heads = _select(
        engine,
        "SELECT account_id, collected_at, observed_at FROM snapshot_heads"
        " WHERE account_id IN (:a, :b) AND kind = 'positions' ORDER BY account_id",
        a=ids["a"],
        b=ids["b"],
    )
    assert heads == [(ids["a"], t2, t2), (ids["b"], t1, t1)]


def test_an_account_none_of_whose_rows_can_be_written_keeps_its_head(store: SnapshotStore, engine: Engine) -> None:
    venue = _venue(store)
    ids = store.account_ids(venue, ["a", "b"])
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    row = ("BTC-USDT", Decimal("1"), None, None, None, T0)
    store.write_snapshots(_run(venue, "positions", t1), t1, [AccountSnapshot(ids["a"], t1, [row])])
    unwritable = ("BTC-USDT", Decimal("NaN"), None, None, None, T0)
    result = store.write_snapshots(
        _run(venue, "positions", t2),
        t2,
        [AccountSnapshot(ids["a"], t2, [unwritable]), AccountSnapshot(ids["b"], t2, [])],  # b is flat: moves
    )
    assert (result.accepted, result.rejected) == (0, 1)
    heads = _select(
        engine,
        "SELECT account_id, collected_at FROM snapshot_heads WHERE account_id IN (:a, :b) AND kind = 'positions'"
        " ORDER BY account_id",
        a=ids["a"],
        b=ids["b"],
    )
    # a's book stays the last one written (not an empty, flat book); b's empty snapshot is a real flat book.
    assert heads == [(ids["a"], t1), (ids["b"], t2)]
