"""The fast evaluation (float screen + exact confirm) agrees exactly with the reference evaluation.

Books are random; thresholds are taken from the values the reference computes, exactly, or one unit in the
28th digit either side (`next_minus`/`next_plus`), so subjects sit on and around every clear, warn and
critical threshold the screen has to get right.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.risk import (
    RISK_CONTEXT,
    Evaluation,
    InstrumentKind,
    Limit,
    LimitType,
    PnlMarks,
    Scope,
    Side,
    build_book,
    evaluate,
    reference,
)
from models.risk.fast import fold
from tests.factories import NOW, account, balance, custody, limit, position, price, settlement

D = Decimal
ACCOUNTS = ["binance:a", "okx:b", "okx:c", "bybit:d"]
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USD", "XRP-EUR", "ETH-USDC"]  # EUR has no USD price: unpriced

amounts = st.decimals(min_value=-500, max_value=500, places=3, allow_nan=False, allow_infinity=False)
prices_ = st.decimals(min_value="0.0001", max_value=70000, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def books(draw: Any) -> Any:
    prices = [
        price("BTC-USDT", str(draw(prices_))),
        price("ETH-USDT", str(draw(prices_))),
        price("SOL-USD", str(draw(prices_))),
        price("USDT-USD", str(draw(st.sampled_from(["1", "0.9997", "1.0003", "0.123456789"])))),
    ]
    if draw(st.booleans()):
        prices.append(price("USDC-USD", "1.0001"))
    positions = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(list(InstrumentKind)))
        own_mark = draw(st.booleans())
        positions.append(
            position(
                str(draw(amounts)),
                str(draw(prices_)) if own_mark else None,
                avg=str(draw(prices_)),
                symbol=draw(st.sampled_from(SYMBOLS)),
                account=draw(st.sampled_from(ACCOUNTS)),
                kind=kind,
                multiplier=draw(st.sampled_from(["1", "0.1", "10"])),
                delta=draw(st.sampled_from([None, "0.5", "-0.25"])) if kind is InstrumentKind.OPTION else None,
            )
        )
    balances = [
        balance(
            draw(st.sampled_from(["USDT", "BTC", "EUR", "USDC", "ETH"])),
            str(draw(amounts)),
            account=draw(st.sampled_from(ACCOUNTS)),
        )
        for _ in range(draw(st.integers(0, 8)))
    ]
    metas = [
        account(ACCOUNTS[0], custodian="copper", groups=("desk",)),
        account(ACCOUNTS[1], groups=("desk", "arb")),
        account(ACCOUNTS[2], custodian="bitgo", groups=("arb",)),
        account(ACCOUNTS[3]),
    ]
    custodies = [
        custody(draw(st.sampled_from(["USDT", "BTC", "EUR"])), str(draw(amounts)), account=ACCOUNTS[i])
        for i in draw(st.lists(st.sampled_from([0, 2]), max_size=3))
    ]
    settlements = [settlement("USDT", str(draw(amounts)), account=ACCOUNTS[0], due=date(2026, 3, 1))]
    return {
        "accounts": metas,
        "positions": positions,
        "balances": balances,
        "prices": prices,
        "custody": custodies,
        "settlements": settlements,
    }


PROBES: list[tuple[LimitType, dict[str, Any]]] = [
    (LimitType.GROSS_NOTIONAL, {"per_account": True}),
    (LimitType.GROSS_NOTIONAL, {}),
    (LimitType.GROSS_NOTIONAL, {"scope": Scope.GROUP, "scope_ref": "arb"}),
    (LimitType.GROSS_NOTIONAL, {"asset": "BTC"}),
    (LimitType.NET_NOTIONAL, {"per_account": True}),
    (LimitType.NET_NOTIONAL, {"venue": "okx"}),
    (LimitType.LEVERAGE, {"per_account": True}),
    (LimitType.LEVERAGE, {"scope": Scope.GROUP, "scope_ref": "desk"}),
    (LimitType.LEVERAGE, {}),
    (LimitType.DAILY_LOSS, {"per_account": True}),
    (LimitType.DAILY_LOSS, {}),
    (LimitType.DAILY_LOSS, {"scope": Scope.GROUP, "scope_ref": "arb"}),
    (LimitType.LEVERAGE, {"venue": "okx", "per_account": True}),
    (LimitType.DRAWDOWN, {"per_account": True}),
    (LimitType.DRAWDOWN, {"scope": Scope.GROUP, "scope_ref": "desk"}),
    (LimitType.POSITION_QUANTITY, {"per_account": True, "side": Side.LONG}),
    (LimitType.POSITION_QUANTITY, {"per_account": True, "side": Side.SHORT, "symbol": "ETH-USDT"}),
    (LimitType.POSITION_QUANTITY, {"side": Side.LONG}),
    (LimitType.POSITION_NOTIONAL, {"per_account": True}),
    (LimitType.POSITION_NOTIONAL, {"scope": Scope.ACCOUNT, "scope_ref": ACCOUNTS[1], "kind": "perpetual"}),
    (LimitType.DELTA, {}),
    (LimitType.DELTA, {"scope": Scope.GROUP, "scope_ref": "arb", "asset": "ETH"}),
    (LimitType.DELTA, {"per_account": True}),
    (LimitType.CONCENTRATION, {"dimension": "asset"}),
    (LimitType.CONCENTRATION, {"dimension": "venue", "scope": Scope.GROUP, "scope_ref": "arb"}),
    (LimitType.CONCENTRATION, {"dimension": "custodian"}),
    (LimitType.RECONCILIATION, {"abs_tolerance": "0.01"}),
    (LimitType.UNSETTLED_EXPOSURE, {}),
    (LimitType.UNSETTLED_EXPOSURE, {"per_account": True}),
    (LimitType.STALE_DATA, {"kind": "positions"}),
]
FRACTIONS = {LimitType.DRAWDOWN, LimitType.CONCENTRATION}


def _values(book: Any, marks: dict[str, PnlMarks]) -> dict[int, list[Decimal]]:
    """Every finite positive value each probe takes on this book (the reference, listing every subject)."""
    tiny = [limit(f"p{i}", kind, critical="1E-30", **extra) for i, (kind, extra) in enumerate(PROBES)]
    found: dict[int, list[Decimal]] = {i: [] for i in range(len(PROBES))}
    for check in reference.evaluate(build_book(**book, marks=marks), tiny, NOW, include_ok=True).checks:
        if check.value.is_finite() and check.value > 0:
            found[int(check.limit.name[1:])].append(check.value)
    return found


def _near(draw: Any, value: Decimal) -> Decimal:
    with localcontext(RISK_CONTEXT):
        return draw(st.sampled_from([value, value.next_minus(), value.next_plus()]))  # type: ignore[no-any-return]


@st.composite
def scenarios(draw: Any) -> tuple[Any, dict[str, PnlMarks], list[Limit]]:
    book = draw(books())
    marks: dict[str, PnlMarks] = {}
    for key in [*ACCOUNTS, "group:desk", "group:arb", "firm"]:
        choice = draw(st.sampled_from(["none", "today", "yesterday"]))
        if choice != "none":
            hwm = D(draw(st.integers(-1000, 200_000)))
            day = NOW.date() if choice == "today" else NOW.date() - timedelta(days=1)
            marks[key] = PnlMarks(hwm=hwm, day_start_equity=hwm - draw(st.integers(-500, 5000)), trading_day=day)
    values = _values(book, marks)
    limits = []
    for i, (kind, extra) in enumerate(PROBES):
        seen = values[i]
        if seen and draw(st.booleans()):  # thresholds on (or an ulp around) values that actually occur
            picks = sorted(_near(draw, draw(st.sampled_from(seen))) for _ in range(3))
        else:
            picks = sorted(D(draw(st.sampled_from(["0.001", "0.5", "3", "100", "25000", "1E+6"]))) for _ in range(3))
        if kind in FRACTIONS:
            picks = [min(p, D(1)) for p in picks]
        clear, warn, critical = picks
        fields: dict[str, Any] = {k: (D(v) if k == "abs_tolerance" else v) for k, v in extra.items()}
        limits.append(Limit(f"l{i}", kind, warn=warn, critical=critical, clear=clear, **fields))
    return book, marks, limits


def _key(evaluation: Evaluation) -> list[tuple[Any, ...]]:
    return [(c.limit.name, c.subject, c.level, c.value.as_tuple(), c.detail) for c in evaluation.checks]


def _assert_same(fast: Evaluation, ref: Evaluation) -> None:
    assert _key(fast) == _key(ref)
    assert (fast.covered, fast.limits) == (ref.covered, ref.limits)
    assert set(fast.changed_marks) == set(ref.changed_marks)  # the reference folds a frozenset: no order
    for key, marks in ref.changed_marks.items():
        got = fast.changed_marks[key]
        assert (got.hwm.as_tuple(), got.day_start_equity.as_tuple(), got.trading_day) == (
            marks.hwm.as_tuple(),
            marks.day_start_equity.as_tuple(),
            marks.trading_day,
        )
    assert dict(fast.marks) == dict(ref.marks)
    assert list(fast.exposures) == list(ref.exposures)
    for key, exposure in ref.exposures.items():
        got = fast.exposures[key]
        assert got == exposure
        assert (got.gross.as_tuple(), got.equity.as_tuple()) == (exposure.gross.as_tuple(), exposure.equity.as_tuple())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_fast_evaluation_equals_the_reference(scenario: Any) -> None:
    book_fields, marks, limits = scenario
    book = build_book(**book_fields, marks=marks)
    fast = evaluate(book, limits, NOW)
    assert type(fast.exposures) is not dict  # the fast path ran (it keeps exact figures lazy)
    _assert_same(fast, reference.evaluate(build_book(**book_fields, marks=marks), limits, NOW))


def test_unpriced_books_and_empty_books_agree() -> None:
    book = build_book(positions=[position("1", None, symbol="XRP-EUR")], balances=[balance("EUR", "5")])
    limits = [limit("g", per_account=True, critical="1"), limit("lev", LimitType.LEVERAGE, critical="1")]
    _assert_same(evaluate(book, limits, NOW), reference.evaluate(book, limits, NOW))
    _assert_same(evaluate(build_book(), limits, NOW), reference.evaluate(build_book(), limits, NOW))


def test_fold_is_the_left_to_right_running_sum_even_where_28_digits_round() -> None:
    values = [D("1E+27"), D("0.4"), D("0.4"), D("-1E+27"), D("1.5"), D("0.00001")]
    with localcontext(RISK_CONTEXT):
        running = D(0)
        for v in values[:4]:
            running += v
        out = fold(np.array(values, dtype=object), np.array([0, 0, 0, 0, 2, 2]), 3)
    assert [v.as_tuple() for v in out] == [
        running.as_tuple(),
        D(0).as_tuple(),
        (D(0) + D("1.5") + D("0.00001")).as_tuple(),
    ]
    assert running == 0  # 1E+27 + 0.4 rounds the 0.4 away: a pairwise sum would give 1 (0.8 survives rounding)


def test_values_beyond_the_float_screen_fall_back_to_the_reference() -> None:
    book = build_book(positions=[position("1E+200", "1", symbol="BTC-USD")])
    limits = [limit("g", critical="1")]
    result = evaluate(book, limits, NOW)
    assert _key(result) == _key(reference.evaluate(book, limits, NOW))
    assert type(result.exposures) is dict
