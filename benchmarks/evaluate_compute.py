"""Pure compute time of a full limit evaluation: 10k accounts × 10 positions × 20 limits (best of N).

Run: python benchmarks/evaluate_compute.py [accounts] [repeats]. Building the book is timed separately;
the headline figure is `evaluate(book, limits, now)`, the part a job runs every cycle. Printed, all from
the same run and interleaved so machine load hits every variant alike:

- reference: `models.risk.reference.evaluate`, the straightforward exact path (the old `evaluate`);
- fast, cold: `evaluate` on a book whose price-independent index isn't built yet (a freshly built book);
- fast, warm: `evaluate` after a price tick (index reused; the exact figures of accounts the moved price
  touches are recomputed, ~5/6 of them here: BTC is in 10 of each account's 12 possible bases);
- fast, steady: `evaluate` of the same book again (what a pass over unchanged snapshots and prices costs:
  index and every exact figure reused);
- fast + materialise: warm, then reading every exposure and every changed mark (what a caller that
  persists all of them pays; `Evaluation.exposures` and the new marks are computed on first access).

The fast result is checked against the reference (same checks, equal values) before timing.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
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
    PriceTick,
    RiskBook,
    Scope,
    Side,
    apply_tick,
    build_book,
    evaluate,
    reference,
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


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _materialise(book: RiskBook) -> None:
    result = evaluate(book, LIMITS, NOW)
    for exposure in result.exposures.values():
        _ = exposure.gross
    for marks in result.changed_marks.values():
        _ = marks.hwm


def _ticked(book: RiskBook, step: int) -> RiskBook:
    """The book after a BTC price tick: same positions (index reused), new prices."""
    btc = book.prices.latest["BTC-USDT"]
    moved = replace(btc, price=btc.price + Decimal(step) / 100)
    return apply_tick(book, PriceTick(moved))


def _same(fast_checks: tuple, ref_checks: tuple) -> bool:  # type: ignore[type-arg]
    key = lambda c: (c.limit.name, c.subject, c.level, c.value.as_tuple(), c.detail)  # noqa: E731
    return [key(c) for c in fast_checks] == [key(c) for c in ref_checks]


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    start = time.perf_counter()
    book = synthetic_book(accounts, random.Random(7))
    build_s = time.perf_counter() - start
    result = evaluate(book, LIMITS, NOW)
    expected = reference.evaluate(book, LIMITS, NOW)
    if not _same(result.checks, expected.checks):
        raise SystemExit("fast and reference evaluations disagree")
    ticked = [_ticked(book, i + 1) for i in range(repeats)]
    times: dict[str, list[float]] = {
        "reference": [],
        "fast, cold": [],
        "fast, warm": [],
        "fast, steady": [],
        "fast + materialise": [],
    }
    for i in range(repeats):
        times["reference"].append(_timed(lambda: reference.evaluate(book, LIMITS, NOW)))
        book.index_cache.clear()
        times["fast, cold"].append(_timed(lambda: evaluate(book, LIMITS, NOW)))
        times["fast, warm"].append(_timed(lambda: evaluate(ticked[i], LIMITS, NOW)))  # noqa: B023
        times["fast, steady"].append(_timed(lambda: evaluate(ticked[i], LIMITS, NOW)))  # noqa: B023
        times["fast + materialise"].append(_timed(lambda: _materialise(ticked[i])))  # noqa: B023
    positions = sum(len(p) for p in book.positions.values())
    start = time.perf_counter()
    for _ in range(1_000_000):
        pass
    loop_ms = (time.perf_counter() - start) * 1000
    print(
        f"{accounts} accounts, {positions} positions, {len(LIMITS)} limits "
        f"({len(result.checks)} checks emitted, {len(result.changed_marks)} marks changed; "
        f"build_book {build_s * 1000:.0f} ms, not included below)"
    )
    best_ref = min(times["reference"])
    for name, values in times.items():
        best = min(values)
        print(
            f"  {name:<20} best {best * 1000:7.1f} ms  median {statistics.median(values) * 1000:7.1f} ms  "
            f"reference/this {best_ref / best:5.1f}x"
        )
    print(f"machine calibration: empty 1M-iteration loop {loop_ms:.0f} ms")


if __name__ == "__main__":
    main()
