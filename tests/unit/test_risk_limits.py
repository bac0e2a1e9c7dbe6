"""Limit validation, levels, scopes, infinite leverage, data limits and the incremental tick path."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from models.risk import (
    INFINITY,
    InstrumentKind,
    InvalidLimit,
    Level,
    LimitType,
    PositionTick,
    PriceTick,
    Scope,
    Side,
    affected_accounts,
    apply_tick,
    build_book,
    evaluate,
    evaluate_accounts,
)
from tests.factories import NOW, account, balance, limit, position, price

D = Decimal


def test_a_limit_needs_at_least_one_threshold() -> None:
    with pytest.raises(InvalidLimit, match="needs a warn or a critical"):
        limit("x")


def test_warn_above_critical_and_clear_above_warn_are_rejected() -> None:
    with pytest.raises(InvalidLimit, match="above critical") as exc:
        limit("x", warn="10", critical="5")
    assert exc.value.key == "warn"
    with pytest.raises(InvalidLimit, match="clear"):
        limit("x", warn="10", clear="11")


def test_price_deviation_requires_a_symbol_and_reference() -> None:
    with pytest.raises(InvalidLimit, match="requires"):
        limit("x", LimitType.PRICE_DEVIATION, symbol="USDT-USD", critical="0.01")


def test_filters_a_type_does_not_understand_are_rejected() -> None:
    with pytest.raises(InvalidLimit, match="does not take 'symbol'"):
        limit("x", LimitType.LEVERAGE, symbol="BTC-USDT", critical="3")


def test_clear_defaults_to_the_lowest_threshold_and_levels_breach_strictly_above() -> None:
    lim = limit("x", warn="10", critical="20")
    assert lim.clear_at == D(10)
    assert [lim.level(D(v)) for v in ("10", "10.01", "20", "20.5")] == [
        Level.OK,
        Level.WARN,
        Level.WARN,
        Level.CRITICAL,
    ]


def test_symbols_in_limits_are_canonical() -> None:
    assert limit("x", LimitType.POSITION_NOTIONAL, symbol="btcusdt", critical="1").symbol == "BTC-USDT"


BTC_USD = (price("BTC-USD", "100"),)


def _book(*positions, balances=(), accounts=(), prices=BTC_USD):  # type: ignore[no-untyped-def]
    return build_book(positions=positions, balances=balances, accounts=accounts, prices=prices)


def test_non_positive_equity_makes_leverage_infinite_and_critical() -> None:
    book = _book(position("1", symbol="BTC-USD", kind=InstrumentKind.PERPETUAL, avg="300"))  # equity −200
    [check] = evaluate(book, [limit("lev", LimitType.LEVERAGE, warn="3", critical="5")], NOW).checks
    assert (check.value, check.level) == (INFINITY, Level.CRITICAL)


def test_long_and_short_position_limits_look_at_their_own_side() -> None:
    book = _book(position("-7", symbol="BTC-USD"))
    limits = [
        limit("long", LimitType.POSITION_QUANTITY, side=Side.LONG, symbol="BTC-USD", critical="5"),
        limit("short", LimitType.POSITION_QUANTITY, side=Side.SHORT, symbol="BTC-USD", critical="5"),
    ]
    [check] = evaluate(book, limits, NOW).checks
    assert (check.limit.name, check.value, check.level) == ("short", D(7), Level.CRITICAL)


def test_per_account_limits_check_each_account_but_firm_limits_the_sum() -> None:
    book = _book(position("3", symbol="BTC-USD", account="a:1"), position("3", symbol="BTC-USD", account="b:2"))
    per_account = limit("acct", per_account=True, critical="500")
    firm = limit("firm", critical="500")
    checks = evaluate(book, [per_account, firm], NOW).checks
    assert [(c.limit.name, c.subject.scope_key, c.value) for c in checks] == [("firm", "firm", D(600))]


def test_group_and_account_scopes_only_see_their_members() -> None:
    book = _book(
        position("3", symbol="BTC-USD", account="a:1"),
        position("9", symbol="BTC-USD", account="b:2"),
        accounts=[account("a:1", groups=("g",)), account("b:2")],
    )
    group = limit("g", scope=Scope.GROUP, scope_ref="g", critical="200")
    acct = limit("b", scope=Scope.ACCOUNT, scope_ref="b:2", critical="800")
    values = {c.limit.name: c.value for c in evaluate(book, [group, acct], NOW).checks}
    assert values == {"g": D(300), "b": D(900)}


def test_ok_checks_are_emitted_only_in_the_hysteresis_band_unless_asked() -> None:
    book = _book(position("1", symbol="BTC-USD"))
    below_clear = limit("a", warn="200", critical="300", clear="150")
    in_band = limit("b", warn="200", critical="300", clear="50")
    result = evaluate(book, [below_clear, in_band], NOW)
    assert [(c.limit.name, c.level) for c in result.checks] == [("b", Level.OK)]
    assert len(evaluate(book, [below_clear, in_band], NOW, include_ok=True).checks) == 2


def test_disabled_limits_are_not_evaluated() -> None:
    book = _book(position("1", symbol="BTC-USD"))
    result = evaluate(book, [limit("off", critical="1", enabled=False)], NOW)
    assert (result.checks, result.limits) == ((), frozenset())


def test_stale_data_measures_the_newest_row_per_venue_and_kind() -> None:
    old = NOW - timedelta(seconds=400)
    book = _book(position("1", symbol="BTC-USD", at=old), position("1", symbol="BTC-USD", account="okx:2"))
    lim = limit("stale", LimitType.STALE_DATA, kind="positions", warn="60", critical="300")
    [check] = evaluate(book, [lim], NOW).checks
    assert (check.subject.venue, check.value, check.level) == ("binance", D(400), Level.CRITICAL)


def test_stale_data_for_a_venue_never_seen_is_infinite() -> None:
    lim = limit("stale", LimitType.STALE_DATA, venue="kraken", kind="balances", critical="300")
    [check] = evaluate(_book(), [lim], NOW).checks
    assert check.value == INFINITY


def test_a_price_tick_reaches_only_accounts_exposed_to_the_moved_assets() -> None:
    book = _book(
        position("1", None, symbol="BTC-USDT", account="a:1"),
        position("1", None, symbol="ETH-USD", account="b:2"),
        balances=[balance("USDT", "5", account="c:3")],
        prices=[price("BTC-USDT", "100"), price("ETH-USD", "10"), price("USDT-USD", "1")],
    )
    assert affected_accounts(book, PriceTick(price("BTC-USDT", "101"))) == {"a:1"}
    assert affected_accounts(book, PriceTick(price("USDT-USD", "0.99"))) == {"a:1", "c:3"}


def test_incremental_evaluation_matches_a_full_one_for_the_touched_account() -> None:
    book = _book(
        position("1", symbol="BTC-USD", account="a:1"),
        position("2", symbol="BTC-USD", account="b:2"),
    )
    limits = [limit("acct", per_account=True, critical="250"), limit("firm", critical="350")]
    before = evaluate(book, limits, NOW)
    tick = PositionTick(position("3", symbol="BTC-USD", account="a:1"))
    after_book = apply_tick(book, tick)
    incremental = evaluate_accounts(after_book, limits, affected_accounts(book, tick), NOW, previous=before)
    full = evaluate(after_book, limits, NOW)
    key = lambda c: (c.limit.name, c.subject.key, c.value, c.level)  # noqa: E731
    assert sorted(map(key, incremental.checks)) == sorted(map(key, full.checks))
    assert incremental.covered == {"firm", "a:1"}
    assert incremental.exposures["firm"].gross == D(500)


def test_a_zero_quantity_tick_closes_the_position() -> None:
    book = _book(position("1", symbol="BTC-USD"))
    closed = apply_tick(book, PositionTick(position("0", symbol="BTC-USD")))
    assert closed.positions["binance:acct-1"] == ()
