"""Symbols, P&L marks, reconciliation, settlements and price deviation on literals."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from models.risk import (
    INFINITY,
    InstrumentKind,
    PnlMarks,
    Position,
    data_age_seconds,
    drawdown,
    is_overdue,
    position_row,
    position_spec,
    price_deviation,
    price_table,
    reconcile,
    split_symbol,
    trading_day,
    unsettled_exposure,
    update_marks,
    with_mark,
)
from tests.factories import NOW, balance, custody, price, settlement

D = Decimal


@pytest.mark.parametrize("symbol", ["BTC-USDT", "BTC/USDT", "BTCUSDT", "btc_usdt", "BTC-USDT-SWAP"])
def test_symbols_split_into_base_and_quote_whatever_the_venue_spelling(symbol: str) -> None:
    assert split_symbol(symbol) == ("BTC", "USDT")


def test_a_perp_suffix_means_usd_quoted_and_option_symbols_are_refused() -> None:
    assert split_symbol("ETH-PERP") == ("ETH", "USD")
    with pytest.raises(ValueError, match="cannot split"):
        split_symbol("BTC-27JUN25-60000-C")


def test_stablecoins_are_valued_at_their_market_price_not_at_one() -> None:
    table = price_table([price("USDT-USD", "0.98"), price("BTC-USDT", "100")])
    assert table.usd["USDT"] == D("0.98")
    assert table.usd["BTC"] == D("98.00")


def test_a_missing_stablecoin_price_leaves_its_quotes_unpriced() -> None:
    table = price_table([price("BTC-USDT", "100")])
    assert "USDT" not in table.usd
    assert "BTC" not in table.usd


def test_the_newest_price_of_a_symbol_wins() -> None:
    old = price("BTC-USD", "1", at=NOW - timedelta(seconds=5))
    table = price_table([price("BTC-USD", "2"), old])
    assert table.pair_prices["BTC-USD"] == D(2)


def test_the_trading_day_starts_at_utc_midnight_plus_the_offset() -> None:
    late = datetime(2026, 3, 4, 7, 59, tzinfo=UTC)
    assert trading_day(late) == date(2026, 3, 4)
    assert trading_day(late, timedelta(hours=8)) == date(2026, 3, 3)


def test_marks_roll_the_day_start_and_keep_the_high_water_mark() -> None:
    marks = update_marks(None, D(100), NOW)
    assert marks == PnlMarks(D(100), D(100), date(2026, 3, 4))
    higher = update_marks(marks, D(120), NOW)
    assert (higher.hwm, higher.day_start_equity) == (D(120), D(100))
    next_day = update_marks(higher, D(90), NOW + timedelta(days=1))
    assert next_day == PnlMarks(D(120), D(90), date(2026, 3, 5))
    assert drawdown(next_day, D(90)) == D("0.25")


def test_an_unchanged_observation_returns_the_same_marks_object() -> None:
    marks = PnlMarks(D(100), D(100), date(2026, 3, 4))
    assert update_marks(marks, D(99), NOW) is marks
    assert update_marks(marks, D(99), NOW - timedelta(days=1)) is marks  # replayed old data


def test_reconciliation_counts_a_missing_side_as_zero_and_respects_tolerance() -> None:
    mismatches = reconcile(
        [balance("USDT", "1000"), balance("BTC", "1")],
        [custody("USDT", "1000.4"), custody("ETH", "3")],
        abs_tolerance=D("0.5"),
    )
    assert [(m.asset, m.exchange_total, m.custody_total, m.difference) for m in mismatches] == [
        ("BTC", D(1), D(0), D(-1)),
        ("ETH", D(0), D(3), D(3)),
    ]


def test_relative_tolerance_scales_with_the_larger_side() -> None:
    assert reconcile([balance("USDT", "1000")], [custody("USDT", "1001")], rel_tolerance=D("0.001")) == []
    assert len(reconcile([balance("USDT", "1000")], [custody("USDT", "1002")], rel_tolerance=D("0.001"))) == 1


def test_only_settlements_past_their_date_are_unsettled_exposure() -> None:
    due_today = settlement(due=date(2026, 3, 4))
    overdue = settlement("BTC", "-2", due=date(2026, 3, 3))
    assert not is_overdue(due_today, NOW)
    result = unsettled_exposure([due_today, overdue, settlement("XYZ", due=date(2026, 1, 1))], {"BTC": D(10)}, NOW)
    assert (result.count, result.value, result.unpriced) == (2, D(20), ("XYZ",))


def test_price_deviation_is_relative_and_a_missing_price_is_infinite() -> None:
    assert price_deviation(D("0.97"), D(1)) == D("0.03")
    assert price_deviation(None, D(1)) == INFINITY


def test_data_age_is_exact_and_never_seen_is_infinitely_old() -> None:
    assert data_age_seconds(NOW - timedelta(seconds=90, microseconds=500), NOW) == D("90.0005")
    assert data_age_seconds(None, NOW) == INFINITY
    assert data_age_seconds(NOW + timedelta(seconds=3), NOW) == D(0)


@pytest.mark.parametrize(
    "case",
    [  # symbol, kind, base, quote, quantity, avg_price, mark, realized
        ("BTC-USDT", InstrumentKind.SPOT, "", "", "1.500", "60000.10", None, None),
        ("ETH-USDT-SWAP", InstrumentKind.PERPETUAL, "", "", "-12.25", "3000", "3001.5", "-4.20"),
        ("BTC-PERP", InstrumentKind.PERPETUAL, "", "", "0", "0E-8", "1", "0"),
        ("XBTUSD", InstrumentKind.PERPETUAL, "BTC", "USD", "1E+3", "0.00001", "2", None),
    ],
)
def test_position_row_equals_the_dataclass_in_every_field(
    case: tuple[str, InstrumentKind, str, str, str, str, str | None, str | None],
) -> None:
    symbol, kind, base, quote, quantity, avg_price, mark, realized = case
    mark_price, realized_pnl = (None if x is None else D(x) for x in (mark, realized))
    built = Position(
        "venue", "venue:acc", symbol, D(quantity), D(avg_price), NOW, mark_price, realized_pnl,
        kind=kind, base=base, quote=quote,
    )  # fmt: skip
    fast = position_row(
        position_spec(symbol, kind, base, quote),
        "venue",
        "venue:acc",
        symbol,
        NOW,
        quantity=D(quantity),
        avg_price=D(avg_price),
        mark_price=mark_price,
        realized_pnl=realized_pnl,
    )
    assert fast == built
    for name in (f.name for f in fields(Position)):  # derived fields too, with their Decimal exponents
        assert repr(getattr(fast, name)) == repr(getattr(built, name)), name


def test_position_spec_rejects_what_position_rejects() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        position_spec("BTC-27JUN25-60000-C", InstrumentKind.OPTION)


@pytest.mark.parametrize("mark", [None, D("101.50"), D("1E+2")])
def test_with_mark_is_replace_sharing_the_other_values(mark: Decimal | None) -> None:
    kept = Position("v", "v:a", "ETH-USDT-SWAP", D("-2.50"), D("3000.1"), NOW, D("2999"), D("1.0"))
    later = NOW + timedelta(seconds=1)
    moved = with_mark(kept, mark, later)
    expected = replace(kept, mark_price=mark, observed_at=later)
    for name in (f.name for f in fields(Position)):
        assert repr(getattr(moved, name)) == repr(getattr(expected, name)), name
    assert moved.quantity is kept.quantity
    assert moved.cost is kept.cost
