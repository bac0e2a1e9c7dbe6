"""Pure compute time of a full limit evaluation: 10k accounts × 10 positions × 20 limits (best of N).

Run: python benchmarks/evaluate_compute.py [accounts] [repeats]. Building the book is not timed; the
figure is `evaluate(book, limits, now)` only, the part a job runs every cycle.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from models.risk import (
    AccountMeta,
    Balance,
    CustodyBalance,
    Dimension,
    InstrumentKind,
    Limit,
    LimitType,
    PendingSettlement,
    Position,
    Price,
    Scope,
    Side,
    build_book,
    evaluate,
)

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "LINK", "DOT", "LTC", "BNB", "TRX"]
VENUES = ["binance", "okx", "bybit", "deribit"]


def d(x: float | int | str) -> Decimal:
    return Decimal(str(x))


def synthetic_book(accounts: int, rng: random.Random):  # type: ignore[no-untyped-def]
    prices = [Price(f"{b}-USDT", d(round(rng.uniform(1, 60000), 2)), NOW, "md") for b in BASES]
    prices += [Price("USDT-USD", d("0.9998"), NOW, "md"), Price("USDC-USD", d("1.0001"), NOW, "md")]
    metas, positions, balances, custody, settlements = [], [], [], [], []
    for i in range(accounts):
        venue = VENUES[i % len(VENUES)]
        key = f"{venue}:acct-{i}"
        metas.append(AccountMeta(key, venue, "copper" if i % 3 == 0 else None, frozenset({f"desk-{i % 20}"})))
        for base in rng.sample(BASES, 10):
            kind = InstrumentKind.PERPETUAL if rng.random() < 0.5 else InstrumentKind.SPOT
            qty = (
                d(round(rng.uniform(-50, 50), 3))
                if kind is InstrumentKind.PERPETUAL
                else d(round(rng.uniform(0, 50), 3))
            )
            positions.append(
                Position(venue, key, f"{base}USDT", qty, d(round(rng.uniform(1, 60000), 2)), NOW, kind=kind)
            )
        balances.append(Balance(venue, key, "USDT", d(1_000_000), d(0), d(1_000_000), NOW))
        balances.append(Balance(venue, key, "BTC", d(2), d(0), d(2), NOW))
        if i % 3 == 0:
            custody.append(CustodyBalance("copper", venue, key, "USDT", d(1_000_000), NOW))
        if i % 50 == 0:
            settlements.append(PendingSettlement(f"s{i}", key, "USDT", d(1000), NOW, (NOW - timedelta(days=2)).date()))
    return build_book(
        accounts=metas,
        positions=positions,
        balances=balances,
        prices=prices,
        custody=custody,
        settlements=settlements,
    )


LIMITS = [
    Limit("firm-gross", LimitType.GROSS_NOTIONAL, warn=d("1e12"), critical=d("2e12")),
    Limit("firm-net", LimitType.NET_NOTIONAL, warn=d("1e11"), critical=d("2e11")),
    Limit("firm-daily-loss", LimitType.DAILY_LOSS, warn=d("1e6"), critical=d("5e6")),
    Limit("firm-drawdown", LimitType.DRAWDOWN, warn=d("0.1"), critical=d("0.2")),
    Limit("firm-btc-delta", LimitType.DELTA, asset="BTC", warn=d("5000"), critical=d("10000")),
    Limit(
        "firm-asset-conc",
        LimitType.CONCENTRATION,
        dimension=Dimension.ASSET,
        warn=d("0.5"),
        critical=d("0.7"),
    ),
    Limit(
        "firm-venue-conc",
        LimitType.CONCENTRATION,
        dimension=Dimension.VENUE,
        warn=d("0.5"),
        critical=d("0.7"),
    ),
    Limit("acct-leverage", LimitType.LEVERAGE, per_account=True, warn=d("3"), critical=d("5")),
    Limit("acct-gross", LimitType.GROSS_NOTIONAL, per_account=True, warn=d("5e6"), critical=d("1e7")),
    Limit("acct-daily-loss", LimitType.DAILY_LOSS, per_account=True, warn=d("1e5"), critical=d("2e5")),
    Limit("acct-drawdown", LimitType.DRAWDOWN, per_account=True, warn=d("0.2"), critical=d("0.3")),
    Limit(
        "acct-btc-long",
        LimitType.POSITION_QUANTITY,
        per_account=True,
        symbol="BTC-USDT",
        side=Side.LONG,
        warn=d("40"),
        critical=d("49"),
    ),
    Limit(
        "acct-eth-short",
        LimitType.POSITION_QUANTITY,
        per_account=True,
        symbol="ETH-USDT",
        side=Side.SHORT,
        warn=d("40"),
        critical=d("49"),
    ),
    Limit("acct-pos-notional", LimitType.POSITION_NOTIONAL, per_account=True, warn=d("2e6"), critical=d("3e6")),
    Limit(
        "desk-gross",
        LimitType.GROSS_NOTIONAL,
        scope=Scope.GROUP,
        scope_ref="desk-1",
        warn=d("1e10"),
        critical=d("2e10"),
    ),
    Limit(
        "desk-leverage",
        LimitType.LEVERAGE,
        scope=Scope.GROUP,
        scope_ref="desk-2",
        warn=d("3"),
        critical=d("5"),
    ),
    Limit("stale-positions", LimitType.STALE_DATA, kind="positions", warn=d("60"), critical=d("300")),
    Limit(
        "usdt-depeg",
        LimitType.PRICE_DEVIATION,
        symbol="USDT-USD",
        reference=d(1),
        warn=d("0.005"),
        critical=d("0.02"),
    ),
    Limit(
        "custody-recon",
        LimitType.RECONCILIATION,
        abs_tolerance=d("0.01"),
        warn=d("1000"),
        critical=d("10000"),
    ),
    Limit("unsettled", LimitType.UNSETTLED_EXPOSURE, warn=d("1e5"), critical=d("1e6")),
]


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    book = synthetic_book(accounts, random.Random(7))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = evaluate(book, LIMITS, NOW)
        times.append(time.perf_counter() - start)
    positions = sum(len(p) for p in book.positions.values())
    start = time.perf_counter()
    for _ in range(1_000_000):
        pass
    loop_ms = (time.perf_counter() - start) * 1000
    print(
        f"{accounts} accounts, {positions} positions, {len(LIMITS)} limits: "
        f"best {min(times) * 1000:.1f} ms, median {sorted(times)[len(times) // 2] * 1000:.1f} ms "
        f"({len(result.checks)} checks emitted, {len(result.changed_marks)} marks changed); "
        f"machine calibration: empty 1M-iteration loop {loop_ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
