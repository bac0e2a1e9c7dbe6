"""The next risk book from the previous one: share what did not change, re-index only what did. Pure.

A job that evaluates every second over mostly unchanged snapshots keeps its book between passes. Building
a book and the fast path's index from scratch is a Python pass over every position (≈ 0.3 s at 100k);
`update_book` instead keeps the previous mappings for accounts whose rows did not move and patches the
index (`fast_index.patch_index`) for those that did; accounts whose positions differ only in their venue
marks (every poll when marks move) get only their mark-dependent index columns recomputed. The result equals
`build_book` over the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import TypeVar

from models.risk import fast_index
from models.risk.book import RiskBook, _group_by_account, _tick_index
from models.risk.exposure import price_table
from models.risk.pnl import PnlMarks
from models.risk.values import Balance, CustodyBalance, PendingSettlement, Position, Price


class _TickIndexes:
    """`accounts_by_asset` and `accounts_by_pair`, built together on first access: only the tick path reads
    them, and building them is another pass over every row. Holds the row mappings, never the book: a book
    kept between passes must not keep its predecessors alive through its lazy fields."""

    def __init__(self, book: RiskBook) -> None:
        self._build = partial(_tick_index, book.positions, book.balances, book.custody, book.settlements)
        self._built: tuple[Mapping[str, frozenset[str]], Mapping[str, frozenset[str]]] | None = None

    def get(self, which: int) -> Mapping[str, frozenset[str]]:
        if self._built is None:
            self._built = self._build()
        return self._built[which]


class _TickIndex(Mapping[str, frozenset[str]]):
    """One of the two lazily built tick indexes."""

    def __init__(self, indexes: _TickIndexes, which: int) -> None:
        self._indexes = indexes
        self._which = which

    def _index(self) -> Mapping[str, frozenset[str]]:
        return self._indexes.get(self._which)

    def __getitem__(self, key: str) -> frozenset[str]:
        return self._index()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())


def update_book(
    previous: RiskBook,
    *,
    positions: Mapping[str, tuple[Position, ...]],
    balances: Mapping[str, tuple[Balance, ...]],
    custody: Iterable[CustodyBalance],
    settlements: Iterable[PendingSettlement],
    prices: Iterable[Price],
    freshness: Mapping[tuple[str, str], datetime],
    marks: Mapping[str, PnlMarks],
) -> RiskBook:
    """The book of the same accounts (and groups, day offset, delta hook) with new inputs.

    ``positions``/``balances``: every account's rows, by account. An account whose rows did not change
    must be given the *same* tuple as ``previous`` holds (snapshots are immutable, so a loader keeps the
    tuples of accounts whose snapshot head did not move, or whose new snapshot repeats the content); any
    other tuple is compared row by row and re-indexed where the content differs. ``freshness`` is complete
    (row times merged in by the caller), unlike `build_book`'s, which scans every row for them.
    """
    moved_positions = _moved(positions, previous.positions)
    moved_balances = _moved(balances, previous.balances)
    unknown = (moved_positions | moved_balances) - previous.accounts.keys()
    if unknown:
        raise ValueError(f"accounts not in the previous book: {sorted(unknown)[:3]}")
    by_custody = _group_by_account(custody)
    moved_custody = {
        a for a in by_custody.keys() | previous.custody.keys() if by_custody.get(a) != previous.custody.get(a)
    }
    # What the index holds of a row is its content, not its observation time: a new snapshot with the same
    # positions (most polls) keeps its index rows and the exact figures computed from them.
    changes = {a: _position_change(positions.get(a), previous.positions.get(a)) for a in moved_positions}
    new_positions = {a for a, change in changes.items() if change is _Change.ROWS}
    new_marks = {a for a, change in changes.items() if change is _Change.MARKS}
    new_balances = {a for a in moved_balances if not _same(balances.get(a), previous.balances.get(a), _balance)}
    new_custody = {a for a in moved_custody if not _same(by_custody.get(a), previous.custody.get(a), _custody)}
    book = replace(
        previous,
        positions=positions if moved_positions else previous.positions,
        balances=balances if moved_balances else previous.balances,
        custody=by_custody if moved_custody else previous.custody,
        settlements=_group_by_account(settlements),
        prices=price_table(prices),
        freshness=dict(freshness),
        marks=dict(marks),
        index_cache={},
    )
    lazy = _TickIndexes(book)
    book = replace(book, accounts_by_asset=_TickIndex(lazy, 0), accounts_by_pair=_TickIndex(lazy, 1))
    cached = previous.index_cache.get("fast")
    if isinstance(cached, fast_index.BookIndex) and fast_index.indexes(cached, previous):
        if not (moved_positions or moved_balances or moved_custody):
            index = cached
        else:
            index = fast_index.patch_index(
                cached, book, positions=new_positions, balances=new_balances, custody=new_custody, marks=new_marks
            )
        book.index_cache["fast"] = index
    return book


def _moved(rows: Mapping[str, tuple[object, ...]], before: Mapping[str, tuple[object, ...]]) -> set[str]:
    if rows is before:
        return set()
    return {a for a in rows.keys() | before.keys() if rows.get(a) is not before.get(a)}


_Row = TypeVar("_Row", Position, Balance, CustodyBalance)


def _same(rows: tuple[_Row, ...] | None, before: tuple[_Row, ...] | None, same: Callable[[_Row, _Row], bool]) -> bool:
    """Same rows in the same order, as far as an evaluation reads them (everything but observation times)."""
    if rows is None or before is None:
        return rows is before
    return len(rows) == len(before) and all(same(a, b) for a, b in zip(rows, before, strict=True))


def _exact(a: Decimal | None, b: Decimal | None) -> bool:
    """The same Decimal, exponent included (Decimal == ignores it, and results carry it)."""
    if a is None or b is None:
        return a is b
    return not a.compare_total(b)


class _Change(Enum):
    NONE = 0
    MARKS = 1  # only venue mark prices differ: the index recomputes the mark-dependent columns of the rows
    ROWS = 2


def _position_change(rows: tuple[Position, ...] | None, before: tuple[Position, ...] | None) -> _Change:
    """`_same` for positions, telling apart rows that differ only in ``mark_price`` (marks move every poll)."""
    if rows is None or before is None:
        return _Change.NONE if rows is before else _Change.ROWS
    if len(rows) != len(before) or not all(map(_position_but_mark, rows, before)):
        return _Change.ROWS
    same_marks = all(_exact(a.mark_price, b.mark_price) for a, b in zip(rows, before, strict=True))
    return _Change.NONE if same_marks else _Change.MARKS


def _position_but_mark(a: Position, b: Position) -> bool:
    if (  # a loader that kept the unchanged values (`with_mark`): no Decimal comparisons
        a.quantity is b.quantity
        and a.avg_price is b.avg_price
        and a.realized_pnl is b.realized_pnl
        and a.multiplier is b.multiplier
        and a.delta is b.delta
        and a.instrument is b.instrument
        and a.symbol is b.symbol
        and a.base is b.base
    ):
        return True
    return (
        a.instrument == b.instrument
        and a.symbol == b.symbol
        and a.base == b.base
        and _exact(a.quantity, b.quantity)
        and _exact(a.avg_price, b.avg_price)
        and _exact(a.multiplier, b.multiplier)
        and _exact(a.delta, b.delta)
        and _exact(a.realized_pnl, b.realized_pnl)
    )


def _balance(a: Balance, b: Balance) -> bool:
    return a.asset == b.asset and _exact(a.total, b.total)


def _custody(a: CustodyBalance, b: CustodyBalance) -> bool:
    return a.asset == b.asset and a.custodian == b.custodian and _exact(a.total, b.total)
