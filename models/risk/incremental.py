"""The tick path's incremental risk state: a float screen over the whole book per batch, exact Decimal only
for the few subjects whose level may have changed. Pure: no I/O, no clock, no locks (the caller serialises).

What a batch must produce is what `reference.evaluate_accounts` + the alert state machine's hysteresis give
(docs/risk-model.md, "Incremental (tick) path"): the level changes of the covered subjects, with exact
values. Per screened (limit, subject) the state keeps the *zone* its exact value was last in: 0 below
clear, 1 in [clear, warn], 2 above warn, 3 above critical. The level after a batch is a function of the
previous level and the new zone only (zone 1 keeps the level: hysteresis), so a subject whose value
provably stays in its zone cannot change level and is skipped. Per batch:

1. Floats (numpy, whole book, no Python loop): per position notional = operand × USD mark, per account gross,
   net, equity and Σ|terms|, per instrument sums. Recomputed from the exact operands every batch (nothing
   is carried from batch to batch in float), so error never accumulates: every batch has the same bound
   as `models.risk.fast` (ρ = 2(N + 4)·2⁻⁵³ + 10⁻¹² relative to Σ|terms|, N = positions + balances + 1).
2. Zones from the interval [value − margin, value + margin], widened by 4·10⁻¹² against the float
   thresholds. Where both ends fall in the same zone the zone is exact; a subject is a *candidate* when
   its zone is uncertain or differs from the stored one.
3. Candidates' accounts are evaluated exactly by the reference handlers (`reference.Run`) over exact
   exposures (`account_exposure`, cached per account until a tick touches it): their checks, levels and
   zones are exactly the reference's. Limits the screen does not cover run the reference handler over the
   same lazily exact mappings on the reference's coverage (correct, at reference speed for that limit).
4. P&L marks fold exactly: a covered scope whose equity did not move (no price of its equity inputs moved)
   or provably stays below its high-water mark keeps its marks; otherwise its exact equity is folded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext

import numpy as np
import numpy.typing as npt

from models.risk.book import RiskBook
from models.risk.exposure import Exposure, account_exposure, aggregate
from models.risk.limits import FIRM_KEY, Level, Limit, LimitType, Measure, Scope, Side
from models.risk.pnl import PnlMarks, fold_marks, trading_day
from models.risk.reconcile import unsettled_exposure
from models.risk.reference import Run
from models.risk.results import RISK_CONTEXT, Check, Evaluation, Subject
from models.risk.values import InstrumentKind, Position

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Zones = npt.NDArray[np.int8]

UNIT_ROUNDOFF = 2.0**-53
# Relative slack on top of the summation bound (as in models.risk.fast): absorbs Decimal→float conversion of
# thresholds, marks and prices, the few float operations after the sums, and the reference's 28-digit rounding.
SLACK = 1e-12
WIDEN = 4 * SLACK  # interval ends are widened by this before they are compared with float thresholds
_HUGE, _TINY = 1e150, 1e-150  # magnitudes the float screen accepts (see docs/risk-model.md)
_SPOT, _DERIVATIVE, _OPTION = 0, 1, 2
_UNKNOWN = -1  # zone not known exactly: the next batch confirms the subject
_SCALAR = frozenset({LimitType.GROSS_NOTIONAL, LimitType.NET_NOTIONAL, LimitType.LEVERAGE})
_MARKED = frozenset({LimitType.DAILY_LOSS, LimitType.DRAWDOWN})
_POSITION = frozenset({LimitType.POSITION_NOTIONAL, LimitType.POSITION_QUANTITY})
_DATA_TYPES = frozenset({LimitType.STALE_DATA, LimitType.PRICE_DEVIATION, LimitType.RECONCILIATION})


class NotScreenable(ValueError):
    """A value the float screen can't bound (non-finite or beyond float range): batches go exact."""


@dataclass(frozen=True)
class LevelChange:
    check: Check  # the check after the batch; for a clear, the last check seen before it
    previous: Level
    level: Level
    value: Decimal | None  # None: cleared by absence (below the clear threshold, so no check was emitted)


def _f(value: Decimal) -> float:
    if not value.is_finite():
        raise NotScreenable(str(value))
    out = float(value)
    if not (abs(out) < _HUGE and (out == 0.0 or abs(out) > _TINY)) or (out == 0.0 and value):
        raise NotScreenable(str(value))
    return out


def _floats(values: Sequence[Decimal | None]) -> Floats:
    """`_f` of many values at once (None: NaN, unpriced); NotScreenable as `_f` would raise it."""
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    magnitude = np.abs(out[~np.isnan(out)])
    if not (magnitude < _HUGE).all() or ((magnitude > 0) & (magnitude <= _TINY)).any():
        raise NotScreenable("a price beyond the float screen's range")
    for i in np.flatnonzero((out == 0.0) | np.isnan(out)):
        value = values[int(i)]
        if value is not None and (value.is_nan() or value):  # a NaN price, or underflow to zero
            raise NotScreenable(str(value))
    return out


def screened(limit: Limit) -> bool:
    """Per-account limits of the types the float screen covers; everything else runs the reference."""
    if not (limit.per_account or limit.scope is Scope.ACCOUNT):
        return False
    if limit.type in _SCALAR and limit.type is not LimitType.LEVERAGE:
        return limit.asset is None
    return limit.type in _SCALAR or limit.type in _MARKED or limit.type in _POSITION


@dataclass(slots=True)
class _Index:
    """Price-independent float columns of one book's positions and balances (rebuilt when they change)."""

    positions_map: object
    balances_map: object
    accounts_map: object
    accounts: list[str]
    rank: dict[str, int]
    p_acct: Ints
    p_pair: Ints
    p_quote: Ints
    p_kind: Ints
    p_own: Bools  # the venue's own mark price: notional = units × mark_price × USD(quote)
    p_a: Floats  # units, or units × mark_price
    p_cost: Floats
    p_qty: Floats
    p_inst: Ints
    inst_acct: Ints
    inst_key: list[tuple[str, str, str]]  # (account, pair, kind)
    inst_of: dict[tuple[str, str, str], int]
    inst_base: list[str]
    b_acct: Ints
    b_asset: Ints
    b_total: Floats
    pairs: list[str]
    assets: list[str]
    pair_of: dict[str, int]
    asset_of: dict[str, int]
    rho: float


def _build_index(book: RiskBook) -> _Index:
    accounts = list(book.accounts)
    pairs: dict[str, int] = {}
    assets: dict[str, int] = {}
    p_acct, p_pair, p_quote, p_kind, p_own, p_inst = [], [], [], [], [], []
    p_a: list[float] = []
    p_cost: list[float] = []
    p_qty: list[float] = []
    inst_acct: list[int] = []
    inst_key: list[tuple[str, str, str]] = []
    inst_base: list[str] = []
    inst_of: dict[tuple[str, str, str], int] = {}
    spot, option = InstrumentKind.SPOT, InstrumentKind.OPTION
    with localcontext(RISK_CONTEXT):
        for i, account in enumerate(accounts):
            for p in book.positions.get(account, ()):
                key = (account, p.pair, p.instrument[1])
                if key not in inst_of:
                    inst_of[key] = len(inst_key)
                    inst_key.append(key)
                    inst_acct.append(i)
                    inst_base.append(p.base)
                p_inst.append(inst_of[key])
                p_acct.append(i)
                p_pair.append(pairs.setdefault(p.pair, len(pairs)))
                p_quote.append(assets.setdefault(p.quote, len(assets)))
                assets.setdefault(p.base, len(assets))
                p_kind.append(_SPOT if p.kind is spot else _OPTION if p.kind is option else _DERIVATIVE)
                p_own.append(p.mark_price is not None)
                p_a.append(_f(p.units if p.mark_price is None else p.units * p.mark_price))
                p_cost.append(_f(p.cost))
                p_qty.append(_f(p.quantity))
        b_acct, b_asset, b_total = [], [], []
        for i, account in enumerate(accounts):
            for b in book.balances.get(account, ()):
                b_acct.append(i)
                b_asset.append(assets.setdefault(b.asset, len(assets)))
                b_total.append(_f(b.total))
    terms = len(p_acct) + len(b_acct) + 1
    return _Index(
        positions_map=book.positions,
        balances_map=book.balances,
        accounts_map=book.accounts,
        accounts=accounts,
        rank={a: i for i, a in enumerate(accounts)},
        p_acct=np.array(p_acct, dtype=np.intp),
        p_pair=np.array(p_pair, dtype=np.intp),
        p_quote=np.array(p_quote, dtype=np.intp),
        p_kind=np.array(p_kind, dtype=np.intp),
        p_own=np.array(p_own, dtype=bool),
        p_a=np.array(p_a, dtype=np.float64),
        p_cost=np.array(p_cost, dtype=np.float64),
        p_qty=np.array(p_qty, dtype=np.float64),
        p_inst=np.array(p_inst, dtype=np.intp),
        inst_acct=np.array(inst_acct, dtype=np.intp),
        inst_key=inst_key,
        inst_of=inst_of,
        inst_base=inst_base,
        b_acct=np.array(b_acct, dtype=np.intp),
        b_asset=np.array(b_asset, dtype=np.intp),
        b_total=np.array(b_total, dtype=np.float64),
        pairs=list(pairs),
        assets=list(assets),
        pair_of=pairs,
        asset_of=assets,
        rho=2.0 * (terms + 4) * UNIT_ROUNDOFF + SLACK,
    )


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
class _TickRun(Run):
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


class _FoldedMarks(Mapping[str, PnlMarks]):
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


class _WhatIf(Mapping[str, Exposure]):
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


@dataclass(frozen=True)
class AccountView:
    exposure: Exposure
    marks: PnlMarks | None
    checks: tuple[Check, ...]  # include_ok checks of the account's own scope


@dataclass
class _Screen:
    """Per screened limit: which subjects are members and the exact zone each was last in."""

    members: Bools  # accounts (scalar/marked limits) or instruments (position limits)
    zones: Zones


@dataclass
class TickState:
    """The state behind StreamTicks: book, exact P&L marks, current levels, the float screen's index."""

    book: RiskBook
    marks: dict[str, PnlMarks]
    levels: dict[str, tuple[Level, Check]]  # fingerprint -> level and the check that set it (non-ok only)
    at: datetime
    exact: ExactExposures = field(init=False)
    confirmed: int = 0  # accounts evaluated exactly by the last batch (for benchmarks and tests)
    _by_scope: dict[str, set[str]] = field(default_factory=dict)
    _index: _Index | None = None
    _screens: dict[Limit, _Screen] = field(default_factory=dict)
    _mark_f: Floats = field(default_factory=lambda: np.empty(0))
    _usd_f: Floats = field(default_factory=lambda: np.empty(0))
    _hwm: Floats = field(default_factory=lambda: np.empty(0))
    _dse: Floats = field(default_factory=lambda: np.empty(0))
    _mday: Ints = field(default_factory=lambda: np.empty(0, dtype=np.intp))  # trading day ordinal, -1: no marks
    _group_rows: dict[str, Ints] = field(default_factory=dict)
    _rows_of: object = None
    _rows_of_asset: object = None
    _pair_rows: dict[str, Ints] = field(default_factory=dict)
    _asset_rows: dict[str, Ints] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.exact = ExactExposures(self.book)
        for fp, (_, check) in self.levels.items():
            self._by_scope.setdefault(check.subject.scope_key, set()).add(fp)

    # --- seeding -------------------------------------------------------------------------------------------
    @staticmethod
    def seed(
        book: RiskBook, limits: Sequence[Limit], evaluation: Evaluation, levels: Mapping[str, tuple[Level, Check]]
    ) -> TickState:
        """A state from a full exact evaluation of `book` with `limits` (its checks give every zone exactly)."""
        state = TickState(book, dict(evaluation.marks), dict(levels), evaluation.at)
        state._reindex(book, (evaluation.checks, limits))
        return state

    def _reindex(self, book: RiskBook, full: tuple[Sequence[Check], Sequence[Limit]] | None) -> None:
        """Rebuild the float index. With `full` (a full evaluation's checks and its limits) zones are set from
        the checks; without, the zones of subjects that still exist carry over (by account, or by account and
        instrument)."""
        old, old_screens = self._index, self._screens
        self._rows_of = self._rows_of_asset = None
        try:
            index = _build_index(book)
            self._index, self._screens = index, {}
            n_acc = len(index.accounts)
            self._mark_f = np.full(len(index.pairs), np.nan)
            self._usd_f = np.full(len(index.assets), np.nan)
            self._refresh_prices(index.pairs, index.assets)
        except NotScreenable:
            self._index, self._screens = None, {}
            self.exact.rebase(book, None)
            return
        if full is not None:
            self.exact.restart(book, index.rank)
        else:
            self.exact.rebase(book, index.rank)
        self._group_rows = {
            f"group:{g}": np.array([index.rank[a] for a in members], dtype=np.intp)
            for g, members in book.groups.items()
        }
        self._hwm, self._dse = np.zeros(n_acc), np.zeros(n_acc)
        self._mday = np.full(n_acc, -1, dtype=np.intp)
        for account in index.accounts:
            self._store_marks(account)
        if full is not None:
            checks, limits = full
            for screen in self._limit_screens(limit for limit in limits if limit.enabled).values():
                screen.zones[screen.members] = 0
            self._zones_from(checks, None)
            return
        if old is not None:
            self._carry_zones(old, old_screens)

    def _carry_zones(self, old: _Index, old_screens: Mapping[Limit, _Screen]) -> None:
        """Zones of the subjects that still exist, by account (scalar limits) or account and instrument."""
        index = self._index
        assert index is not None
        for limit, previous in old_screens.items():
            screen = self._screen(limit)
            if limit.type in _POSITION:
                for i, key in enumerate(old.inst_key):
                    j = index.inst_of.get(key)
                    if j is not None:
                        screen.zones[j] = previous.zones[i]
            else:
                for i, account in enumerate(old.accounts):
                    j = index.rank.get(account)
                    if j is not None:
                        screen.zones[j] = previous.zones[i]

    def _limit_screens(self, limits: Iterable[Limit]) -> dict[Limit, _Screen]:
        return {limit: self._screen(limit) for limit in limits if screened(limit)}

    def _screen(self, limit: Limit) -> _Screen:
        known = self._screens.get(limit)
        if known is not None:
            return known
        ix = self._index
        assert ix is not None
        accounts = np.zeros(len(ix.accounts), dtype=bool)
        metas = self.book.accounts
        if limit.scope is Scope.ACCOUNT:
            members: Iterable[str] = (str(limit.scope_ref),) if limit.scope_ref in metas else ()
        elif limit.scope is Scope.GROUP:
            members = self.book.groups.get(str(limit.scope_ref), ())
        else:
            members = ix.accounts
        for account in members:
            if limit.venue is None or metas[account].venue == limit.venue:
                accounts[ix.rank[account]] = True
        if limit.type in _POSITION:
            mask = accounts[ix.inst_acct]
            for j, (_, pair, kind) in enumerate(ix.inst_key):
                if mask[j] and (
                    (limit.symbol is not None and pair != limit.symbol)
                    or (limit.kind is not None and kind != limit.kind)
                    or (limit.asset is not None and ix.inst_base[j] != limit.asset)
                ):
                    mask[j] = False
            screen = _Screen(mask, np.full(len(ix.inst_key), _UNKNOWN, dtype=np.int8))
        else:
            screen = _Screen(accounts, np.full(len(ix.accounts), _UNKNOWN, dtype=np.int8))
        self._screens[limit] = screen
        return screen

    def _refresh_prices(self, pairs: Iterable[str], assets: Iterable[str]) -> None:
        ix = self._index
        assert ix is not None
        table = self.book.prices
        for keys, of, source, into in (
            (pairs, ix.pair_of, table.mark_usd, self._mark_f),
            (assets, ix.asset_of, table.usd, self._usd_f),
        ):
            rows: list[int] = []
            values: list[Decimal | None] = []
            for key in keys:
                j = of.get(key)
                if j is not None:
                    rows.append(j)
                    values.append(source.get(key))
            if rows:
                into[rows] = _floats(values)

    def _store_marks(self, account: str) -> None:
        ix = self._index
        if ix is None:
            return
        i = ix.rank[account]
        marks = self.marks.get(account)
        if marks is None:
            self._mday[i] = -1
            return
        try:
            self._hwm[i], self._dse[i] = _f(marks.hwm), _f(marks.day_start_equity)
        except NotScreenable:  # NaN makes every interval that reads them uncertain: exact, always
            self._hwm[i], self._dse[i] = np.nan, np.nan
        self._mday[i] = marks.trading_day.toordinal()

    # --- a batch -------------------------------------------------------------------------------------------
    def advance(
        self,
        book: RiskBook,
        limits: Sequence[Limit],
        now: datetime,
        *,
        ticked_pairs: Collection[str],
        moved_pairs: Collection[str],
        moved_assets: Collection[str],
        repositioned: Collection[str],
    ) -> tuple[list[LevelChange], int]:
        """Adopt `book` (the previous book with the batch's ticks applied) and return the level changes that
        `reference.evaluate_accounts(book, limits, affected, now, ...)` implies (in its order), with the number
        of affected accounts. Affected, as `affected_accounts` has it: accounts trading a ticked pair, holding
        or quoted in an asset whose USD price moved, or whose positions changed.

        `ticked_pairs`: canonical pairs of the batch's price ticks; `moved_pairs`/`moved_assets`: pairs whose
        USD mark and assets whose USD price changed in value; `repositioned`: accounts whose positions changed."""
        structural = self._index is None or not (
            self._index.positions_map is book.positions
            and self._index.balances_map is book.balances
            and self._index.accounts_map is book.accounts
        )
        self.book, self.at = book, now
        if structural:
            self._reindex(book, None)
        elif moved_pairs or moved_assets:
            try:
                self._refresh_prices(moved_pairs, moved_assets)
            except NotScreenable:
                self._index, self._screens = None, {}
                self.exact.rebase(book, None)
        enabled = [limit for limit in limits if limit.enabled]
        day = trading_day(now, book.day_offset)
        ix = self._index
        if ix is None:  # values the screen can't bound: the exact path for everything
            return self._advance_exactly(
                enabled, now, day, ticked_pairs=ticked_pairs, moved_assets=moved_assets, repositioned=repositioned
            )
        mask = self._affected(ix, ticked_pairs, moved_assets, repositioned)
        self.exact.adopt_rows(book, mask)
        rows = np.flatnonzero(mask)
        groups = sorted(g for g, members in self._group_rows.items() if mask[members].any())
        floats = _Floats.of(ix, self._mark_f, self._usd_f)
        eq_moved = self._equity_moved(ix, moved_pairs, moved_assets, repositioned)
        self._fold(ix, floats, eq_moved=eq_moved, rows=rows, groups=groups, day=day)
        screens = self._limit_screens(enabled)
        self._screens = screens  # screens of limits no longer in force are dropped
        candidates = np.zeros(len(ix.accounts), dtype=bool)
        # Accounts whose positions changed are confirmed exactly: an instrument that closed has no subject left
        # in the index whose zone could say that its alert clears.
        candidates[[ix.rank[a] for a in repositioned if a in ix.rank]] = True
        for limit, screen in screens.items():
            self._candidates(ix, floats, limit, screen=screen, affected=mask, out=candidates)
        chosen = [ix.accounts[i] for i in np.flatnonzero(candidates)]
        self.confirmed = len(chosen)
        screened_limits = [limit for limit in enabled if limit in screens]
        emitted: list[LevelChange] = []
        clears: list[LevelChange] = []
        if chosen:
            scope = frozenset(chosen)
            checks = self._run(screened_limits, scope, scope, now, exposures=self.exact, marks=self.marks)
            self._zones_from(checks, scope)
            emitted, clears = self._changes(checks, {lim.name for lim in screened_limits}, scope)
        others = [limit for limit in enabled if limit not in screens]
        if others:
            affected = frozenset(ix.accounts[i] for i in rows)
            covered = frozenset({FIRM_KEY, *affected, *groups})
            checks = self._run(others, covered, affected, now, exposures=self.exact, marks=self.marks)
            more, more_clears = self._changes(checks, {limit.name for limit in others}, covered)
            emitted += more
            clears += more_clears
        return self._commit(enabled, (emitted, clears)), len(rows)

    def _advance_exactly(
        self,
        enabled: list[Limit],
        now: datetime,
        day: date,
        *,
        ticked_pairs: Collection[str],
        moved_assets: Collection[str],
        repositioned: Collection[str],
    ) -> tuple[list[LevelChange], int]:
        book = self.book
        affected = set(repositioned)
        for pair in ticked_pairs:
            affected |= book.accounts_by_pair.get(pair, frozenset())
        for asset in moved_assets:
            affected |= book.accounts_by_asset.get(asset, frozenset())
        affected &= book.accounts.keys()
        self.exact.adopt(book, affected)
        groups = {f"group:{g}" for a in affected for g in book.accounts[a].groups}
        covered = frozenset({FIRM_KEY, *affected, *groups})
        self._fold_exactly(covered, day)
        self.confirmed = len(affected)
        checks = self._run(enabled, covered, frozenset(affected), now, exposures=self.exact, marks=self.marks)
        return self._commit(enabled, self._changes(checks, {lim.name for lim in enabled}, covered)), len(affected)

    def _affected(
        self, ix: _Index, pairs: Collection[str], assets: Collection[str], repositioned: Collection[str]
    ) -> Bools:
        """The affected accounts as a row mask, from the book's tick indexes (row arrays cached per key while
        the indexes are the same objects: they change only with positions)."""
        book = self.book
        if self._rows_of is not book.accounts_by_pair or self._rows_of_asset is not book.accounts_by_asset:
            self._rows_of, self._rows_of_asset = book.accounts_by_pair, book.accounts_by_asset
            self._pair_rows, self._asset_rows = {}, {}
        found: list[Ints] = []
        for keys, index, cache in (
            (pairs, book.accounts_by_pair, self._pair_rows),
            (assets, book.accounts_by_asset, self._asset_rows),
        ):
            for key in keys:
                rows = cache.get(key)
                if rows is None:
                    rows = cache[key] = np.array(
                        sorted(ix.rank[a] for a in index.get(key, ()) if a in ix.rank), dtype=np.intp
                    )
                found.append(rows)
        found.append(np.array([ix.rank[a] for a in repositioned if a in ix.rank], dtype=np.intp))
        mask = np.zeros(len(ix.accounts), dtype=bool)
        mask[np.concatenate(found)] = True
        return mask

    def _commit(self, limits: list[Limit], found: tuple[list[LevelChange], list[LevelChange]]) -> list[LevelChange]:
        """The reference's order (emitted changes by limit, then clears in the order the levels were set),
        then the levels follow."""
        emitted, clears = found
        if len(limits) > 1:
            rank = {limit.name: i for i, limit in enumerate(limits)}
            emitted.sort(key=lambda ch: rank[ch.check.limit.name])
        if len(clears) > 1:
            order = {fp: i for i, fp in enumerate(self.levels)}
            clears.sort(key=lambda ch: order[ch.check.fingerprint])
        changes = emitted + clears
        levels = self.levels
        for change in changes:
            fp = change.check.fingerprint
            scope = change.check.subject.scope_key
            if change.level is Level.OK:
                levels.pop(fp, None)
                self._by_scope.get(scope, set()).discard(fp)
            else:
                levels[fp] = (change.level, change.check)
                self._by_scope.setdefault(scope, set()).add(fp)
        return changes

    def _run(
        self,
        limits: Iterable[Limit],
        covered: frozenset[str],
        affected: frozenset[str],
        now: datetime,
        *,
        exposures: Mapping[str, Exposure],
        marks: Mapping[str, PnlMarks],
        include_ok: bool = False,
    ) -> list[Check]:
        rank = self._index.rank if self._index is not None else None
        run = _TickRun(self.book, now, exposures, marks, covered, affected, include_ok, [], rank)
        with localcontext(RISK_CONTEXT):
            for limit in limits:
                run.limit(limit)
        return run.out

    def _changes(
        self, checks: Sequence[Check], names: Collection[str], covered: Collection[str]
    ) -> tuple[list[LevelChange], list[LevelChange]]:
        """`level_changes` for the given checks (emitted changes, clears), with clears limited to `names` in
        the `covered` scopes."""
        changes: list[LevelChange] = []
        clears: list[LevelChange] = []
        emitted = set()
        levels = self.levels
        for check in checks:
            fp = check.fingerprint
            emitted.add(fp)
            before = levels[fp][0] if fp in levels else Level.OK
            level = check.level if check.level is not Level.OK or check.value < check.clear else before
            if level is not before:
                changes.append(LevelChange(check, before, level, check.value))
        by_scope = self._by_scope
        for scope in covered:
            for fp in by_scope.get(scope, ()):
                before, check = levels[fp]
                if fp not in emitted and check.limit.name in names:
                    clears.append(LevelChange(check, before, Level.OK, None))
        return changes, clears

    def _zones_from(self, checks: Iterable[Check], accounts: frozenset[str] | None) -> None:
        """Exact zones of the screened subjects of `accounts` (None: all) from the exact checks: emitted
        checks by their value, every other member subject 0 (below clear)."""
        ix = self._index
        if ix is None:
            return
        if accounts is not None:
            rows = np.zeros(len(ix.accounts), dtype=bool)
            rows[[ix.rank[a] for a in accounts]] = True
            for limit, screen in self._screens.items():
                mask = rows[ix.inst_acct] if limit.type in _POSITION else rows
                screen.zones[mask & screen.members] = 0
        for check in checks:
            found = self._screens.get(check.limit)
            if found is None:
                continue
            subject = check.subject
            if check.limit.type in _POSITION:
                j = ix.inst_of.get((str(subject.account), str(subject.symbol), str(subject.kind)))
            else:
                j = ix.rank.get(str(subject.account))
            if j is not None:
                found.zones[j] = _zone_of(check.value, check.limit)

    def _candidates(
        self, ix: _Index, fl: _Floats, limit: Limit, *, screen: _Screen, affected: Bools, out: Bools
    ) -> None:
        """Mark in `out` the accounts whose subjects of `limit` are uncertain or left their zone."""
        rho = ix.rho
        kind = limit.type
        if kind in _POSITION:
            consider = screen.members & affected[ix.inst_acct]
            if kind is LimitType.POSITION_NOTIONAL:
                value, margin = np.abs(fl.inst_n), rho * fl.inst_abs
            else:
                value = fl.inst_q if limit.side is Side.LONG else -fl.inst_q
                margin = rho * fl.inst_qabs
            lo = np.where(fl.inst_priced, np.maximum(value - margin, 0.0), 0.0)
            hi = np.where(fl.inst_priced, np.maximum(value + margin, 0.0), 0.0)
        else:
            consider = screen.members & affected
            lo, hi = self._interval(fl, limit, rho)
        z_lo, z_hi = _zones(lo * (1 - WIDEN), limit), _zones(hi * (1 + WIDEN), limit)
        cand = consider & ((z_lo != z_hi) | (z_lo != screen.zones) | np.isnan(lo) | np.isnan(hi))
        if kind in _POSITION:
            out[ix.inst_acct[cand]] = True
        else:
            out |= cand

    def _interval(self, fl: _Floats, limit: Limit, rho: float) -> tuple[Floats, Floats]:
        kind = limit.type
        g, e, ea = fl.gross, fl.equity, fl.equity_abs
        if kind is LimitType.GROSS_NOTIONAL:
            return g * (1 - rho), g * (1 + rho)
        if kind is LimitType.NET_NOTIONAL:
            return np.maximum(np.abs(fl.net) - rho * g, 0.0), np.abs(fl.net) + rho * g
        e_lo, e_hi = e - rho * ea, e + rho * ea
        if kind is LimitType.LEVERAGE:  # Infinity when equity ≤ 0
            with np.errstate(divide="ignore", invalid="ignore"):
                lo = np.where(e_hi <= 0, np.inf, g * (1 - rho) / np.where(e_hi > 0, e_hi, 1.0))
                hi = np.where(e_lo <= 0, np.inf, g * (1 + rho) / np.where(e_lo > 0, e_lo, 1.0))
            return lo, hi
        has = self._mday >= 0
        if kind is LimitType.DAILY_LOSS:  # max(0, day start − equity); no marks: 0
            slack = rho * np.abs(self._dse)
            lo = np.where(has, np.maximum(self._dse - e_hi - slack, 0.0), 0.0)
            hi = np.where(has, np.maximum(self._dse - e_lo + slack, 0.0), 0.0)
            return lo, hi
        # drawdown: (hwm − equity) / hwm when hwm > 0 and equity < hwm, else 0
        hwm = self._hwm
        pos = has & (hwm > 0)
        safe = np.where(pos, hwm, 1.0)
        lo = np.where(pos, np.maximum((hwm - e_hi - rho * safe) / safe, 0.0), 0.0)
        hi = np.where(pos, np.maximum((hwm - e_lo + rho * safe) / safe, 0.0), 0.0)
        return lo, hi

    # --- P&L marks -----------------------------------------------------------------------------------------
    def _equity_moved(
        self, ix: _Index, pairs: Collection[str], assets: Collection[str], repositioned: Collection[str]
    ) -> Bools:
        """Accounts whose equity may differ from the last fold: a balance asset or a derivative/option
        position's mark or quote moved, or positions changed. Spot positions are not in equity."""
        pair_moved = np.zeros(len(ix.pairs), dtype=bool)
        pair_moved[[ix.pair_of[p] for p in pairs if p in ix.pair_of]] = True
        asset_moved = np.zeros(len(ix.assets), dtype=bool)
        asset_moved[[ix.asset_of[a] for a in assets if a in ix.asset_of]] = True
        n = len(ix.accounts)
        moved = np.zeros(n, dtype=bool)
        if len(ix.b_acct):
            moved[ix.b_acct[asset_moved[ix.b_asset]]] = True
        if len(ix.p_acct):
            hit = (ix.p_kind != _SPOT) & (pair_moved[ix.p_pair] | asset_moved[ix.p_quote])
            moved[ix.p_acct[hit]] = True
        moved[[ix.rank[a] for a in repositioned if a in ix.rank]] = True
        return moved

    def _fold(self, ix: _Index, fl: _Floats, *, eq_moved: Bools, rows: Ints, groups: list[str], day: date) -> None:
        """Fold the covered scopes' marks as the reference does, exactly, where the fold can change them: a
        new trading day, no marks yet, or an equity that moved and may have passed the high-water mark
        (after any fold equity ≤ hwm, so an unmoved equity leaves the marks as they are)."""
        rho, ordinal = ix.rho, day.toordinal()
        if len(rows):
            e_hi = (fl.equity[rows] + rho * fl.equity_abs[rows]) * (1 + WIDEN)
            hwm = self._hwm[rows]
            need = (self._mday[rows] < 0) | (self._mday[rows] < ordinal) | np.isnan(hwm)
            need |= eq_moved[rows] & ~(e_hi < hwm - WIDEN * np.abs(hwm))
            for i in rows[need]:
                account = ix.accounts[i]
                old = self.marks.get(account)
                new = fold_marks(old, self.exact[account].equity, day)
                if new is not old:
                    self.marks[account] = new
                    self._store_marks(account)
        for key in [FIRM_KEY, *groups]:
            old = self.marks.get(key)
            if old is not None and old.trading_day >= day:
                if key == FIRM_KEY:
                    moved, equity, equity_abs = eq_moved.any(), fl.equity.sum(), fl.equity_abs.sum()
                else:
                    idx = self._group_rows[key]
                    moved, equity, equity_abs = eq_moved[idx].any(), fl.equity[idx].sum(), fl.equity_abs[idx].sum()
                if not moved:
                    continue
                e_hi = (equity + rho * equity_abs) * (1 + WIDEN)
                top = float(old.hwm)
                if e_hi < top - WIDEN * abs(top):  # NaN/inf compare False: folded exactly
                    continue
            new = fold_marks(old, self.exact[key].equity, day)
            if new is not old:
                self.marks[key] = new

    def _fold_exactly(self, covered: Collection[str], day: date) -> None:
        for key in covered:
            old = self.marks.get(key)
            new = fold_marks(old, self.exact[key].equity, day)
            if new is not old:
                self.marks[key] = new

    # --- reads ---------------------------------------------------------------------------------------------
    def account_view(self, account: str, limits: Sequence[Limit]) -> AccountView:
        """The account's exact exposure, marks and include_ok checks of its own scope (GetRiskSummary)."""
        scope = frozenset({account})
        enabled = [limit for limit in limits if limit.enabled]
        # As an evaluation of the account now would: its marks folded (a new trading day may have begun since
        # a batch last covered the account); the state's own marks stay as the reference would keep them.
        exposures = _WhatIf(self.exact, account, self.exact.now(account))
        marks = _FoldedMarks(self.marks, exposures, scope, trading_day(self.at, self.book.day_offset))
        checks = self._run(enabled, scope, scope, self.at, exposures=exposures, marks=marks, include_ok=True)
        mine = tuple(c for c in checks if account in (c.subject.account, c.subject.scope_key))
        return AccountView(exposures[account], marks.get(account), mine)

    def what_if(
        self, account: str, positions: tuple[Position, ...], limits: Sequence[Limit], now: datetime
    ) -> tuple[list[Check], list[Check]]:
        """include_ok checks before and after the account's positions became `positions`, on the account, its
        groups and the firm; nothing in the state changes. Only the account is revalued; aggregates are
        re-summed only if a limit reads them."""
        book = self.book
        meta = book.accounts[account]
        with localcontext(RISK_CONTEXT):
            after = account_exposure(meta, positions, book.balances.get(account, ()), book.prices)
        groups = {f"group:{g}" for g in meta.groups}
        covered = frozenset({FIRM_KEY, account, *groups})
        affected = frozenset({account})
        day = trading_day(now, book.day_offset)
        enabled = [limit for limit in limits if limit.enabled]
        current = _WhatIf(self.exact, account, self.exact.now(account))  # a read revalues the account
        what_if = _WhatIf(self.exact, account, after)
        before_marks = _FoldedMarks(self.marks, current, covered, day)
        after_marks = _FoldedMarks(self.marks, what_if, covered, day)
        before = self._run(enabled, covered, affected, now, exposures=current, marks=before_marks, include_ok=True)
        after_checks = self._run(enabled, covered, affected, now, exposures=what_if, marks=after_marks, include_ok=True)
        return before, after_checks


@dataclass(slots=True)
class _Floats:
    gross: Floats
    net: Floats
    equity: Floats
    equity_abs: Floats
    inst_n: Floats
    inst_abs: Floats
    inst_q: Floats
    inst_qabs: Floats
    inst_priced: Bools

    @staticmethod
    def of(ix: _Index, mark_f: Floats, usd_f: Floats) -> _Floats:
        n_acc, n_inst = len(ix.accounts), len(ix.inst_key)
        q = usd_f[ix.p_quote]
        per_unit = np.where(ix.p_own, q, mark_f[ix.p_pair])
        priced = ~np.isnan(q) & ~np.isnan(per_unit)
        notional = np.where(priced, ix.p_a * per_unit, 0.0)  # NaN × finite is NaN, quietly; `where` drops it
        abs_n = np.abs(notional)
        derivative = priced & (ix.p_kind == _DERIVATIVE)
        cost_q = np.where(derivative, ix.p_cost * q, 0.0)
        option = priced & (ix.p_kind == _OPTION)
        eq_term = np.where(option, notional, 0.0) + np.where(derivative, notional - cost_q, 0.0)
        eq_abs = np.where(option | derivative, abs_n, 0.0) + np.abs(cost_q)
        b_usd = usd_f[ix.b_asset]
        b_value = np.where(np.isnan(b_usd), 0.0, ix.b_total * b_usd)
        qty = np.where(priced, ix.p_qty, 0.0)
        return _Floats(
            gross=_sums(ix.p_acct, abs_n, n_acc),
            net=_sums(ix.p_acct, notional, n_acc),
            equity=_sums(ix.p_acct, eq_term, n_acc) + _sums(ix.b_acct, b_value, n_acc),
            equity_abs=_sums(ix.p_acct, eq_abs, n_acc) + _sums(ix.b_acct, np.abs(b_value), n_acc),
            inst_n=_sums(ix.p_inst, notional, n_inst),
            inst_abs=_sums(ix.p_inst, abs_n, n_inst),
            inst_q=_sums(ix.p_inst, qty, n_inst),
            inst_qabs=_sums(ix.p_inst, np.abs(qty), n_inst),
            inst_priced=_sums(ix.p_inst, priced, n_inst) > 0,
        )


def _sums(segments: Ints, weights: Floats | Bools, count: int) -> Floats:
    """Float sums per segment, in any order (the error bound does not depend on it)."""
    return np.bincount(segments, weights, count).astype(np.float64, copy=False)


def _zones(values: Floats, limit: Limit) -> Zones:
    out = np.zeros(len(values), dtype=np.int8)
    out[values >= float(limit.clear_at)] = 1
    if limit.warn is not None:
        out[values > float(limit.warn)] = 2
    if limit.critical is not None:
        out[values > float(limit.critical)] = 3
    return out


def _zone_of(value: Decimal, limit: Limit) -> int:
    if limit.critical is not None and value > limit.critical:
        return 3
    if limit.warn is not None and value > limit.warn:
        return 2
    return 1 if value >= limit.clear_at else 0


__all__ = ["AccountView", "ExactExposures", "LevelChange", "NotScreenable", "TickState", "screened"]
