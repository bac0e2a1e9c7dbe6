"""Plain input values for risk evaluation: positions, balances, prices, settlements, account metadata."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)
ONE = Decimal(1)

# Quote currencies recognised at the end of concatenated symbols like "BTCUSDT". Longest first so that
# "FDUSD" wins over "USD" and "USDT" over "USD".
_KNOWN_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "DAI", "USD", "EUR", "BTC", "ETH")
_SEPARATORS = re.compile(r"[-/_:]")
_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")


class InstrumentKind(StrEnum):
    SPOT = "spot"
    PERPETUAL = "perpetual"
    FUTURE = "future"
    OPTION = "option"


# Pure and called for every price and position on the tick path (price_table re-splits every symbol):
# a venue quotes a bounded set of spellings, so parse each once. Errors are raised, never cached.
@functools.lru_cache(maxsize=65_536)
def split_symbol(symbol: str) -> tuple[str, str]:
    """Split "BTC-USDT", "BTC/USDT", "BTC_USDT", "BTCUSDT" or "BTC-USDT-SWAP" into ("BTC", "USDT").

    A trailing "PERP" (FTX/Deribit style "BTC-PERP") means a USD-quoted perpetual. Anything else we can't
    read unambiguously (option symbols like "BTC-27JUN25-60000-C") raises ValueError: the collector must
    then pass base and quote explicitly.
    """
    text = symbol.strip().upper()
    parts = [p for p in _SEPARATORS.split(text) if p]
    if len(parts) >= 2:
        base, quote = parts[0], parts[1]
        if quote == "PERP":
            quote = "USD"
    elif len(parts) == 1:
        base, quote = "", ""
        for candidate in _KNOWN_QUOTES:
            if text.endswith(candidate) and len(text) > len(candidate):
                base, quote = text[: -len(candidate)], candidate
                break
    else:
        base = quote = ""
    if not (_ASSET.match(base) and _ASSET.match(quote) and quote.isalpha()):
        raise ValueError(f"cannot split symbol {symbol!r} into base and quote")
    return base, quote


def pair_key(base: str, quote: str) -> str:
    """The canonical symbol ("BTC-USDT") that joins venue symbols with market-data symbols."""
    return f"{base}-{quote}"


def canonical_symbol(symbol: str) -> str:
    return pair_key(*split_symbol(symbol))


@dataclass(frozen=True, slots=True)
class Position:
    """An exchange position. The sign of quantity is authoritative: negative is short."""

    venue: str
    account: str
    symbol: str
    quantity: Decimal
    avg_price: Decimal
    observed_at: datetime
    mark_price: Decimal | None = None  # None: use the latest market price of the symbol
    realized_pnl: Decimal | None = None
    multiplier: Decimal = ONE
    kind: InstrumentKind = InstrumentKind.SPOT
    delta: Decimal | None = None  # venue-supplied per-unit delta, options only (see docs/risk-model.md)
    base: str = ""  # derived from symbol when empty
    quote: str = ""
    # Derived once at construction so the hot evaluation path never parses symbols or re-multiplies.
    pair: str = field(init=False, compare=False, repr=False)  # canonical "BASE-QUOTE"
    instrument: tuple[str, str] = field(init=False, compare=False, repr=False)  # (pair, kind)
    units: Decimal = field(init=False, compare=False, repr=False)  # quantity × multiplier, signed
    cost: Decimal = field(init=False, compare=False, repr=False)  # units × avg_price, quote currency

    def __post_init__(self) -> None:
        if not self.base or not self.quote:
            base, quote = split_symbol(self.symbol)
            object.__setattr__(self, "base", self.base or base)
            object.__setattr__(self, "quote", self.quote or quote)
        pair = pair_key(self.base, self.quote)
        units = self.quantity * self.multiplier
        object.__setattr__(self, "pair", pair)
        object.__setattr__(self, "instrument", (pair, str(self.kind.value)))
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "cost", units * self.avg_price)


@dataclass(frozen=True, slots=True)
class PositionSpec:
    """What a `Position` derives from its symbol alone: computed once per symbol by `position_spec`."""

    kind: InstrumentKind
    base: str
    quote: str
    pair: str
    instrument: tuple[str, str]


def position_spec(symbol: str, kind: InstrumentKind, base: str = "", quote: str = "") -> PositionSpec:
    """Raises ValueError, as `Position` does, when base and quote are not given and the symbol can't be split."""
    if not base or not quote:
        split_base, split_quote = split_symbol(symbol)
        base, quote = base or split_base, quote or split_quote
    pair = pair_key(base, quote)
    return PositionSpec(kind, base, quote, pair, (pair, str(kind.value)))


_POSITION_FIELDS = (
    "venue",
    "account",
    "symbol",
    "quantity",
    "avg_price",
    "observed_at",
    "mark_price",
    "realized_pnl",
    "multiplier",
    "kind",
    "delta",
    "base",
    "quote",
    "pair",
    "instrument",
    "units",
    "cost",
)
if tuple(f.name for f in fields(Position)) != _POSITION_FIELDS:  # `position_row` sets every field itself
    raise RuntimeError("Position's fields changed: update position_row")
_set = {name: getattr(Position, name).__set__ for name in _POSITION_FIELDS}  # the slots' own setters
(
    _set_venue,
    _set_account,
    _set_symbol,
    _set_quantity,
    _set_avg_price,
    _set_observed_at,
    _set_mark_price,
    _set_realized_pnl,
    _set_multiplier,
    _set_kind,
    _set_delta,
    _set_base,
    _set_quote,
    _set_pair,
    _set_instrument,
    _set_units,
    _set_cost,
) = (_set[name] for name in _POSITION_FIELDS)
_new = object.__new__


def position_row(
    spec: PositionSpec,
    venue: str,
    account: str,
    symbol: str,
    observed_at: datetime,
    *,
    quantity: Decimal,
    avg_price: Decimal,
    mark_price: Decimal | None,
    realized_pnl: Decimal | None,
) -> Position:
    """``Position(venue, account, symbol, quantity, avg_price, observed_at, mark_price, realized_pnl,
    kind=spec.kind, base=spec.base, quote=spec.quote)``, equal in every field (derived ones included), at
    half the cost: the book loader builds ~100k of these a second when marks move. It skips the dataclass
    ``__init__`` (a frozen one sets each field through ``object.__setattr__``) and shares the symbol's
    derived strings and tuple instead of making new ones per row."""
    position: Position = _new(Position)
    _set_venue(position, venue)
    _set_account(position, account)
    _set_symbol(position, symbol)
    _set_quantity(position, quantity)
    _set_avg_price(position, avg_price)
    _set_observed_at(position, observed_at)
    _set_mark_price(position, mark_price)
    _set_realized_pnl(position, realized_pnl)
    _set_multiplier(position, ONE)
    _set_kind(position, spec.kind)
    _set_delta(position, None)
    _set_base(position, spec.base)
    _set_quote(position, spec.quote)
    _set_pair(position, spec.pair)
    _set_instrument(position, spec.instrument)
    units = quantity * ONE  # as __post_init__: quantity × multiplier (keeps Decimal's exponent rules)
    _set_units(position, units)
    _set_cost(position, units * avg_price)
    return position


@dataclass(frozen=True, slots=True)
class Balance:
    """An exchange balance of one asset; total = available + locked as reported by the venue."""

    venue: str
    account: str
    asset: str
    available: Decimal
    locked: Decimal
    total: Decimal
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class CustodyBalance:
    """A custodian's segregated balance held for an exchange account."""

    custodian: str
    venue: str
    account: str
    asset: str
    total: Decimal
    observed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """A market price of `symbol` in its quote currency."""

    symbol: str
    price: Decimal
    observed_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    settlement_id: str
    account: str
    asset: str
    quantity: Decimal
    initiated_at: datetime
    expected_settlement_date: date


@dataclass(frozen=True, slots=True)
class AccountMeta:
    """Static facts about an account key like "binance:acct-1"."""

    account: str
    venue: str
    custodian: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class PriceTick:
    """A new market price for one symbol (real-time path)."""

    price: Price


@dataclass(frozen=True, slots=True)
class PositionTick:
    """A position update or fill result: the account's new position in `position.symbol`."""

    position: Position


def with_mark(position: Position, mark_price: Decimal | None, observed_at: datetime) -> Position:
    """``replace(position, mark_price=mark_price, observed_at=observed_at)`` for a position whose average price
    was given (not taken from the mark), sharing every other value: a venue's next poll when only its marks
    moved. The shared Decimals let `update_book` see the unchanged fields by identity."""
    new: Position = _new(Position)
    _set_venue(new, position.venue)
    _set_account(new, position.account)
    _set_symbol(new, position.symbol)
    _set_quantity(new, position.quantity)
    _set_avg_price(new, position.avg_price)
    _set_observed_at(new, observed_at)
    _set_mark_price(new, mark_price)
    _set_realized_pnl(new, position.realized_pnl)
    _set_multiplier(new, position.multiplier)
    _set_kind(new, position.kind)
    _set_delta(new, position.delta)
    _set_base(new, position.base)
    _set_quote(new, position.quote)
    _set_pair(new, position.pair)
    _set_instrument(new, position.instrument)
    _set_units(new, position.units)
    _set_cost(new, position.cost)
    return new
