"""The sandbox's simulated state: venues, accounts, balances, settlements, moving prices, trading.

Everything here is guarded by one lock, so HTTP handler threads, the gRPC stream threads and the
background stepper can share a world. Randomness comes from one seeded `random.Random`: the same
seed and the same sequence of `step()` calls give the same prices and positions.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sandbox.config import SandboxConfig

_PRICE_PLACES = Decimal("0.00000001")
_QTY_PLACES = Decimal("0.0001")
_FEE_RATE = Decimal("0.0005")
QUOTE_ASSET = "USDT"


class UnknownEntity(LookupError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")


@dataclass
class SimPosition:
    quantity: Decimal
    avg_price: Decimal
    updated_at: datetime
    realized_pnl: Decimal = Decimal(0)


@dataclass
class SimBalance:
    available: Decimal
    locked: Decimal = Decimal(0)


@dataclass
class ExchangeAccount:
    account_id: str
    account_type: str
    status: str = "ACTIVE"
    positions: dict[str, SimPosition] = field(default_factory=dict)
    balances: dict[str, SimBalance] = field(default_factory=dict)


@dataclass
class CustodyClient:
    client_id: str
    name: str
    status: str = "ACTIVE"
    master: dict[str, SimBalance] = field(default_factory=dict)
    segregated: dict[tuple[str, str], dict[str, SimBalance]] = field(default_factory=dict)


@dataclass
class Settlement:
    settlement_id: str
    account_id: str
    asset: str
    quantity: Decimal
    initiated_at: datetime
    expected_settlement_date: date
    status: str = "PENDING"


@dataclass
class Quote:
    price: Decimal
    previous: Decimal
    volume: Decimal
    timestamp: datetime


class SandboxWorld:
    """Venues and prices. Methods are the control surface; `step()` advances prices and trading."""

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lock = threading.RLock()
        self.steps = 0
        self.trading = True  # background trades on each step; prices walk either way
        self._rng = random.Random(config.seed)  # noqa: S311 (a simulation, not security)
        now = self.clock()
        self.quotes = {
            symbol: Quote(Decimal(price), Decimal(price), Decimal(0), now) for symbol, price in config.prices.items()
        }
        self.exchanges: dict[str, dict[str, ExchangeAccount]] = {}
        types = ("SPOT", "MARGIN", "FUTURES")
        for exchange in config.exchanges:
            accounts = {}
            for i in range(config.accounts_per_exchange):
                account = ExchangeAccount(f"{exchange}-acc-{i + 1}", types[i % len(types)])
                account.balances[QUOTE_ASSET] = SimBalance(Decimal(1_000_000), Decimal(0))
                account.balances["BTC"] = SimBalance(Decimal(2), Decimal("0.5"))
                accounts[account.account_id] = account
            self.exchanges[exchange] = accounts
        self.custodians: dict[str, dict[str, CustodyClient]] = {}
        self.settlements: dict[str, list[Settlement]] = {}
        for custodian in config.custodians:
            client = CustodyClient("client-1", "Trading firm")
            client.master[QUOTE_ASSET] = SimBalance(Decimal(5_000_000))
            client.master["BTC"] = SimBalance(Decimal(10))
            for exchange, accounts in self.exchanges.items():
                for account_id in accounts:
                    client.segregated[(exchange, account_id)] = {QUOTE_ASSET: SimBalance(Decimal(250_000))}
            self.custodians[custodian] = {client.client_id: client}
            self.settlements[custodian] = []
        self._settlement_seq = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.lock:
            yield

    # -- lookups ------------------------------------------------------------------------------------

    def account(self, exchange: str, account_id: str) -> ExchangeAccount:
        try:
            return self.exchanges[exchange][account_id]
        except KeyError:
            raise UnknownEntity("account", f"{exchange}/{account_id}") from None

    def client(self, custodian: str, client_id: str) -> CustodyClient:
        try:
            return self.custodians[custodian][client_id]
        except KeyError:
            raise UnknownEntity("client", f"{custodian}/{client_id}") from None

    def quote(self, symbol: str) -> Quote:
        try:
            return self.quotes[symbol]
        except KeyError:
            raise UnknownEntity("symbol", symbol) from None

    def mark(self, symbol: str) -> Decimal | None:
        quote = self.quotes.get(symbol)
        return quote.price if quote else None

    # -- prices -------------------------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        with self.lock:
            quote = self.quote(symbol)
            quote.previous, quote.price, quote.timestamp = quote.price, Decimal(price), self.clock()

    def shock(self, percent: Decimal | str | float, symbol: str | None = None) -> None:
        """Move one symbol (or every symbol) by `percent` at once, e.g. -20 for a 20% crash."""
        factor = 1 + Decimal(str(percent)) / 100
        with self.lock:
            for name in [symbol] if symbol else list(self.quotes):
                self.set_price(name, (self.quote(name).price * factor).quantize(_PRICE_PLACES))

    def _walk_prices(self) -> None:
        cfg = self.config
        now = self.clock()
        for symbol, quote in self.quotes.items():
            # Stablecoins barely move; everything else follows a geometric random walk.
            vol = cfg.volatility * (0.01 if symbol.startswith(QUOTE_ASSET) else 1.0)
            move = cfg.drift + vol * self._rng.gauss(0.0, 1.0)
            if cfg.shock_probability and self._rng.random() < cfg.shock_probability:
                move += cfg.shock_size * self._rng.choice((-1.0, 1.0))
            new_price = Decimal(repr(float(quote.price) * math.exp(move))).quantize(_PRICE_PLACES)
            quote.previous, quote.price, quote.timestamp = quote.price, max(new_price, _PRICE_PLACES), now
            quote.volume = Decimal(repr(round(self._rng.uniform(0, 50), 4)))

    # -- positions and balances ---------------------------------------------------------------------

    def set_position(
        self, exchange: str, account_id: str, symbol: str, quantity: Decimal | str, avg_price: Decimal | str
    ) -> None:
        with self.lock:
            account = self.account(exchange, account_id)
            if Decimal(quantity) == 0:
                account.positions.pop(symbol, None)
            else:
                account.positions[symbol] = SimPosition(Decimal(quantity), Decimal(avg_price), self.clock())

    def trade(
        self,
        exchange: str,
        account_id: str,
        symbol: str,
        quantity: Decimal | str,
        price: Decimal | str | None = None,
    ) -> None:
        """Buy (positive) or sell (negative) `quantity`; books realized PnL and fees in USDT."""
        with self.lock:
            account = self.account(exchange, account_id)
            fill = Decimal(price) if price is not None else self.quote(symbol).price
            qty = Decimal(quantity)
            if qty == 0:
                return
            now = self.clock()
            pos = account.positions.get(symbol) or SimPosition(Decimal(0), Decimal(0), now)
            realized = Decimal(0)
            if pos.quantity == 0 or (pos.quantity > 0) == (qty > 0):
                total = pos.quantity + qty
                pos.avg_price = ((pos.avg_price * pos.quantity + fill * qty) / total).quantize(_PRICE_PLACES)
                pos.quantity = total
            else:
                closed = min(abs(qty), abs(pos.quantity))
                direction = 1 if pos.quantity > 0 else -1
                realized = (fill - pos.avg_price) * closed * direction
                pos.quantity += qty
                if pos.quantity != 0 and (pos.quantity > 0) != (direction > 0):
                    pos.avg_price = fill  # flipped: the remainder opened at the fill price
            pos.realized_pnl += realized
            pos.updated_at = now
            if pos.quantity == 0:
                account.positions.pop(symbol, None)
            else:
                account.positions[symbol] = pos
            cash = account.balances.setdefault(QUOTE_ASSET, SimBalance(Decimal(0)))
            cash.available = max(Decimal(0), cash.available + realized - abs(qty) * fill * _FEE_RATE)

    def set_balance(
        self,
        exchange: str,
        account_id: str,
        asset: str,
        available: Decimal | str,
        locked: Decimal | str = "0",
    ) -> None:
        with self.lock:
            self.account(exchange, account_id).balances[asset] = SimBalance(Decimal(available), Decimal(locked))

    def set_custody_balance(
        self,
        custodian: str,
        client_id: str,
        asset: str,
        available: Decimal | str,
        locked: Decimal | str = "0",
        *,
        venue: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """Master balance when `venue` is None, else the segregated balance held for venue/account_id."""
        with self.lock:
            client = self.client(custodian, client_id)
            balance = SimBalance(Decimal(available), Decimal(locked))
            if venue is None:
                client.master[asset] = balance
            else:
                client.segregated.setdefault((venue, account_id or ""), {})[asset] = balance

    def add_settlement(
        self,
        custodian: str,
        account_id: str,
        asset: str,
        quantity: Decimal | str,
        *,
        expected_settlement_date: date | None = None,
    ) -> str:
        with self.lock:
            if custodian not in self.settlements:
                raise UnknownEntity("custodian", custodian)
            self._settlement_seq += 1
            now = self.clock()
            settlement = Settlement(
                f"stl-{self._settlement_seq:05d}",
                account_id,
                asset,
                Decimal(quantity),
                now,
                expected_settlement_date or (now + timedelta(days=2)).date(),
            )
            self.settlements[custodian].append(settlement)
            return settlement.settlement_id

    def settle(self, custodian: str, settlement_id: str) -> None:
        """Mark a settlement SETTLED: the custodian stops listing it as pending."""
        with self.lock:
            for settlement in self.settlements.get(custodian, ()):
                if settlement.settlement_id == settlement_id:
                    settlement.status = "SETTLED"
                    return
            raise UnknownEntity("settlement", f"{custodian}/{settlement_id}")

    # -- time ---------------------------------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        """Advance prices one random-walk step and let each account maybe trade."""
        with self.lock:
            for _ in range(n):
                self.steps += 1
                self._walk_prices()
                tradable = [s for s in self.quotes if not s.startswith(QUOTE_ASSET)]
                for exchange, accounts in self.exchanges.items():
                    for account_id in accounts:
                        if self.trading and tradable and self._rng.random() < self.config.trade_probability:
                            symbol = self._rng.choice(tradable)
                            notional = Decimal(self._rng.randint(1_000, 50_000))
                            qty = (notional / self.quote(symbol).price).quantize(_QTY_PLACES)
                            self.trade(exchange, account_id, symbol, qty * self._rng.choice((-1, 1)))
