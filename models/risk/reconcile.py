"""Cross-checks: custody vs exchange balances, overdue settlements, price deviation from a reference."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from models.risk.exposure import INFINITY
from models.risk.values import ZERO, Balance, CustodyBalance, PendingSettlement


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Custody and exchange disagree on (account, asset) beyond tolerance. Missing sides count as zero."""

    account: str
    asset: str
    exchange_total: Decimal
    custody_total: Decimal

    @property
    def difference(self) -> Decimal:
        """custody − exchange, in units of the asset."""
        return self.custody_total - self.exchange_total


def within_tolerance(a: Decimal, b: Decimal, abs_tolerance: Decimal, rel_tolerance: Decimal) -> bool:
    """Equal enough if |a − b| ≤ abs_tolerance or ≤ rel_tolerance × max(|a|, |b|)."""
    diff = abs(a - b)
    return diff <= abs_tolerance or diff <= rel_tolerance * max(abs(a), abs(b))


def reconcile(
    exchange: Iterable[Balance],
    custody: Iterable[CustodyBalance],
    *,
    abs_tolerance: Decimal = ZERO,
    rel_tolerance: Decimal = ZERO,
) -> list[Mismatch]:
    """Mismatches per (account, asset), sorted by key. Several rows for one key are summed."""
    exchange_totals: dict[tuple[str, str], Decimal] = {}
    for b in exchange:
        key = (b.account, b.asset)
        exchange_totals[key] = exchange_totals.get(key, ZERO) + b.total
    custody_totals: dict[tuple[str, str], Decimal] = {}
    for c in custody:
        key = (c.account, c.asset)
        custody_totals[key] = custody_totals.get(key, ZERO) + c.total
    mismatches = []
    for key in sorted(exchange_totals.keys() | custody_totals.keys()):
        ex = exchange_totals.get(key, ZERO)
        cu = custody_totals.get(key, ZERO)
        if not within_tolerance(ex, cu, abs_tolerance, rel_tolerance):
            mismatches.append(Mismatch(key[0], key[1], exchange_total=ex, custody_total=cu))
    return mismatches


@dataclass(frozen=True, slots=True)
class Unsettled:
    """Settlements past their expected date; value in USD at mark (unpriced assets listed, not valued)."""

    count: int
    value: Decimal
    unpriced: tuple[str, ...]


def is_overdue(settlement: PendingSettlement, now: datetime) -> bool:
    """Overdue once the UTC calendar date of `now` is after the expected settlement date."""
    return now.astimezone(UTC).date() > settlement.expected_settlement_date


def unsettled_exposure(
    settlements: Iterable[PendingSettlement], usd: Mapping[str, Decimal], now: datetime
) -> Unsettled:
    count = 0
    value = ZERO
    unpriced: set[str] = set()
    for s in settlements:
        if not is_overdue(s, now):
            continue
        count += 1
        price = usd.get(s.asset)
        if price is None:
            unpriced.add(s.asset)
        else:
            value += abs(s.quantity) * price
    return Unsettled(count=count, value=value, unpriced=tuple(sorted(unpriced)))


def price_deviation(price: Decimal | None, reference: Decimal) -> Decimal:
    """|price − reference| / reference; a missing price deviates infinitely (a depeg we can't see is bad)."""
    if reference <= ZERO:
        raise ValueError("reference price must be positive")
    if price is None:
        return INFINITY
    return abs(price - reference) / reference
