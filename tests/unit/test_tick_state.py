"""The incremental tick state gives exactly what the reference gives: after random tick sequences, every level
change (fingerprint, levels, value with its exponent), the P&L marks, account summaries and order checks
equal the straightforward path (full reference evaluation, then `reference.evaluate_accounts` on the
accounts each batch affects, then the hysteresis of `level_changes`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from riskmonitor.v1 import risk_monitor_pb2 as pb

from models.risk import (
    Check,
    InstrumentKind,
    Level,
    Limit,
    LimitType,
    PositionTick,
    PriceTick,
    RiskBook,
    Scope,
    Side,
    affected_accounts,
    apply_tick,
    build_book,
    price_table,
)
from models.risk.price_update import PricePlan
from models.risk.reference import evaluate, evaluate_accounts
from services.errors import InvalidArgumentError
from services.live_risk import Fill, LiveRisk, LiveTick, Order, apply_fill, apply_prices, level_changes
from services.rpc import ticks_convert as tc
from tests.factories import NOW, account, balance, limit, position, price

ACCOUNTS = [f"v{i % 2}:a{i}" for i in range(4)]
SYMBOLS = ["BTC-USDT", "ETH-USDT", "ETH-BTC", "SOL-USD", "USDT-USD"]
START = {"BTC-USDT": "100", "ETH-USDT": "10", "ETH-BTC": "0.1", "SOL-USD": "5", "USDT-USD": "1"}
MOVES = ["0.5", "0.9", "0.99", "1", "1.01", "1.1", "1.5", "2"]
AMOUNTS = ["0.5", "1", "2", "5", "10", "50", "100", "150", "200", "250", "300", "500", "1000", "2000"]
FRACTIONS = ["0.001", "0.01", "0.05", "0.1", "0.5"]
KINDS = [InstrumentKind.SPOT, InstrumentKind.PERPETUAL, InstrumentKind.OPTION]


@dataclass
class Oracle:
    """The tick path as it was before the incremental state: exact reference evaluation of affected accounts."""

    book: RiskBook
    limits: list[Limit]
    evaluation: Any
    levels: dict[str, tuple[Level, Check]]

    @staticmethod
    def of(book: RiskBook, limits: list[Limit]) -> Oracle:
        evaluation = evaluate(book, limits, NOW)
        levels = {c.fingerprint: (c.level, c) for c in evaluation.checks if c.level is not Level.OK}
        return Oracle(book, limits, evaluation, levels)

    def apply(self, ticks: list[LiveTick], now: Any) -> list[tuple[str, Level, Level, str | None, str]]:
        book, affected = self.book, set()
        prices = [t.price for t in ticks if isinstance(t, PriceTick)]
        if prices:
            book, moved = apply_prices(book, prices)
            affected |= moved
        for tick in ticks:
            if isinstance(tick, Fill):
                resolved = apply_fill(book, tick)
                affected |= affected_accounts(book, resolved)
                book = apply_tick(book, resolved)
        evaluation = evaluate_accounts(book, self.limits, affected, now, previous=self.evaluation)
        changes = level_changes(self.levels, evaluation)
        for ch in changes:
            if ch.level is Level.OK:
                self.levels.pop(ch.check.fingerprint, None)
            else:
                self.levels[ch.check.fingerprint] = (ch.level, ch.check)
        self.book, self.evaluation = book, evaluation
        return [_key(ch) for ch in changes]


def _key(ch: Any) -> tuple[str, Level, Level, str | None, str]:
    return (
        ch.check.fingerprint,
        ch.previous,
        ch.level,
        None if ch.value is None else str(ch.value),
        str(ch.check.value),
    )


def _thresholds(draw: Any, choices: list[str]) -> dict[str, str]:
    low, high = sorted(draw(st.lists(st.sampled_from(choices), min_size=2, max_size=2)), key=Decimal)
    out = {"warn": low, "critical": high}
    if draw(st.booleans()):
        out["clear"] = str(Decimal(low) * Decimal(draw(st.sampled_from(["0.5", "0.9", "1"]))))
    return out


@st.composite
def desks(draw: Any) -> tuple[RiskBook, list[Limit]]:
    positions, balances = [], []
    for key in ACCOUNTS:
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS[:4]), max_size=3, unique=True)):
            kind = draw(st.sampled_from(KINDS))
            own = draw(st.sampled_from([None, None, "3", "120.5"]))
            qty = draw(st.sampled_from(["-5", "-1.5", "-1", "0.5", "1", "2", "3.25"]))
            avg = draw(st.sampled_from(["0.1", "5", "10", "90", "100"]))
            positions.append(position(qty, own, avg=avg, symbol=symbol, account=key, kind=kind))
        balances.append(balance("USDT", draw(st.sampled_from(["0", "50", "200", "1000"])), account=key))
        if draw(st.booleans()):
            balances.append(balance("BTC", draw(st.sampled_from(["0.5", "2"])), account=key))
    book = build_book(
        accounts=[account(a, groups=("desk",) if i < 2 else ()) for i, a in enumerate(ACCOUNTS)],
        positions=positions,
        balances=balances,
        prices=[price(s, px) for s, px in START.items()],
    )
    each: dict[str, Any] = {"per_account": True}
    limits = [
        limit("gross", LimitType.GROSS_NOTIONAL, **each, **_thresholds(draw, AMOUNTS)),
        limit("net", LimitType.NET_NOTIONAL, **each, **_thresholds(draw, AMOUNTS)),
        limit("lev", LimitType.LEVERAGE, **each, **_thresholds(draw, ["0.1", "0.5", "1", "2", "5"])),
        limit("pos", LimitType.POSITION_NOTIONAL, **each, **_thresholds(draw, AMOUNTS)),
        limit(
            "btc", LimitType.POSITION_QUANTITY, **each, symbol="BTC-USDT", side=Side.LONG, **_thresholds(draw, AMOUNTS)
        ),
        limit("short", LimitType.POSITION_QUANTITY, **each, side=Side.SHORT, **_thresholds(draw, AMOUNTS)),
        limit("loss", LimitType.DAILY_LOSS, **each, **_thresholds(draw, AMOUNTS)),
        limit("dd", LimitType.DRAWDOWN, **each, **_thresholds(draw, FRACTIONS)),
        limit(
            "one", LimitType.GROSS_NOTIONAL, scope=Scope.ACCOUNT, scope_ref=ACCOUNTS[2], **_thresholds(draw, AMOUNTS)
        ),
        limit(
            "desk-lev", LimitType.LEVERAGE, scope=Scope.GROUP, scope_ref="desk", per_account=True, venue="v0", warn="1"
        ),
        # Not screened: the reference handlers over exact exposures (aggregates, marks of aggregates, deltas).
        limit("firm-gross", LimitType.GROSS_NOTIONAL, **_thresholds(draw, AMOUNTS)),
        limit("desk-dd", LimitType.DRAWDOWN, scope=Scope.GROUP, scope_ref="desk", **_thresholds(draw, FRACTIONS)),
        limit("delta", LimitType.DELTA, **each, **_thresholds(draw, ["0.5", "1", "2", "5"])),
        limit("stale", LimitType.STALE_DATA, critical="7200"),
    ]
    chosen = draw(st.lists(st.sampled_from(limits), min_size=1, unique_by=lambda lim: lim.name))
    return book, chosen


@st.composite
def batches(draw: Any) -> list[tuple[int, list[LiveTick]]]:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        seconds = draw(st.sampled_from([1, 60, 3600, 6 * 3600]))  # some sequences cross UTC midnight
        ticks: list[LiveTick] = []
        for _ in range(draw(st.integers(0, 4))):
            symbol = draw(st.sampled_from(SYMBOLS))
            ticks.append(PriceTick(price(symbol, draw(st.sampled_from(MOVES)))))  # a factor, applied below
        if draw(st.booleans()):
            qty = Decimal(draw(st.sampled_from(["-2", "-0.5", "1", "2.5"])))
            symbol = draw(st.sampled_from(SYMBOLS[:4]))
            kind = draw(st.sampled_from(KINDS))
            ticks.append(Fill(draw(st.sampled_from(ACCOUNTS)), symbol, qty, Decimal(START[symbol]), kind, NOW))
        out.append((seconds, ticks))
    return out


def _walk(current: dict[str, Decimal], ticks: list[LiveTick], at: Any) -> list[LiveTick]:
    """Price ticks carry a factor: turn it into the new price (observed now), so prices walk."""
    out: list[LiveTick] = []
    for tick in ticks:
        if isinstance(tick, PriceTick):
            symbol = tick.price.symbol
            current[symbol] = current[symbol] * tick.price.price
            out.append(PriceTick(price(symbol, str(current[symbol]), at=at)))
        else:
            assert isinstance(tick, Fill)
            out.append(replace(tick, observed_at=at))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(desks(), batches(), st.sampled_from(ACCOUNTS), st.sampled_from(SYMBOLS[:4]), st.sampled_from(["-3", "0.5", "4"]))
def test_random_tick_sequences_give_exactly_the_reference_levels_values_and_marks(
    desk: tuple[RiskBook, list[Limit]], sequence: list[tuple[int, list[LiveTick]]], who: str, what: str, qty: str
) -> None:
    book, limits = desk
    # Fills and prices come after the batch's price ticks in the oracle: keep that order in the live batch too.
    live, oracle = LiveRisk(book, limits, NOW), Oracle.of(book, limits)
    current = {s: Decimal(px) for s, px in START.items()}
    now = NOW
    for seconds, raw in sequence:
        now += timedelta(seconds=seconds)
        ticks = _walk(current, raw, now)
        ordered = [t for t in ticks if isinstance(t, PriceTick)] + [t for t in ticks if not isinstance(t, PriceTick)]
        outcome = live.apply(list(enumerate(ordered)), now)
        assert [_key(ch) for ch in outcome.changes] == oracle.apply(ordered, now)
        assert outcome.data_at == now
        marks = oracle.evaluation.marks
        assert {k: str(m) for k, m in live._state.marks.items()} == {k: str(m) for k, m in marks.items()}
    assert live.book.prices == oracle.book.prices
    _same_reads(live, oracle, Order(who, what, Decimal(qty), Decimal("100")), now)


def _same_reads(live: LiveRisk, oracle: Oracle, order: Order, now: Any) -> None:
    """GetRiskSummary's figures and CheckOrder's impacts equal the reference's."""
    book, evaluation = oracle.book, oracle.evaluation
    for key in ACCOUNTS:
        risk = live.summary(key)
        full = evaluate_accounts(book, oracle.limits, {key}, evaluation.at, previous=evaluation, include_ok=True)
        mine = [c for c in full.checks if key in (c.subject.account, c.subject.scope_key)]
        assert [(c.fingerprint, str(c.value), c.level) for c in risk.checks] == [
            (c.fingerprint, str(c.value), c.level) for c in mine
        ]
        assert str(risk.exposure) == str(full.exposures[key])
        assert str(risk.marks) == str(full.marks.get(key))
    tick = apply_fill(book, Fill(order.account, order.symbol, order.signed_quantity, order.price, order.kind, now))
    after_book = apply_tick(book, PositionTick(tick.position))
    before = evaluate_accounts(book, oracle.limits, {order.account}, now, previous=evaluation, include_ok=True)
    after = evaluate_accounts(after_book, oracle.limits, {order.account}, now, previous=evaluation, include_ok=True)
    old = {c.fingerprint: c for c in before.checks}
    expected = [
        (c.fingerprint, str(c.value), None if c.fingerprint not in old else str(old[c.fingerprint].value))
        for c in after.checks
        if c.subject.account in (order.account, None)
        and (c.fingerprint not in old or old[c.fingerprint].value != c.value)
        # A hypothetical order is not data: unlike the old copy-the-book check, it leaves data age alone.
        and c.limit.type is not LimitType.STALE_DATA
    ]
    got = live.check_order(order, now)
    assert [(a.fingerprint, str(a.value), None if b is None else str(b.value)) for b, a in got.impacts] == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*SYMBOLS, "ADA-ETH", "XRP-USDC"]), st.sampled_from(MOVES)), max_size=12))
def test_the_incremental_price_table_equals_a_rebuilt_one(updates: list[tuple[str, str]]) -> None:
    table = price_table([price(s, px) for s, px in START.items()])
    plan = PricePlan.of(table)
    for n, (symbol, px) in enumerate(updates):
        at = NOW + timedelta(seconds=n % 3)  # equal times too: the later observation wins, as in price_table
        new = price(symbol, px, at=at)
        expected = price_table([*table.latest.values(), new])
        plan, moves = plan.update(table, [new])
        got = moves.table
        assert (got.pair_prices, got.usd, got.mark_usd, got.latest) == (
            expected.pair_prices,
            expected.usd,
            expected.mark_usd,
            expected.latest,
        )
        assert [(k, str(v)) for k, v in got.usd.items()] == [(k, str(v)) for k, v in expected.usd.items()]
        assert [(k, str(v)) for k, v in got.mark_usd.items()] == [(k, str(v)) for k, v in expected.mark_usd.items()]
        assert moves.assets == {a for a in expected.usd if expected.usd[a] != table.usd.get(a)}
        assert moves.pairs == {k for k in expected.mark_usd if expected.mark_usd[k] != table.mark_usd.get(k)}
        table = got


def test_a_batch_far_from_every_threshold_confirms_no_account_exactly() -> None:
    """The point of the screen: prices that keep every subject in its zone cost no exact evaluation."""
    book = build_book(
        accounts=[account(a) for a in ACCOUNTS],
        positions=[position("1", None, account=a) for a in ACCOUNTS],
        balances=[balance("USDT", "1000", account=a) for a in ACCOUNTS],
        prices=[price(s, px) for s, px in START.items()],
    )
    gross = limit("gross", LimitType.GROSS_NOTIONAL, per_account=True, warn="150", critical="200")
    live = LiveRisk(book, [gross], NOW)
    outcome = live.apply([(0, PriceTick(price("BTC-USDT", "101", at=NOW)))], NOW)
    assert (outcome.changes, outcome.accounts_evaluated, live.confirmed) == ((), 4, 0)
    outcome = live.apply([(0, PriceTick(price("BTC-USDT", "151", at=NOW)))], NOW)  # 151 > warn: all four
    assert [(c.level, str(c.value)) for c in outcome.changes] == [(Level.WARN, "151")] * 4
    assert live.confirmed == 4


_PB_TICKS = st.one_of(
    st.builds(
        lambda s, px, src: pb.Tick(price=pb.PriceUpdate(symbol=s, price=px, source=src)),
        st.sampled_from(["BTC-USDT", "BTCUSDT", "ETH-USDT", "USDT-USD", "??"]),
        st.sampled_from(["90", "100", "100.0", "110", "-1", "x"]),
        st.sampled_from(["", "md", "other"]),
    ),
    st.builds(
        lambda a, q: pb.Tick(
            fill=pb.Fill(account=a, symbol="BTC-USDT", side=pb.ORDER_SIDE_BUY, quantity=q, price="100")
        ),
        st.sampled_from([ACCOUNTS[0], "nobody"]),
        st.sampled_from(["1", "0"]),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_PB_TICKS, max_size=14))
def test_a_converted_batch_applies_exactly_like_every_tick_one_by_one(ticks: list[pb.Tick]) -> None:
    """The conversion keeps only the newest price per (source, symbol) of a run: the same state and changes
    as converting every tick, and the same errors."""
    book = build_book(
        accounts=[account(ACCOUNTS[0])],
        positions=[position("1", None, account=ACCOUNTS[0])],
        balances=[balance("USDT", "1000", account=ACCOUNTS[0])],
        prices=[price(s, px) for s, px in START.items()],
    )
    gross = limit("gross", LimitType.GROSS_NOTIONAL, per_account=True, warn="95", critical="105")
    every, every_errors = [], []
    for index, tick in enumerate(ticks):
        try:
            every.append((index, tc._tick(tick, NOW)))
        except InvalidArgumentError as exc:
            every_errors.append((index, str(exc)))
    reduced, errors = tc.ticks_from_pb(ticks, NOW)
    assert [(e.index, e.reason) for e in errors] == every_errors
    one, other = LiveRisk(book, [gross], NOW), LiveRisk(book, [gross], NOW)
    assert [_key(c) for c in one.apply(reduced, NOW).changes] == [_key(c) for c in other.apply(every, NOW).changes]
    assert one.book.prices == other.book.prices
    assert one.book.positions == other.book.positions


def test_a_book_beyond_the_float_screen_is_evaluated_exactly_all_the_same() -> None:
    """A value no float can bound (here 1e200 units) sends every batch down the specification directly."""
    book = build_book(
        accounts=[account(a) for a in ACCOUNTS],
        positions=[position("1e200" if a == ACCOUNTS[0] else "1", None, account=a) for a in ACCOUNTS],
        balances=[balance("USDT", "1000", account=a) for a in ACCOUNTS],
        prices=[price(s, px) for s, px in START.items()],
    )
    gross = limit("gross", LimitType.GROSS_NOTIONAL, per_account=True, warn="150", critical="200")
    live, oracle = LiveRisk(book, [gross], NOW), Oracle.of(book, [gross])
    assert live._state._index is None
    for n, px in enumerate(["160", "210", "90", "1e-190"], 1):
        ticks: list[LiveTick] = [PriceTick(price("BTC-USDT", px, at=NOW + timedelta(seconds=n)))]
        outcome = live.apply(list(enumerate(ticks)), NOW)
        assert [_key(ch) for ch in outcome.changes] == oracle.apply(ticks, NOW)
    assert live.confirmed == len(ACCOUNTS)
