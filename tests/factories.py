"""Small builders for risk values: `position(qty="10", px="100")`. Strings become Decimals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from models.risk import (
    AccountMeta,
    Balance,
    CustodyBalance,
    InstrumentKind,
    Limit,
    LimitType,
    PendingSettlement,
    Position,
    Price,
)

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def d(value: str | int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def position(
    qty: str = "10",
    px: str | None = "100",
    *,
    avg: str = "100",
    symbol: str = "BTC-USDT",
    account: str = "binance:acct-1",
    venue: str | None = None,
    kind: InstrumentKind = InstrumentKind.SPOT,
    multiplier: str = "1",
    delta: str | None = None,
    at: datetime = NOW,
) -> Position:
    return Position(
        venue=venue or account.partition(":")[0],
        account=account,
        symbol=symbol,
        quantity=Decimal(qty),
        avg_price=Decimal(avg),
        observed_at=at,
        mark_price=d(px),
        multiplier=Decimal(multiplier),
        kind=kind,
        delta=d(delta),
    )


def balance(
    asset: str = "USDT", total: str = "1000", *, account: str = "binance:acct-1", at: datetime = NOW
) -> Balance:
    return Balance(account.partition(":")[0], account, asset, Decimal(total), Decimal(0), Decimal(total), at)


def custody(
    asset: str = "USDT", total: str = "1000", *, account: str = "binance:acct-1", custodian: str = "copper"
) -> CustodyBalance:
    return CustodyBalance(custodian, account.partition(":")[0], account, asset, Decimal(total), NOW)


def price(symbol: str = "BTC-USDT", px: str = "100", *, at: datetime = NOW, source: str = "md") -> Price:
    return Price(symbol, Decimal(px), at, source)


def settlement(
    asset: str = "USDT", qty: str = "1000", *, account: str = "binance:acct-1", due: date = date(2026, 3, 1)
) -> PendingSettlement:
    return PendingSettlement(f"s-{account}-{asset}-{due}", account, asset, Decimal(qty), NOW, due)


def account(key: str = "binance:acct-1", *, custodian: str | None = None, groups: tuple[str, ...] = ()) -> AccountMeta:
    return AccountMeta(key, key.partition(":")[0], custodian, frozenset(groups))


def limit(name: str = "lim", type_: LimitType = LimitType.GROSS_NOTIONAL, **fields: object) -> Limit:
    """A limit with Decimal-from-string thresholds: limit("g", warn="10", critical="20")."""
    for key in ("warn", "critical", "clear", "reference", "abs_tolerance", "rel_tolerance"):
        if isinstance(fields.get(key), str):
            fields[key] = Decimal(str(fields[key]))
    return Limit(name, type_, **fields)  # type: ignore[arg-type]
