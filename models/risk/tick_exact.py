"""Exact views for the tick path: account exposures as the reference's incremental evaluation holds them,
the reference limit handlers over them, and what-if mappings for CheckOrder. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

import numpy as np
import numpy.typing as npt

from models.risk.book import RiskBook
from models.risk.exposure import Exposure, account_exposure, aggregate
from models.risk.limits import FIRM_KEY, Limit, LimitType, Measure, Scope
from models.risk.pnl import PnlMarks, fold_marks
from models.risk.reconcile import unsettled_exposure
from models.risk.reference import Run
from models.risk.results import RISK_CONTEXT, Subject
from models.risk.tick_screen import Bools, Ints

# Handled by the reference's own dispatch (they read no per-account exposure walk to shortcut).
_DATA_TYPES = frozenset({LimitType.STALE_DATA, LimitType.PRICE_DEVIATION, LimitType.RECONCILIATION})


class ExactExposures(Mapping[str, Exposure]):
    """Every account, "firm" and every group, exactly as the reference's incremental evaluation holds them: an
    account's exposure as of the last batch that affected it (the reference keeps it until then; a price
    re-spelt with another exponent but the same value affects nobody), computed on first access by the
    reference functions and kept; aggregates re-summed on access after every batch."""

    def __init__(self, book: RiskBook) -> None:
        self.book = book
        self._done: dict[str, tuple[Exposure, int]] = {}  # account -> exposure, batch it was computed in
        self._aggregates: dict[str, Exposure] = {}
        # Per account row, the batch that last affected it and the book as of then. Kept as arrays so that a
        # batch affecting every account costs two numpy assignments, not a Python loop.
        self._rank: Mapping[str, int] | None = None
        self._touched: Ints = np.zeros(0, dtype=np.intp)
        self._as_of: npt.NDArray[np.object_] = np.empty(0, dtype=object)
        self._batch = 0

    def rebase(self, book: RiskBook, rank: Mapping[str, int] | None) -> None:
        """New row numbers (positions changed: rows are remapped by account), or none: name mode (`adopt`)."""
        self.book = book
        self._aggregates.clear()
        old = self._rank
        if rank is None:
            self._done = {k: v for k, v in self._done.items() if k in book.accounts}
            self._rank = None
            return
        if old is not None and len(old) == len(rank) and list(old) == list(rank):
            return  # same accounts in the same order: rows, stamps and cached exposures stay valid
        touched = np.zeros(len(rank), dtype=np.intp)
        as_of = np.empty(len(rank), dtype=object)
        for account, row in rank.items():
            was = old.get(account) if old is not None else None
            if was is None:
                touched[row], as_of[row] = self._batch, book
                self._done.pop(account, None)
            else:
                touched[row], as_of[row] = self._touched[was], self._as_of[was]
        self._rank, self._touched, self._as_of = rank, touched, as_of

    def restart(self, book: RiskBook, rank: Mapping[str, int] | None) -> None:
        """A fresh book (a resync): every account as of this book."""
        self.book, self._rank = book, rank
        self._done.clear()
        self._aggregates.clear()
        self._touched = np.zeros(len(rank) if rank is not None else 0, dtype=np.intp)
        self._as_of = np.full(len(rank) if rank is not None else 0, book, dtype=object)

    def adopt(self, book: RiskBook, affected: Iterable[str]) -> None:
        """Name mode: the affected accounts are revalued now, as the reference does."""
        self.book = book
        self._aggregates.clear()
        for account in affected:
            self._done.pop(account, None)
            self[account]

    def adopt_rows(self, book: RiskBook, affected: Bools) -> None:
        self.book = book
        self._batch += 1
        self._touched[affected] = self._batch
        self._as_of[affected] = book
        self._aggregates.clear()

    def now(self, account: str) -> Exposure:
        """The account valued on the current book, as a read (GetRiskSummary, CheckOrder) revalues it."""
        book = self.book
        with localcontext(RISK_CONTEXT):
            meta = book.accounts[account]
            return account_exposure(meta, book.positions.get(account, ()), book.balances.get(account, ()), book.prices)

    def __getitem__(self, key: str) -> Exposure:
        entry = self._done.get(key)
        rank = self._rank
        if entry is not None and (rank is None or entry[1] >= self._touched[rank[key]]):
            return entry[0]
        aggregated = self._aggregates.get(key)
        if aggregated is not None:
            return aggregated
        book = self.book
        with localcontext(RISK_CONTEXT):
            meta = book.accounts.get(key)
            if meta is not None:
                as_of: RiskBook = book if rank is None else self._as_of[rank[key]]
                value = account_exposure(meta, as_of.positions.get(key, ()), as_of.balances.get(key, ()), as_of.prices)
                self._done[key] = (value, self._batch)
                return value
            if key == FIRM_KEY:
                value = aggregate(FIRM_KEY, [self[a] for a in book.accounts])
            elif key.startswith("group:") and key[6:] in book.groups:
                value = aggregate(key, [self[a] for a in book.groups[key[6:]]])
            else:
                raise KeyError(key)
        self._aggregates[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        yield from self.book.accounts
        yield FIRM_KEY
        for group in self.book.groups:
            yield f"group:{group}"

    def __len__(self) -> int:
        return len(self.book.accounts) + 1 + len(self.book.groups)


@dataclass(slots=True)
class TickRun(Run):
    """The reference handlers, except that unsettled exposure reads its accounts from the limit's members
    instead of an aggregate exposure (the same accounts, in the same order), so it never forces every
    account's exact exposure; and per-account limits over a few affected accounts visit those accounts
    only (in member order) instead of filtering every member."""

    rank: Mapping[str, int] | None = None  # book.accounts order, for the shortcut

    def limit(self, limit: Limit) -> None:
        per_account = limit.per_account or limit.scope is Scope.ACCOUNT
        if limit.type is not LimitType.UNSETTLED_EXPOSURE:
            if per_account and limit.type not in _DATA_TYPES and self.rank is not None and self.affected is not None:
                for account in self._affected_members(limit, self.rank, self.affected):
                    self.scope_metric(limit, self.exposures[account], account, account)
            else:
                Run.limit(self, limit)  # (a slots dataclass: no zero-argument super())
        elif per_account:
            for account in self.members(limit):
                if self.affected is None or account in self.affected:
                    self._unsettled(limit, [account], account, account)
        elif limit.scope_key in self.covered:
            self._unsettled(limit, self.members(limit), limit.scope_key, None)

    def _affected_members(self, limit: Limit, rank: Mapping[str, int], affected: frozenset[str]) -> list[str]:
        """`[a for a in self.members(limit) if a in affected]`, without walking every member."""
        metas = self.book.accounts
        if limit.scope is Scope.ACCOUNT:
            ref = str(limit.scope_ref)
            chosen: Iterable[str] = (ref,) if ref in affected and ref in metas else ()
        elif limit.scope is Scope.GROUP:
            chosen = [a for a in self.book.groups.get(str(limit.scope_ref), ()) if a in affected]
        else:
            chosen = sorted((a for a in affected if a in metas), key=rank.__getitem__)
        venue = limit.venue
        return [a for a in chosen if venue is None or metas[a].venue == venue]

    def _unsettled(self, limit: Limit, accounts: list[str], scope_key: str, account: str | None) -> None:
        asset = limit.asset
        settlements = [
            s for a in accounts for s in self.book.settlements.get(a, ()) if asset is None or s.asset == asset
        ]
        unsettled = unsettled_exposure(settlements, self.book.prices.usd, self.now)
        value = Decimal(unsettled.count) if limit.measure is Measure.COUNT else unsettled.value
        detail = f"count={unsettled.count};unpriced={','.join(unsettled.unpriced)}"
        if self.include_ok or value >= limit.clear_at:
            self.emit(limit, value, Subject(scope_key, account, asset=limit.asset, venue=limit.venue), detail)


class FoldedMarks(Mapping[str, PnlMarks]):
    """Marks as an evaluation over `exposures` would fold them for the covered scopes, folded on access
    (a what-if only needs the marks of the scopes a daily-loss or drawdown limit reads)."""

    def __init__(
        self, marks: Mapping[str, PnlMarks], exposures: Mapping[str, Exposure], covered: Collection[str], day: date
    ) -> None:
        self._marks, self._exposures, self._covered, self._day = marks, exposures, covered, day

    def __getitem__(self, key: str) -> PnlMarks:
        if key in self._covered:
            return fold_marks(self._marks.get(key), self._exposures[key].equity, self._day)
        return self._marks[key]

    def __iter__(self) -> Iterator[str]:
        return iter({*self._marks, *self._covered})

    def __len__(self) -> int:
        return len({*self._marks, *self._covered})


class WhatIf(Mapping[str, Exposure]):
    """`base` with one account's exposure replaced; aggregates that contain it re-summed on access."""

    def __init__(self, base: ExactExposures, account: str, exposure: Exposure) -> None:
        self._base, self._account, self._exposure = base, account, exposure
        self._aggregates: dict[str, Exposure] = {}

    def __getitem__(self, key: str) -> Exposure:
        if key == self._account:
            return self._exposure
        if key in self._aggregates:
            return self._aggregates[key]
        book = self._base.book
        if key == FIRM_KEY:
            members: Sequence[str] = list(book.accounts)
        elif key.startswith("group:") and key[6:] in book.groups and key not in book.accounts:
            members = book.groups[key[6:]]
        else:
            return self._base[key]
        if self._account not in members:
            return self._base[key]
        with localcontext(RISK_CONTEXT):
            value = aggregate(key, [self[a] for a in members])
        self._aggregates[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)
