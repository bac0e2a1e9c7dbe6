"""The in-memory risk book: inputs indexed by account once, plus real-time tick updates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from models.risk.exposure import DeltaHook, PriceTable, price_table, venue_delta
from models.risk.pnl import PnlMarks
from models.risk.values import (
    ZERO,
    AccountMeta,
    Balance,
    CustodyBalance,
    PendingSettlement,
    Position,
    PositionTick,
    Price,
    PriceTick,
    canonical_symbol,
)

Tick = PriceTick | PositionTick


@dataclass(frozen=True, slots=True)
class RiskBook:
    """Everything one evaluation reads. Build it with `build_book`; never mutate the mappings."""

    accounts: Mapping[str, AccountMeta]
    positions: Mapping[str, tuple[Position, ...]]
    balances: Mapping[str, tuple[Balance, ...]]
    custody: Mapping[str, tuple[CustodyBalance, ...]]
    settlements: Mapping[str, tuple[PendingSettlement, ...]]
    prices: PriceTable
    freshness: Mapping[tuple[str, str], datetime]  # newest accepted data per (venue or source, data kind)
    marks: Mapping[str, PnlMarks]  # per scope key: account key, "group:<name>", "firm"
    groups: Mapping[str, tuple[str, ...]]  # group name -> member accounts
    accounts_by_asset: Mapping[str, frozenset[str]]  # tick index: who holds or is quoted in an asset
    accounts_by_pair: Mapping[str, frozenset[str]]
    day_offset: timedelta = timedelta(0)
    delta_hook: DeltaHook = venue_delta
    # Derived, price-independent indexes of the fast evaluation path (models.risk.fast), built on first
    # use. A price tick's `replace` shares it (positions and balances are unchanged); the fast path checks
    # the identity of the mappings it indexed before reusing anything, so a stale entry is never used.
    index_cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


_Row = TypeVar("_Row", Position, Balance, CustodyBalance, PendingSettlement)


def _group_by_account(rows: Iterable[_Row]) -> dict[str, tuple[_Row, ...]]:
    grouped: dict[str, list[_Row]] = {}
    for row in rows:
        grouped.setdefault(row.account, []).append(row)
    return {account: tuple(items) for account, items in grouped.items()}


def _newer(into: dict[tuple[str, str], datetime], key: tuple[str, str], at: datetime | None) -> None:
    if at is not None and (key not in into or at > into[key]):
        into[key] = at


def build_book(
    *,
    accounts: Iterable[AccountMeta] = (),
    positions: Iterable[Position] = (),
    balances: Iterable[Balance] = (),
    prices: Iterable[Price] = (),
    custody: Iterable[CustodyBalance] = (),
    settlements: Iterable[PendingSettlement] = (),
    freshness: Mapping[tuple[str, str], datetime] | None = None,
    marks: Mapping[str, PnlMarks] | None = None,
    day_offset: timedelta = timedelta(0),
    delta_hook: DeltaHook = venue_delta,
) -> RiskBook:
    """Index inputs by account. Accounts seen only in data get metadata from the row's venue."""
    by_position = _group_by_account(positions)
    by_balance = _group_by_account(balances)
    by_custody = _group_by_account(custody)
    by_settlement = _group_by_account(settlements)
    metas = {m.account: m for m in accounts}
    for rows in (by_position, by_balance, by_custody):
        for account, items in rows.items():
            if account not in metas:
                metas[account] = AccountMeta(account=account, venue=items[0].venue)
    for account in by_settlement:
        metas.setdefault(account, AccountMeta(account=account, venue=account.partition(":")[0]))
    price_list = list(prices)
    fresh = _freshness(freshness or {}, by_position, by_balance, by_custody, price_list)
    groups: dict[str, list[str]] = {}
    for meta in metas.values():
        for group in meta.groups:
            groups.setdefault(group, []).append(meta.account)
    by_asset, by_pair = _tick_index(by_position, by_balance, by_custody, by_settlement)
    return RiskBook(
        accounts=metas,
        positions=by_position,
        balances=by_balance,
        custody=by_custody,
        settlements=by_settlement,
        prices=price_table(price_list),
        freshness=fresh,
        marks=dict(marks or {}),
        groups={g: tuple(sorted(members)) for g, members in groups.items()},
        accounts_by_asset=by_asset,
        accounts_by_pair=by_pair,
        day_offset=day_offset,
        delta_hook=delta_hook,
    )


def _freshness(
    known: Mapping[tuple[str, str], datetime],
    positions: Mapping[str, tuple[Position, ...]],
    balances: Mapping[str, tuple[Balance, ...]],
    custody: Mapping[str, tuple[CustodyBalance, ...]],
    prices: Iterable[Price],
) -> dict[tuple[str, str], datetime]:
    """Newest data per (venue/custodian/source, kind), merged with what the caller knows (e.g. an empty
    but successful poll, which leaves no rows to date)."""
    fresh = dict(known)
    for items in positions.values():
        for p in items:
            _newer(fresh, (p.venue, "positions"), p.observed_at)
    for bals in balances.values():
        for b in bals:
            _newer(fresh, (b.venue, "balances"), b.observed_at)
    for cust in custody.values():
        for c in cust:
            _newer(fresh, (c.custodian, "custody"), c.observed_at)
    for price in prices:
        _newer(fresh, (price.source, "prices"), price.observed_at)
    return fresh


def _tick_index(
    positions: Mapping[str, tuple[Position, ...]],
    balances: Mapping[str, tuple[Balance, ...]],
    custody: Mapping[str, tuple[CustodyBalance, ...]],
    settlements: Mapping[str, tuple[PendingSettlement, ...]],
) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    by_asset: dict[str, set[str]] = {}
    by_pair: dict[str, set[str]] = {}
    for account, items in positions.items():
        for p in items:
            by_asset.setdefault(p.base, set()).add(account)
            by_asset.setdefault(p.quote, set()).add(account)
            by_pair.setdefault(p.pair, set()).add(account)
    for rows in (balances, custody, settlements):
        for account, assets in rows.items():
            for row in assets:
                by_asset.setdefault(row.asset, set()).add(account)
    return (
        {k: frozenset(v) for k, v in by_asset.items()},
        {k: frozenset(v) for k, v in by_pair.items()},
    )


def affected_accounts(book: RiskBook, tick: Tick) -> frozenset[str]:
    """Accounts whose valuation a tick can change.

    A position tick touches its account. A price tick touches accounts trading that pair and accounts
    holding or quoted in any asset whose USD price moves with it (a "USDT-USD" tick reaches every
    USDT-quoted position).
    """
    if isinstance(tick, PositionTick):
        return frozenset({tick.position.account})
    pair = canonical_symbol(tick.price.symbol)
    affected = set(book.accounts_by_pair.get(pair, frozenset()))
    new_table = _with_price(book.prices, tick.price)
    for asset in new_table.usd.keys() | book.prices.usd.keys():
        if new_table.usd.get(asset) != book.prices.usd.get(asset):
            affected |= book.accounts_by_asset.get(asset, frozenset())
    return frozenset(affected)


def _with_price(table: PriceTable, price: Price) -> PriceTable:
    return price_table([*table.latest.values(), price])


def apply_tick(book: RiskBook, tick: Tick) -> RiskBook:
    """A new book with the tick applied. A zero-quantity position tick closes the position."""
    if isinstance(tick, PriceTick):
        fresh = dict(book.freshness)
        _newer(fresh, (tick.price.source, "prices"), tick.price.observed_at)
        return replace(book, prices=_with_price(book.prices, tick.price), freshness=fresh)
    new = tick.position
    kept = tuple(p for p in book.positions.get(new.account, ()) if (p.symbol, p.kind) != (new.symbol, new.kind))
    positions = dict(book.positions)
    positions[new.account] = (*kept, new) if new.quantity != ZERO else kept
    accounts = book.accounts
    if new.account not in accounts:
        accounts = {**accounts, new.account: AccountMeta(account=new.account, venue=new.venue)}
    by_asset = dict(book.accounts_by_asset)
    for asset in (new.base, new.quote):
        by_asset[asset] = by_asset.get(asset, frozenset()) | {new.account}
    by_pair = dict(book.accounts_by_pair)
    by_pair[new.pair] = by_pair.get(new.pair, frozenset()) | {new.account}
    fresh = dict(book.freshness)
    _newer(fresh, (new.venue, "positions"), new.observed_at)
    return replace(
        book,
        accounts=accounts,
        positions=positions,
        freshness=fresh,
        accounts_by_asset=by_asset,
        accounts_by_pair=by_pair,
        index_cache={},
    )
