"""A two-account, two-venue book with a custodian and a stablecoin, computed by hand in the comments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, localcontext

import pytest

from models.risk import (
    RISK_CONTEXT,
    Evaluation,
    InstrumentKind,
    Level,
    LimitType,
    PnlMarks,
    Side,
    build_book,
    evaluate,
    summarize,
)
from models.risk.exposure import gross_by_asset, gross_by_custodian, gross_by_venue
from tests.factories import NOW, account, balance, custody, limit, position, price, settlement

A = "binance:a1"
B = "okx:b1"
D = Decimal


def book_and_limits():  # type: ignore[no-untyped-def]
    # Market: BTC-USDT 50000, ETH-USDT 2000, USDT slightly depegged at 0.999, USDC 1.
    # USD prices: USDT 0.999; BTC = 50000 × 0.999 = 49950; ETH = 2000 × 0.999 = 1998; USDC 1.
    prices = [
        price("BTC-USDT", "50000"),
        price("ETHUSDT", "2000"),
        price("USDT/USD", "0.999"),
        price("USDC-USD", "1"),
    ]
    positions = [
        # A spot long 2 BTC at market 50000: notional 2 × 50000 × 0.999 = 99900 (equity via balances).
        position("2", None, avg="40000", symbol="BTCUSDT", account=A),
        # A perp short 10 ETH avg 2100, mark 2000: notional −10 × 2000 × 0.999 = −19980,
        # unrealized = −10 × (2000 − 2100) × 0.999 = +999.
        position("-10", None, avg="2100", symbol="ETH-USDT", account=A, kind=InstrumentKind.PERPETUAL),
        # B perp long 1 BTC avg 52000, own mark 49000: notional 48951, unrealized −3000 × 0.999 = −2997.
        position("1", "49000", avg="52000", symbol="BTC-USDT", account=B, kind=InstrumentKind.PERPETUAL),
        # B spot 5 ETH on an ETH-USDC book marked 2010 by the venue: notional 5 × 2010 × 1 = 10050.
        position("5", "2010", avg="1800", symbol="ETH-USDC", account=B),
    ]
    balances = [
        balance("USDT", "50000", account=A),  # 49950
        balance("BTC", "2", account=A),  # 99900
        balance("USDC", "10000", account=B),  # 10000
        balance("ETH", "5", account=B),  # 5 × 1998 = 9990
    ]
    book = build_book(
        accounts=[account(A, custodian="copper", groups=("desk",)), account(B, groups=("desk",))],
        positions=positions,
        balances=balances,
        prices=prices,
        # Custody holds 49000 USDT against 50000 on the exchange: 1000 USDT short = 999 USD.
        custody=[custody("USDT", "49000", account=A), custody("BTC", "2", account=A)],
        settlements=[
            settlement("USDT", "3000", account=A, due=date(2026, 3, 1)),  # overdue: 3000 × 0.999 = 2997
            settlement("USDT", "5000", account=A, due=date(2026, 3, 5)),  # not yet due
        ],
        marks={"firm": PnlMarks(hwm=D(180000), day_start_equity=D(170000), trading_day=date(2026, 3, 4))},
    )
    limits = [
        limit("firm-gross", warn="150000", critical="200000"),
        limit("acct-leverage", LimitType.LEVERAGE, per_account=True, warn="3", critical="5"),
        limit("firm-daily-loss", LimitType.DAILY_LOSS, warn="2000", critical="5000"),
        limit("firm-drawdown", LimitType.DRAWDOWN, warn="0.05", critical="0.1"),
        limit(
            "eth-short",
            LimitType.POSITION_QUANTITY,
            symbol="ETH-USDT",
            side=Side.SHORT,
            warn="5",
            critical="8",
        ),
        limit("btc-long", LimitType.POSITION_QUANTITY, symbol="BTC-USDT", side=Side.LONG, warn="5", critical="8"),
        limit("eth-delta", LimitType.DELTA, asset="ETH", critical="4"),
        limit("asset-conc", LimitType.CONCENTRATION, dimension="asset", warn="0.8", critical="0.9"),
        limit("recon", LimitType.RECONCILIATION, abs_tolerance="0.01", warn="500", critical="5000"),
        limit("overdue", LimitType.UNSETTLED_EXPOSURE, warn="1000", critical="10000"),
        limit(
            "usdt-depeg",
            LimitType.PRICE_DEVIATION,
            symbol="USDT-USD",
            reference="1",
            warn="0.0005",
            critical="0.005",
        ),
    ]
    return book, limits


@pytest.fixture(scope="module")
def result() -> Evaluation:
    book, limits = book_and_limits()
    return evaluate(book, limits, NOW)


def test_account_exposures_match_the_hand_computation(result: Evaluation) -> None:
    a, b = result.exposures[A], result.exposures[B]
    # A: gross 99900 + 19980; net 99900 − 19980; equity 49950 + 99900 + 999 (perp P&L only).
    assert (a.gross, a.net, a.equity, a.unrealized_pnl) == (D(119880), D(79920), D(150849), D(999))
    # B: gross 48951 + 10050; equity 10000 + 9990 − 2997.
    assert (b.gross, b.net, b.equity, b.unrealized_pnl) == (D(59001), D(59001), D(16993), D(-2997))
    with localcontext(RISK_CONTEXT):
        assert b.leverage == D(59001) / D(16993)


def test_firm_exposures_net_across_accounts(result: Evaluation) -> None:
    firm = result.exposures["firm"]
    assert (firm.gross, firm.net, firm.equity) == (D(178881), D(138921), D(167842))
    assert gross_by_asset(firm) == {"BTC": D(148851), "ETH": D(30030)}
    assert gross_by_venue(firm) == {"binance": D(119880), "okx": D(59001)}
    assert gross_by_custodian(firm) == {"copper": D(119880), "(none)": D(59001)}


def test_firm_daily_pnl_and_drawdown_come_from_the_marks(result: Evaluation) -> None:
    summary = summarize(result, "firm")
    assert summary.daily_pnl == D(-2158)  # 167842 − 170000
    with localcontext(RISK_CONTEXT):
        assert summary.drawdown == D(12158) / D(180000)  # (180000 − 167842) / 180000


def test_every_breach_is_found_at_the_right_level(result: Evaluation) -> None:
    found = {(c.limit.name, c.subject.key): (c.value, c.level) for c in result.checks}
    with localcontext(RISK_CONTEXT):
        expected = {
            ("firm-gross", "scope=firm"): (D(178881), Level.WARN),
            ("acct-leverage", f"scope={B};account={B}"): (D(59001) / D(16993), Level.WARN),
            ("firm-daily-loss", "scope=firm"): (D(2158), Level.WARN),
            ("firm-drawdown", "scope=firm"): (D(12158) / D(180000), Level.WARN),
            ("eth-short", "scope=firm;symbol=ETH-USDT;kind=perpetual"): (D(10), Level.CRITICAL),
            ("eth-delta", "scope=firm;asset=ETH"): (D(5), Level.CRITICAL),  # |−10 + 5|
            ("asset-conc", "scope=firm"): (D(148851) / D(178881), Level.WARN),
            ("recon", f"scope={A};account={A};asset=USDT"): (D("999.000"), Level.WARN),
            ("overdue", "scope=firm"): (D("2997.000"), Level.WARN),
            ("usdt-depeg", "scope=firm;symbol=USDT-USD"): (D("0.001"), Level.WARN),
        }
    assert found == expected  # btc-long: spot 2 and perp 1 are separate instruments, both ≤ 5


def test_concentration_reports_which_asset(result: Evaluation) -> None:
    [check] = [c for c in result.checks if c.limit.name == "asset-conc"]
    assert check.detail == "asset=BTC"


def test_unchanged_marks_are_not_reported_as_changed(result: Evaluation) -> None:
    # firm equity 167842 neither raises the hwm 180000 nor starts a new day
    assert "firm" not in result.changed_marks
    # accounts and the group had no marks: their first observation becomes the marks
    assert result.changed_marks[A] == PnlMarks(D(150849), D(150849), date(2026, 3, 4))
    assert "group:desk" in result.changed_marks
