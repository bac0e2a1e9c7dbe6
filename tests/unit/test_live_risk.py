"""The in-memory risk state of the tick path: batched prices, fills, level changes with hysteresis."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from models.risk import Level, LimitType, PositionTick, PriceTick, Scope, affected_accounts, apply_tick, build_book
from services.live_risk import Fill, LiveRisk, Order, apply_fill, apply_prices
from tests.factories import NOW, account, balance, limit, position, price

A, B = "binance:a", "binance:b"


def _book():  # type: ignore[no-untyped-def]
    return build_book(
        accounts=[account(A), account(B)],
        positions=[
            position("2", px=None, account=A),
            position("-3", px=None, symbol="ETH-USDT", account=B),
            position("1", px=None, symbol="ETH-BTC", account=B),
        ],
        balances=[balance("USDT", "1000", account=A), balance("USDT", "1000", account=B)],
        prices=[price("BTC-USDT", "100"), price("ETH-USDT", "10"), price("ETH-BTC", "0.1"), price("USDT-USD", "1")],
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["BTC-USDT", "ETH-USDT", "ETH-BTC", "USDT-USD", "SOL-USDT"]), st.integers(1, 500)),
        min_size=1,
        max_size=8,
    )
)
def test_batched_prices_equal_ticks_applied_one_by_one(updates: list[tuple[str, int]]) -> None:
    book = _book()
    prices = [price(symbol, str(px), at=NOW + timedelta(seconds=i)) for i, (symbol, px) in enumerate(updates)]
    one_by_one, affected = book, set()
    for p in prices:
        affected |= affected_accounts(one_by_one, PriceTick(p))
        one_by_one = apply_tick(one_by_one, PriceTick(p))
    batched, moved = apply_prices(book, prices)
    assert batched.prices == one_by_one.prices
    assert batched.freshness == one_by_one.freshness
    # Batched may report fewer accounts: a price that moved and came back moved nobody.
    assert moved <= affected


def test_fills_move_the_average_price_only_when_adding() -> None:
    book = _book()

    def after(qty: str, px: str) -> tuple[Decimal, Decimal]:
        tick = apply_fill(book, Fill(A, "BTCUSDT", Decimal(qty), Decimal(px), position().kind, NOW))
        return tick.position.quantity, tick.position.avg_price

    assert after("2", "130") == (Decimal(4), Decimal(115))  # 2 @ 100 + 2 @ 130
    assert after("-1", "130") == (Decimal(1), Decimal(100))  # a reduction keeps the average
    assert after("-5", "130") == (Decimal(-3), Decimal(130))  # flipped short: the fill price
    assert after("-2", "130")[0] == 0  # closed


def _live(warn: str = "250", critical: str = "400", clear: str | None = "200") -> LiveRisk:
    extra = {"clear": clear} if clear else {}
    lim = limit(
        "gross", LimitType.GROSS_NOTIONAL, warn=warn, critical=critical, scope=Scope.ACCOUNT, scope_ref=A, **extra
    )
    return LiveRisk(_book(), [lim], NOW)


def _px(index: int, value: str) -> tuple[int, PriceTick]:
    return index, PriceTick(price("BTC-USDT", value, at=NOW + timedelta(seconds=index)))


def test_levels_change_with_hysteresis_like_the_alert_state_machine() -> None:
    live = _live()  # A holds 2 BTC: gross = 2 × price
    steps = [("160", None), ("210", None), ("130", Level.WARN), ("110", None), ("90", Level.OK)]
    seen = []
    for n, (px, _) in enumerate(steps):
        outcome = live.apply([_px(n, px)], NOW)
        seen.append([(c.previous, c.level) for c in outcome.changes])
    assert seen == [
        [(Level.OK, Level.WARN)],  # 320 > warn 250
        [(Level.WARN, Level.CRITICAL)],  # 420 > critical 400
        [(Level.CRITICAL, Level.WARN)],  # 260: de-escalated
        [],  # 220: ok by level, but above clear 200 -> stays warn, as an alert would
        [(Level.WARN, Level.OK)],  # 180 < clear: cleared
    ]


def test_unknown_accounts_in_ticks_are_rejected_and_the_rest_applies() -> None:
    live = _live()
    ghost = PositionTick(position("5", account="binance:ghost"))
    outcome = live.apply([(0, ghost), (1, Fill(A, "BTC-USDT", Decimal(1), Decimal(100), position().kind, NOW))], NOW)
    assert [(r.index, r.field) for r in outcome.rejected] == [(0, "account")]
    assert [p.quantity for p in live.book.positions[A]] == [Decimal(3)]


def test_check_order_changes_nothing() -> None:
    live = _live()
    before = live.book
    result = live.check_order(Order(A, "BTC-USDT", Decimal(3), Decimal(100)), NOW)
    assert not result.allowed  # 5 BTC × 100 = 500 > 400
    assert live.book is before


def test_resync_adopts_the_snapshot_positions_and_keeps_newer_tick_prices() -> None:
    live = _live()
    live.apply([_px(0, "150"), (1, Fill(A, "BTC-USDT", Decimal(1), Decimal(150), position().kind, NOW))], NOW)
    assert [p.quantity for p in live.book.positions[A]] == [Decimal(3)]  # 2 + the fill
    outcome = live.resync(_book(), NOW)  # the venue still reports 2 BTC, priced at 100 an hour earlier
    assert [p.quantity for p in live.book.positions[A]] == [Decimal(2)]
    assert live.book.prices.pair_prices["BTC-USDT"] == Decimal(150)  # the tick is newer than the snapshot
    # 3 × 150 = 450 was critical; 2 × 150 = 300 is warn: the resync reports the de-escalation.
    assert [(c.previous, c.level) for c in outcome.changes] == [(Level.CRITICAL, Level.WARN)]


def test_resync_keeps_a_position_ticked_after_the_venues_last_snapshot() -> None:
    live = _live()
    fill_at = NOW + timedelta(seconds=5)
    live.apply([_px(0, "150"), (1, Fill(A, "BTC-USDT", Decimal(1), Decimal(150), position().kind, fill_at))], fill_at)
    # The snapshot was taken before the fill (the venue poll hasn't caught up): the fill stays.
    outcome = live.resync(_book(), fill_at, positions_as_of={A: NOW, B: NOW})
    assert [p.quantity for p in live.book.positions[A]] == [Decimal(3)]
    assert outcome.changes == ()  # still critical: no resolve-and-reopen
    # A snapshot taken after the fill is authoritative again.
    live.resync(_book(), fill_at, positions_as_of={A: fill_at + timedelta(seconds=1), B: fill_at})
    assert [p.quantity for p in live.book.positions[A]] == [Decimal(2)]
