"""Valuation and exposures: USD prices, per-account exposure, aggregation and concentration.

Conventions (docs/risk-model.md): values in USD, stablecoins at their market price; exposure metrics come
from positions, equity from balances plus derivative P&L so spot holdings are never counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from models.risk.values import (
    ONE,
    ZERO,
    AccountMeta,
    Balance,
    InstrumentKind,
    Position,
    Price,
    canonical_symbol,
    split_symbol,
)

INFINITY = Decimal("Infinity")
USD = "USD"
NO_CUSTODIAN = "(none)"  # custodian key of accounts whose assets the venue holds itself

# A venue-supplied delta per unit of an option; None means "unknown" and falls back to 1 (see docs).
DeltaHook = Callable[[Position], Decimal | None]


def venue_delta(position: Position) -> Decimal | None:
    """The default delta hook: the delta the venue reported on the position."""
    return position.delta


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Latest price per canonical pair and the USD price of every asset we can reach."""

    pair_prices: Mapping[str, Decimal]
    usd: Mapping[str, Decimal]
    latest: Mapping[str, Price]
    mark_usd: Mapping[str, Decimal]  # pair price × USD price of its quote: a position's USD mark per unit


def price_table(prices: Iterable[Price]) -> PriceTable:
    """Index prices: newest observation per pair, then USD prices by direct USD pairs, else one hop.

    A direct "X-USD" price always wins; otherwise the newest "X-Q" where Q has a USD price, in rounds,
    so "BTC-USDT" × "USDT-USD" prices BTC. USD itself is the only price assumed (1).
    """
    latest: dict[str, Price] = {}
    for price in prices:
        key = canonical_symbol(price.symbol)
        seen = latest.get(key)
        if seen is None or price.observed_at >= seen.observed_at:
            latest[key] = price
    pair_prices = {key: p.price for key, p in latest.items()}
    by_base: dict[str, list[tuple[str, Price]]] = {}
    for key, p in latest.items():
        base, quote = split_symbol(key)
        by_base.setdefault(base, []).append((quote, p))
    usd: dict[str, Decimal] = {USD: ONE}
    while True:
        found: dict[str, Decimal] = {}
        for base, quotes in by_base.items():
            if base in usd:
                continue
            reachable = [(q, p) for q, p in quotes if q in usd]
            if reachable:
                # direct USD first, then the newest observation, then the quote name for determinism
                quote, p = max(reachable, key=lambda qp: (qp[0] == USD, qp[1].observed_at, qp[0]))
                found[base] = p.price * usd[quote]
        if not found:
            mark_usd = {
                key: price * usd[quote] for key, price in pair_prices.items() if (quote := key.partition("-")[2]) in usd
            }
            return PriceTable(pair_prices=pair_prices, usd=usd, latest=latest, mark_usd=mark_usd)
        usd.update(found)


@dataclass(frozen=True, slots=True)
class Exposure:
    """Exposures of one scope (an account, a group, a venue, a custodian, the firm), in USD.

    Only totals are computed eagerly; breakdowns by asset, venue, custodian or instrument are functions
    over `legs` (an account's positions with their USD notional) or `parts` (an aggregate's accounts),
    computed only when a limit or a summary asks. That keeps a full evaluation cheap.
    """

    key: str
    gross: Decimal
    net: Decimal
    equity: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    unpriced: tuple[str, ...]  # symbols/assets left out for want of a price: exposures are understated
    legs: tuple[tuple[Position, Decimal], ...] = ()
    parts: tuple[Exposure, ...] = ()
    venue: str | None = None  # accounts only
    custodian: str | None = None

    @property
    def leverage(self) -> Decimal:
        """gross / equity; Decimal('Infinity') when equity ≤ 0 (always a breach)."""
        return leverage(self.gross, self.equity)

    @property
    def accounts(self) -> tuple[str, ...]:
        if self.venue is not None:
            return (self.key,)
        return tuple(part.key for part in self.parts)


def leverage(gross: Decimal, equity: Decimal) -> Decimal:
    if equity <= ZERO:
        return INFINITY
    return gross / equity


def account_exposure(
    meta: AccountMeta,
    positions: Iterable[Position],
    balances: Iterable[Balance],
    table: PriceTable,
) -> Exposure:
    """One account's exposure. This is the hot path: one pass, a handful of Decimal operations a position."""
    mark_usd = table.mark_usd
    usd = table.usd
    gross = net = upl = realized = equity = ZERO
    legs: list[tuple[Position, Decimal]] = []
    unpriced: list[str] = []
    spot = InstrumentKind.SPOT
    option = InstrumentKind.OPTION
    for p in positions:
        quote_usd = usd.get(p.quote)
        if quote_usd is None:
            unpriced.append(p.symbol)
            continue
        if p.mark_price is None:
            pair_mark = mark_usd.get(p.pair)  # market price × USD price of the quote, done once per pair
            if pair_mark is None:
                unpriced.append(p.symbol)
                continue
            notional = p.units * pair_mark
        else:
            notional = p.units * p.mark_price * quote_usd
        gross += abs(notional)
        net += notional
        legs.append((p, notional))
        kind = p.kind
        if kind is option:
            # Premium was paid from (or credited to) the balance, so the option's market value is equity.
            equity += notional
        elif kind is not spot:
            # Perpetuals/futures: margin is already in balances; only unrealized P&L adds to equity.
            pnl = notional - p.cost * quote_usd
            upl += pnl
            equity += pnl
        if p.realized_pnl is not None:
            realized += p.realized_pnl * quote_usd
    for b in balances:
        asset_usd = usd.get(b.asset)
        if asset_usd is None:
            if b.total:
                unpriced.append(b.asset)
            continue
        equity += b.total * asset_usd
    return Exposure(
        key=meta.account,
        gross=gross,
        net=net,
        equity=equity,
        unrealized_pnl=upl,
        realized_pnl=realized,
        unpriced=tuple(unpriced),
        legs=tuple(legs),
        venue=meta.venue,
        custodian=meta.custodian or NO_CUSTODIAN,
    )


def aggregate(key: str, exposures: Iterable[Exposure]) -> Exposure:
    """Sum account exposures into a scope (group, venue, custodian, firm). Netting happens across accounts."""
    parts = tuple(exposures)
    unpriced = sorted({u for e in parts for u in e.unpriced})
    return Exposure(
        key=key,
        gross=sum((e.gross for e in parts), ZERO),
        net=sum((e.net for e in parts), ZERO),
        equity=sum((e.equity for e in parts), ZERO),
        unrealized_pnl=sum((e.unrealized_pnl for e in parts), ZERO),
        realized_pnl=sum((e.realized_pnl for e in parts), ZERO),
        unpriced=tuple(unpriced),
        parts=parts,
    )


def legs(exposure: Exposure) -> Iterator[tuple[Position, Decimal]]:
    """Every priced position in the scope with its signed USD notional."""
    if exposure.parts:
        for part in exposure.parts:
            yield from part.legs
    else:
        yield from exposure.legs


def gross_by_asset(exposure: Exposure) -> dict[str, Decimal]:
    """Σ|notional| per underlying (base) asset."""
    out: dict[str, Decimal] = {}
    for p, notional in legs(exposure):
        out[p.base] = out.get(p.base, ZERO) + abs(notional)
    return out


def net_by_asset(exposure: Exposure) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for p, notional in legs(exposure):
        out[p.base] = out.get(p.base, ZERO) + notional
    return out


def delta_by_asset(exposure: Exposure, delta_hook: DeltaHook = venue_delta) -> dict[str, Decimal]:
    """Net delta in units of each underlying: spot/perpetual/future 1 per unit × multiplier, options the
    hook's delta (the venue's, by default; 1 when unknown, see docs/risk-model.md)."""
    out: dict[str, Decimal] = {}
    for p, _ in legs(exposure):
        units = p.units
        if p.kind is InstrumentKind.OPTION:
            delta = delta_hook(p)
            if delta is not None:
                units *= delta
        out[p.base] = out.get(p.base, ZERO) + units
    return out


def gross_by_venue(exposure: Exposure) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for part in exposure.parts or (exposure,):
        venue = part.venue or ""
        out[venue] = out.get(venue, ZERO) + part.gross
    return out


def gross_by_custodian(exposure: Exposure) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for part in exposure.parts or (exposure,):
        custodian = part.custodian or NO_CUSTODIAN
        out[custodian] = out.get(custodian, ZERO) + part.gross
    return out


def by_instrument(exposure: Exposure, symbol: str | None = None) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """(quantity, USD notional) per instrument (canonical pair, kind), netted across the scope."""
    out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for p, notional in legs(exposure):
        if symbol is not None and p.pair != symbol:
            continue
        qty, total = out.get(p.instrument, (ZERO, ZERO))
        out[p.instrument] = (qty + p.quantity, total + notional)
    return out


def concentration(gross_by_key: Mapping[str, Decimal]) -> tuple[str | None, Decimal]:
    """The key holding the largest share of gross, and that share in [0, 1]; (None, 0) for an empty book."""
    total = sum(gross_by_key.values(), ZERO)
    if total <= ZERO:
        return None, ZERO
    # ties go to the smallest key so the subject of an alert is stable
    key = min(gross_by_key, key=lambda k: (-gross_by_key[k], k))
    return key, gross_by_key[key] / total


def data_age_seconds(newest: datetime | None, now: datetime) -> Decimal:
    """Age of the newest accepted data; never seen is infinitely old. Clock skew (future data) counts as 0."""
    if newest is None:
        return INFINITY
    age = now - newest
    # exact: whole seconds plus microseconds, no float on the way
    seconds = Decimal(age.days * 86400 + age.seconds) + Decimal(age.microseconds).scaleb(-6)
    return max(seconds, ZERO)
