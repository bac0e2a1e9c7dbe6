"""The fast full evaluation: a float screen over numpy arrays, then exact Decimal for everything reported.

How it stays exact (docs/risk-model.md, "Performance"):

- Floats only *screen*. Every (limit, subject) whose float value, widened by a proven error bound, could
  reach the limit's clear threshold is a *candidate*; everything else is provably below clear and emits
  nothing (which is all the reference does with it). Candidates are recomputed exactly.
- Exact figures replay the reference's Decimal operations in the reference's order, only vectorised:
  numpy object arrays call `Decimal.__mul__`/`__add__` element by element under `RISK_CONTEXT`, and
  `np.add.reduceat` over `[ZERO, t0, t1, ...]` is the same left fold as `total = ZERO; total += t`.
  Skipped (unpriced, spot-for-equity) terms are filled with `ZERO`, which is an exact identity for a
  running sum that starts at `ZERO`. So values, exponents and 28-digit roundings equal the reference's.
- `Evaluation.exposures` and the new P&L marks are exact too, computed on first access
  (`_LazyExposures`, `_Marks`): most evaluations never read most of them.
- Limit types this module does not vectorise run the reference handler (`reference.Run`) over those
  lazily exact mappings: correct, and as fast as the reference for that limit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from models.risk.book import RiskBook
from models.risk.exposure import (
    INFINITY,
    NO_CUSTODIAN,
    Exposure,
    account_exposure,
    aggregate,
    leverage,
)
from models.risk.limits import FIRM_KEY, Dimension, Limit, LimitType, Measure, Scope, Side
from models.risk.pnl import PnlMarks, daily_loss, drawdown, fold_marks, trading_day
from models.risk.reconcile import reconcile, unsettled_exposure
from models.risk.reference import Run
from models.risk.results import RISK_CONTEXT, Check, Evaluation, Subject
from models.risk.values import ONE, ZERO, InstrumentKind, Position

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]

UNIT_ROUNDOFF = 2.0**-53
# Relative slack on top of the summation bound: absorbs Decimal→float conversion of thresholds, marks and
# prices (≤ 2^-53 each), the few float operations after the sums, and the reference's own 28-digit
# rounding of quotients (≤ 5·10^-28). Orders of magnitude larger than all of them together.
SLACK = 1e-12
# Magnitudes the screen accepts: products and sums of up to 10^9 such terms stay normal floats (no overflow,
# no underflow), so every float operation has relative error ≤ 2^-53. Anything else (or a non-finite
# Decimal) sends the evaluation to the reference path.
_HUGE = 1e150
_TINY = 1e-150

_SPOT, _DERIVATIVE, _OPTION = 0, 1, 2
_KIND_CODES = {kind.value: i for i, kind in enumerate(InstrumentKind)}
_NEW, _NEW_DAY, _SAME_DAY, _NEW_HIGH = 0, 1, 2, 3  # how a scope's P&L marks fold this evaluation


class NotIndexable(ValueError):
    """The book holds values the float screen can't bound (non-finite or beyond float range)."""


def _f(value: Decimal) -> float:
    if not value.is_finite():
        raise NotIndexable(str(value))
    out = float(value)
    if not (abs(out) < _HUGE and (out == 0.0 or abs(out) > _TINY)) or (out == 0.0 and value):
        raise NotIndexable(str(value))
    return out


def _sums(segments: Ints, weights: Floats, count: int) -> Floats:
    """Float sums per segment (any order: the error bound in the docs does not depend on it)."""
    return np.bincount(segments, weights, count).astype(np.float64, copy=False)


def _objects(values: list[Any]) -> Objects:
    out: Objects = np.fromiter(values, dtype=object, count=len(values))  # 5x faster than slice assignment
    return out


def fold(values: Objects, segments: Ints, count: int) -> Objects:
    """Per segment, `ZERO + v0 + v1 + ...` left to right: the reference's running sums, exactly.

    `segments` must be non-decreasing in [0, count); empty segments give ZERO.
    """
    if count == 0:
        return np.empty(0, dtype=object)
    sizes = np.bincount(segments, minlength=count) + 1
    starts = np.zeros(count, dtype=np.intp)
    np.cumsum(sizes[:-1], out=starts[1:])
    buffer = np.full(len(values) + count, ZERO, dtype=object)
    buffer[np.arange(len(values)) + segments + 1] = values
    result: Objects = np.add.reduceat(buffer, starts)
    return result


def _floats(values: list[Decimal]) -> Floats:
    """`_f` over a column, vectorised: the same conversions (correctly rounded) and the same rejections."""
    try:
        out = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError as exc:  # a signalling NaN
        raise NotIndexable(str(exc)) from None
    magnitude = np.abs(out)
    zero = out == 0.0
    if not np.all((magnitude < _HUGE) & (zero | (magnitude > _TINY))):  # NaN fails the first test
        raise NotIndexable("value beyond the float screen's range")
    for i in np.nonzero(zero)[0].tolist():  # a nonzero value that underflowed to 0.0
        if values[i]:
            raise NotIndexable(str(values[i]))
    return out


def _floats_except(values: list[Decimal], known_f: Floats, differ: list[int]) -> Floats:
    """`_floats(values)` where `known_f` already holds the conversion of every value not listed in `differ`."""
    if not differ:
        return known_f
    out = known_f.copy()
    out[differ] = _floats([values[i] for i in differ])
    return out


# Row columns of the index, per position and per balance; `patch_index` splices them by account.
_P_COLUMNS = (
    "p_acct",
    "p_pair",
    "p_quote",
    "p_base",
    "p_kind",
    "p_kcode",
    "p_own",
    "p_first",
    "p_local",
    "p_a",
    "p_a_f",
    "p_cost",
    "p_cost_f",
    "p_units",
    "p_units_f",
    "p_qty",
    "p_qty_f",
)
_B_COLUMNS = ("b_acct", "b_asset", "b_total", "b_total_f", "b_nonzero")
_KIND_BY_CODE = [kind.value for kind in InstrumentKind]


@dataclass(slots=True)
class Reconciled:
    """One reconciliation limit's mismatches: which accounts are done, and those with mismatches."""

    done: Bools
    mismatches: dict[int, list[Any]]

    def without(self, accounts: list[int]) -> Reconciled:
        done = self.done.copy()
        done[accounts] = False
        stale = set(accounts)
        return Reconciled(done, {i: m for i, m in self.mismatches.items() if i not in stale})


@dataclass(slots=True)
class BookIndex:
    """Price-independent arrays over a book's positions and balances, in the reference's iteration order
    (accounts as in `book.accounts`, then each account's rows in order).

    Built once per book, or derived from the previous book's index by `patch_index`, which rebuilds only
    the rows of accounts whose rows changed (the evaluation job keeps its book between passes)."""

    positions_map: object
    balances_map: object
    accounts_map: object
    custody_map: object
    accounts: list[str]
    rank: dict[str, int]
    pair_codes: dict[str, int]  # append-only across patches, so the codes of kept rows stay valid
    asset_codes: dict[str, int]
    p_acct: Ints
    p_pair: Ints
    p_quote: Ints
    p_base: Ints
    p_kind: Ints  # _SPOT / _DERIVATIVE / _OPTION
    p_kcode: Ints  # InstrumentKind, by position in the enum
    p_own: Bools
    p_first: Bools  # the first position of its (account, instrument)
    p_local: Ints  # the instrument's number within its account, in first-appearance order
    p_a: Objects  # units (market mark) or units × mark_price (venue mark): × pair mark / quote USD = notional
    p_a_f: Floats
    p_cost: Objects
    p_cost_f: Floats
    p_units: Objects
    p_units_f: Floats
    p_qty: Objects
    p_qty_f: Floats
    p_start: Ints  # per account index, its first position (n_accounts + 1 entries)
    p_inst: Ints  # (account, instrument) segment, numbered in first-appearance order
    b_acct: Ints
    b_asset: Ints
    b_total: Objects
    b_total_f: Floats
    b_nonzero: Bools
    eq_order: Ints  # [positions | balances] sorted by account, positions first: the equity fold order
    eq_seg: Ints
    inst_acct: Ints
    inst_pair_code: Ints
    inst_kind_code: Ints
    inst_base_code: Ints
    options: Ints
    venues: list[str]
    custodians: list[str]
    n_positions: int
    terms: int  # positions + balances + 1: bounds the number of terms in any float sum
    subjects: dict[tuple[str, str | None, str | None], Subject] = field(default_factory=dict)
    instrument_subjects: dict[tuple[str, str, str], Subject] = field(default_factory=dict)
    # reconciliation key -> mismatches per account (price-independent; dropped for changed accounts)
    reconciled: dict[tuple[Any, ...], Reconciled] = field(default_factory=dict)
    memo: ExactMemo | None = None  # the last run's exact figures (see _FastRun._reuse)

    @property
    def pairs(self) -> list[str]:
        return list(self.pair_codes)

    @property
    def assets(self) -> list[str]:
        return list(self.asset_codes)

    def position(self, book: RiskBook, i: int) -> Position:
        """Position row `i` as the book holds it."""
        account = int(self.p_acct[i])
        return book.positions[self.accounts[account]][i - int(self.p_start[account])]

    def instrument(self, inst: int) -> tuple[str, str]:
        """(pair, kind value) of instrument segment `inst`."""
        return self.pairs[int(self.inst_pair_code[inst])], _KIND_BY_CODE[int(self.inst_kind_code[inst])]


def book_index(book: RiskBook) -> BookIndex:
    """The book's index, reused while positions, balances and accounts are the same objects."""
    cached = book.index_cache.get("fast")
    if isinstance(cached, BookIndex) and indexes(cached, book):
        return cached
    index = _build_index(book)
    book.index_cache["fast"] = index
    return index


def indexes(index: BookIndex, book: RiskBook) -> bool:
    return (
        index.positions_map is book.positions
        and index.balances_map is book.balances
        and index.accounts_map is book.accounts
        and index.custody_map is book.custody
    )


def _codes(names: list[str], table: dict[str, int]) -> Ints:
    """Codes of names, new names numbered in first-appearance order after the table's."""
    for name in dict.fromkeys(names):
        table.setdefault(name, len(table))
    return np.fromiter(map(table.__getitem__, names), dtype=np.intp, count=len(names))


def _instruments(acct: Ints, instrument: Ints) -> tuple[Bools, Ints]:
    """Per position (grouped by account): is it its (account, instrument)'s first, and the instrument's
    number within the account in first-appearance order (the reference's dict order)."""
    first = np.zeros(len(acct), dtype=bool)
    if len(acct) == 0:
        return first, np.zeros(0, dtype=np.intp)
    key = acct.astype(np.int64) * (int(instrument.max()) + 1) + instrument
    _, heads, group = np.unique(key, return_index=True, return_inverse=True)
    first[heads] = True
    order = np.argsort(heads)  # groups by first appearance: per account, in first-appearance order
    owners = acct[heads[order]]
    number_of_group = np.empty(len(heads), dtype=np.intp)
    number_of_group[order] = np.arange(len(order)) - np.searchsorted(owners, owners, side="left")
    local: Ints = number_of_group[group.reshape(-1)]
    return first, local


def _position_rows(
    book: RiskBook, ranks: list[int], pair_codes: dict[str, int], asset_codes: dict[str, int]
) -> dict[str, Any]:
    """Index columns of these accounts' positions (account indices ascending), in account then row order."""
    rows: list[Position] = []
    acct: list[int] = []
    accounts = list(book.accounts)
    for i in ranks:
        items = book.positions.get(accounts[i])
        if items:
            rows += items
            acct += [i] * len(items)
    spot, option = InstrumentKind.SPOT, InstrumentKind.OPTION
    kind_codes = {kind: code for code, kind in enumerate(InstrumentKind)}
    with localcontext(RISK_CONTEXT):
        a = [p.units if p.mark_price is None else p.units * p.mark_price for p in rows]
    cost = [p.cost for p in rows]
    units = [p.units for p in rows]
    qty = [p.quantity for p in rows]

    qty_f = _floats(qty)
    cost_f = _floats(cost)
    # Most positions have multiplier 1 (units == quantity) and no venue mark (a is units): convert only the rest.
    units_f = _floats_except(units, qty_f, [i for i, p in enumerate(rows) if p.multiplier is not ONE])
    a_f = _floats_except(a, units_f, [i for i, p in enumerate(rows) if p.mark_price is not None])
    p_acct = np.array(acct, dtype=np.intp)
    p_pair = _codes([p.pair for p in rows], pair_codes)
    p_kcode = np.array([kind_codes[p.kind] for p in rows], dtype=np.intp)
    first, local = _instruments(p_acct, p_pair * len(kind_codes) + p_kcode)
    return {
        "p_acct": p_acct,
        "p_pair": p_pair,
        "p_quote": _codes([p.quote for p in rows], asset_codes),
        "p_base": _codes([p.base for p in rows], asset_codes),
        "p_kind": np.array(
            [_SPOT if p.kind is spot else _OPTION if p.kind is option else _DERIVATIVE for p in rows], dtype=np.intp
        ),
        "p_kcode": p_kcode,
        "p_own": np.array([p.mark_price is not None for p in rows], dtype=bool),
        "p_first": first,
        "p_local": local,
        "p_a": _objects(a),
        "p_a_f": a_f,
        "p_cost": _objects(cost),
        "p_cost_f": cost_f,
        "p_units": _objects(units),
        "p_units_f": units_f,
        "p_qty": _objects(qty),
        "p_qty_f": qty_f,
    }


def _balance_rows(book: RiskBook, ranks: list[int], asset_codes: dict[str, int]) -> dict[str, Any]:
    accounts = list(book.accounts)
    acct: list[int] = []
    totals: list[Decimal] = []
    assets: list[int] = []
    for i in ranks:
        for b in book.balances.get(accounts[i], ()):
            acct.append(i)
            assets.append(asset_codes.setdefault(b.asset, len(asset_codes)))
            totals.append(b.total)
    return {
        "b_acct": np.array(acct, dtype=np.intp),
        "b_asset": np.array(assets, dtype=np.intp),
        "b_total": _objects(totals),
        "b_total_f": _floats(totals),
        "b_nonzero": np.array([bool(t) for t in totals], dtype=bool),
    }


def _build_index(book: RiskBook) -> BookIndex:
    accounts = list(book.accounts)
    everyone = list(range(len(accounts)))
    pair_codes: dict[str, int] = {}
    asset_codes: dict[str, int] = {}
    p = _position_rows(book, everyone, pair_codes, asset_codes)
    b = _balance_rows(book, everyone, asset_codes)
    metas = book.accounts
    venues = [metas[a].venue for a in accounts]
    custodians = [metas[a].custodian or NO_CUSTODIAN for a in accounts]
    return _assemble(
        book,
        accounts,
        pair_codes=pair_codes,
        asset_codes=asset_codes,
        p=p,
        b=b,
        venues=venues,
        custodians=custodians,
        reconciled={},
    )


def _assemble(
    book: RiskBook,
    accounts: list[str],
    *,
    pair_codes: dict[str, int],
    asset_codes: dict[str, int],
    p: dict[str, Any],
    b: dict[str, Any],
    venues: list[str],
    custodians: list[str],
    reconciled: dict[tuple[Any, ...], Reconciled],
) -> BookIndex:
    """The derived arrays (instrument segments, equity fold order) from the row columns."""
    n = len(accounts)
    p_acct, first = p["p_acct"], p["p_first"]
    offsets = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(np.bincount(p_acct[first], minlength=n), out=offsets[1:])
    starts = np.searchsorted(p_acct, np.arange(n + 1))
    heads = np.nonzero(first)[0]
    keys = np.concatenate([p_acct * 2, b["b_acct"] * 2 + 1])
    eq_order = np.argsort(keys, kind="stable")
    n_positions = len(p_acct)
    return BookIndex(
        positions_map=book.positions,
        balances_map=book.balances,
        accounts_map=book.accounts,
        custody_map=book.custody,
        accounts=accounts,
        rank={a: i for i, a in enumerate(accounts)},
        pair_codes=pair_codes,
        asset_codes=asset_codes,
        **p,
        p_start=starts,
        p_inst=offsets[p_acct] + p["p_local"],
        **b,
        eq_order=eq_order,
        eq_seg=keys[eq_order] // 2,
        inst_acct=p_acct[heads],
        inst_pair_code=p["p_pair"][heads],
        inst_kind_code=p["p_kcode"][heads],
        inst_base_code=p["p_base"][heads],
        options=np.nonzero(p["p_kind"] == _OPTION)[0],
        venues=venues,
        custodians=custodians,
        n_positions=n_positions,
        terms=n_positions + len(b["b_acct"]) + 1,
        reconciled=reconciled,
    )


def _splice(
    previous: BookIndex, names: tuple[str, ...], account_column: str, new: dict[str, Any], changed: Bools
) -> dict[str, Any]:
    """Previous rows of unchanged accounts plus the new rows of changed ones, back in account order."""
    keep = ~changed[getattr(previous, account_column)]
    merged = {name: np.concatenate([getattr(previous, name)[keep], new[name]]) for name in names}
    order = np.argsort(merged[account_column], kind="stable")  # each account's rows are all old or all new
    return {name: column[order] for name, column in merged.items()}


def patch_index(
    previous: BookIndex,
    book: RiskBook,
    *,
    positions: Collection[str] = (),
    balances: Collection[str] = (),
    custody: Collection[str] = (),
) -> BookIndex:
    """`book`'s index from the index of a book with the same accounts mapping, whose positions, balances and
    custody rows differ only for the named accounts. Equal to a fresh build (tests compare them)."""
    if previous.accounts_map is not book.accounts:
        return _build_index(book)
    rank = previous.rank
    pair_codes, asset_codes = dict(previous.pair_codes), dict(previous.asset_codes)
    n = len(previous.accounts)

    def mask(keys: Collection[str]) -> tuple[list[int], Bools]:
        ranks = sorted({rank[a] for a in keys if a in rank})
        changed = np.zeros(n, dtype=bool)
        changed[ranks] = True
        return ranks, changed

    if positions:
        ranks, changed = mask(positions)
        new = _position_rows(book, ranks, pair_codes, asset_codes)
        p = _splice(previous, _P_COLUMNS, "p_acct", new, changed)
    else:
        p = {name: getattr(previous, name) for name in _P_COLUMNS}
    if balances:
        ranks, changed = mask(balances)
        b = _splice(previous, _B_COLUMNS, "b_acct", _balance_rows(book, ranks, asset_codes), changed)
    else:
        b = {name: getattr(previous, name) for name in _B_COLUMNS}
    stale = [rank[a] for a in (*balances, *custody) if a in rank]
    reconciled = {key: known.without(stale) for key, known in previous.reconciled.items()}
    index = _assemble(
        book,
        previous.accounts,
        pair_codes=pair_codes,
        asset_codes=asset_codes,
        p=p,
        b=b,
        venues=previous.venues,
        custodians=previous.custodians,
        reconciled=reconciled,
    )
    index.subjects = previous.subjects  # keyed by names only: still right
    index.instrument_subjects = previous.instrument_subjects
    memo = previous.memo
    if memo is not None:  # exact figures of accounts whose rows did not change still hold at their prices
        done = memo.done.copy()
        done[[rank[a] for a in (*positions, *balances) if a in rank]] = False
        index.memo = ExactMemo(memo.pair_mark, memo.asset_usd, memo.gross, memo.net, memo.equity, done)
    return index


@dataclass(slots=True)
class ExactMemo:
    """Exact per-account figures of the last evaluation over an index, and the prices they were computed at.
    The arrays are the run's own (filled in as it confirms accounts); the next run copies what still holds."""

    pair_mark: list[Decimal | None]  # per pair code: its USD mark
    asset_usd: list[Decimal | None]  # per asset code
    gross: Objects
    net: Objects
    equity: Objects
    done: Bools
    notional: Objects | None = None


def _moved_prices(before: list[Decimal | None], now: list[Decimal | None]) -> Ints:
    """Codes whose price is not the same Decimal as before (value and exponent), or is new."""
    moved = [
        code
        for code, price in enumerate(now)
        if code >= len(before)
        or (price is None) != (before[code] is None)
        or (price is not None and price.as_tuple() != before[code].as_tuple())  # type: ignore[union-attr]
    ]
    return np.array(moved, dtype=np.intp)


class _LazyExposures(Mapping[str, Exposure]):
    """Every account, "firm" and every group, in the reference's key order; each computed exactly (by the
    reference functions) on first access and then kept."""

    def __init__(self, book: RiskBook, accounts: list[str]) -> None:
        self._book = book
        self._keys = [*accounts, FIRM_KEY, *(f"group:{g}" for g in book.groups)]
        self._key_set = frozenset(self._keys)
        self._done: dict[str, Exposure] = {}

    def __getitem__(self, key: str) -> Exposure:
        done = self._done.get(key)
        if done is not None:
            return done
        if key not in self._key_set:
            raise KeyError(key)
        book = self._book
        with localcontext(RISK_CONTEXT):
            if key == FIRM_KEY:
                value = aggregate(FIRM_KEY, [self[a] for a in book.accounts])
            elif key.startswith("group:") and key[6:] in book.groups and key not in book.accounts:
                value = aggregate(key, [self[a] for a in book.groups[key[6:]]])
            else:
                meta = book.accounts[key]
                value = account_exposure(meta, book.positions.get(key, ()), book.balances.get(key, ()), book.prices)
        self._done[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set


class _Marks(Mapping[str, PnlMarks]):
    """P&L marks: the previous ones, overlaid with those this evaluation changed, computed on access."""

    def __init__(self, run: _FastRun, base: Mapping[str, PnlMarks], changed: dict[str, PnlMarks | None]) -> None:
        self._run = run
        self._base = base
        self._changed = changed  # key -> marks before this evaluation (None: no marks yet)
        self._done: dict[str, PnlMarks] = {}
        self._keys = [*base, *(k for k in changed if k not in base)]

    def __getitem__(self, key: str) -> PnlMarks:
        if key in self._changed:
            done = self._done.get(key)
            if done is None:
                if not self._done:  # first access: exact equity of every account with new marks, in one batch
                    rank = self._run.index.rank
                    pending = sorted(rank[k] for k in self._changed if k in rank)
                    self._run.ensure_exact(np.array(pending, dtype=np.intp))
                done = fold_marks(self._changed[key], self._run.exact_equity(key), self._run.day)
                self._done[key] = done
            return done
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._changed or key in self._base

    def changed_view(self) -> _ChangedMarks:
        return _ChangedMarks(self)


class _ChangedMarks(Mapping[str, PnlMarks]):
    def __init__(self, marks: _Marks) -> None:
        self._marks = marks

    def __getitem__(self, key: str) -> PnlMarks:
        if key not in self._marks._changed:
            raise KeyError(key)
        return self._marks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._marks._changed)

    def __len__(self) -> int:
        return len(self._marks._changed)

    def __contains__(self, key: object) -> bool:
        return key in self._marks._changed


def evaluate(book: RiskBook, limits: list[Limit], now: datetime) -> Evaluation | None:
    """The full evaluation (include_ok=False), or None when the book can't be screened in floats."""
    try:
        index = book_index(book)
    except NotIndexable:
        return None
    with localcontext(RISK_CONTEXT):
        try:
            run = _FastRun(book, index, now)
        except NotIndexable:
            return None
        enabled = [limit for limit in limits if limit.enabled]
        for limit in enabled:
            run.limit(limit)
    return Evaluation(
        at=now,
        checks=tuple(run.out),
        exposures=run.exposures,
        marks=run.marks,
        changed_marks=run.marks.changed_view(),
        covered=frozenset(run.exposures),
        limits=frozenset(limit.name for limit in enabled),
    )


class _FastRun:
    """One evaluation: float arrays for the screen, exact values filled in on demand."""

    def __init__(self, book: RiskBook, index: BookIndex, now: datetime) -> None:
        self.book = book
        self.index = index
        self.now = now
        self.day: date = trading_day(now, book.day_offset)
        self.out: list[Check] = []
        ix = index
        table = book.prices
        n_accounts = len(ix.accounts)
        self.n_accounts = n_accounts
        self.rho = 2.0 * (ix.terms + 4) * UNIT_ROUNDOFF + SLACK
        pair_marks = [table.mark_usd.get(pair) for pair in ix.pairs]
        asset_usd = [table.usd.get(asset) for asset in ix.assets]
        self.pair_ok = np.array([m is not None for m in pair_marks], dtype=bool)
        self.asset_ok = np.array([u is not None for u in asset_usd], dtype=bool)
        self.pair_mark = _objects([m if m is not None else ZERO for m in pair_marks])
        self.asset_usd = _objects([u if u is not None else ZERO for u in asset_usd])
        pair_f = np.array([_f(m) if m is not None else 0.0 for m in pair_marks])
        asset_f = np.array([_f(u) if u is not None else 0.0 for u in asset_usd])
        own = ix.p_own
        self.priced = self.asset_ok[ix.p_quote] & (own | self.pair_ok[ix.p_pair])
        priced = self.priced
        quote_f = asset_f[ix.p_quote]
        n_f = np.where(priced, ix.p_a_f * np.where(own, quote_f, pair_f[ix.p_pair]), 0.0)
        abs_n = np.abs(n_f)
        self.n_f, self.abs_n = n_f, abs_n
        cq_f = ix.p_cost_f * quote_f
        is_option = priced & (ix.p_kind == _OPTION)
        is_derivative = priced & (ix.p_kind == _DERIVATIVE)
        eq_terms = np.where(is_option, n_f, np.where(is_derivative, n_f - cq_f, 0.0))
        eq_abs = np.where(is_option, abs_n, np.where(is_derivative, abs_n + np.abs(cq_f), 0.0))
        balance_ok = self.asset_ok[ix.b_asset]
        bal = np.where(balance_ok, ix.b_total_f * asset_f[ix.b_asset], 0.0)
        count = n_accounts
        self.gross_f = _sums(ix.p_acct, abs_n, count)
        self.net_f = _sums(ix.p_acct, n_f, count)
        self.equity_f = _sums(ix.p_acct, eq_terms, count) + _sums(ix.b_acct, bal, count)
        self.equity_abs = _sums(ix.p_acct, eq_abs, count) + _sums(ix.b_acct, np.abs(bal), count)
        for array in (self.gross_f, self.net_f, self.equity_f, self.equity_abs):
            if not np.all(np.abs(array) < _HUGE * _HUGE):
                raise NotIndexable("float overflow")
        self._start_exact(pair_marks, asset_usd)
        self.effective_units: tuple[Objects, Floats] | None = None
        self.exposures = _LazyExposures(book, ix.accounts)
        self.fallback: Run | None = None
        self.marks = self._fold_marks()

    # ---- exact figures ------------------------------------------------------------------------------

    def _start_exact(self, pair_marks: list[Decimal | None], asset_usd: list[Decimal | None]) -> None:
        """Exact per-account figures, filled in on demand, or taken from the last run over this index."""
        count, ix = self.n_accounts, self.index
        self.gross_x = np.full(count, None, dtype=object)
        self.net_x = np.full(count, None, dtype=object)
        self.equity_x = np.full(count, None, dtype=object)
        self.exact_done = np.zeros(count, dtype=bool)
        self.notional_x: Objects | None = None
        memo = ExactMemo(pair_marks, asset_usd, self.gross_x, self.net_x, self.equity_x, self.exact_done)
        if ix.memo is not None:
            self._reuse(ix.memo, memo)
        ix.memo = self.memo = memo

    def _reuse(self, last: ExactMemo, memo: ExactMemo) -> None:
        """Take the last run's exact figures of every account none of whose prices changed since.

        Exact figures are products and left folds of the account's rows (unchanged: same index) and the
        prices of its pairs and assets; where those are the same Decimals (same value and exponent), the
        reference would compute the very same results, so they are reused rather than recomputed."""
        ix = self.index
        moved_pairs = _moved_prices(last.pair_mark, memo.pair_mark)
        moved_assets = _moved_prices(last.asset_usd, memo.asset_usd)
        moved_rows = np.isin(ix.p_pair, moved_pairs) | np.isin(ix.p_quote, moved_assets)
        stale = np.zeros(self.n_accounts, dtype=bool)
        stale[ix.p_acct[moved_rows]] = True
        stale[ix.b_acct[np.isin(ix.b_asset, moved_assets)]] = True
        keep = last.done & ~stale
        for mine, theirs in ((self.gross_x, last.gross), (self.net_x, last.net), (self.equity_x, last.equity)):
            mine[keep] = theirs[keep]
        self.exact_done[keep] = True
        if last.notional is not None:
            notional = last.notional if not moved_rows.any() else last.notional.copy()
            self._notionals_into(notional, np.nonzero(moved_rows)[0])
            self.notional_x = memo.notional = notional

    def _notionals_into(self, out: Objects, rows: Ints) -> None:
        ix = self.index
        out[rows] = ZERO
        rows = rows[self.priced[rows]]
        marks = np.where(ix.p_own[rows], self.asset_usd[ix.p_quote[rows]], self.pair_mark[ix.p_pair[rows]])
        out[rows] = ix.p_a[rows] * marks

    def notionals(self) -> Objects:
        """Every priced position's exact USD notional (ZERO where unpriced), as the reference computes it."""
        if self.notional_x is None:
            out = np.full(self.index.n_positions, ZERO, dtype=object)
            self._notionals_into(out, np.arange(self.index.n_positions))
            self.notional_x = self.memo.notional = out
        return self.notional_x

    def ensure_exact(self, accounts: Ints) -> None:
        """Exact gross, net and equity of these account indices (sorted), replaying account_exposure."""
        todo = accounts[~self.exact_done[accounts]]
        if len(todo) == 0:
            return
        ix = self.index
        selected = np.zeros(self.n_accounts, dtype=bool)
        selected[todo] = True
        k = len(todo)
        pos = np.nonzero(selected[ix.p_acct])[0]
        seg = np.searchsorted(todo, ix.p_acct[pos])
        if self.notional_x is not None or 4 * len(pos) > ix.n_positions:
            notional = self.notionals()[pos]
        else:
            notional = np.full(len(pos), ZERO, dtype=object)
            priced = self.priced[pos]
            p = pos[priced]
            marks = np.where(ix.p_own[p], self.asset_usd[ix.p_quote[p]], self.pair_mark[ix.p_pair[p]])
            notional[priced] = ix.p_a[p] * marks
        self.gross_x[todo] = fold(np.abs(notional), seg, k)
        self.net_x[todo] = fold(notional, seg, k)
        # equity: options' notional, derivatives' notional − cost × quote USD, then balances × USD
        kinds = ix.p_kind[pos]
        priced = self.priced[pos]
        terms = np.full(len(pos), ZERO, dtype=object)
        option = priced & (kinds == _OPTION)
        terms[option] = notional[option]
        derivative = priced & (kinds == _DERIVATIVE)
        d = pos[derivative]
        terms[derivative] = notional[derivative] - ix.p_cost[d] * self.asset_usd[ix.p_quote[d]]
        bal_rows = np.nonzero(selected[ix.b_acct])[0]
        bal_terms = np.full(len(bal_rows), ZERO, dtype=object)
        ok = self.asset_ok[ix.b_asset[bal_rows]]
        b = bal_rows[ok]
        bal_terms[ok] = ix.b_total[b] * self.asset_usd[ix.b_asset[b]]
        n_pos = ix.n_positions
        combined = np.full(n_pos + len(ix.b_acct), ZERO, dtype=object)
        combined[pos] = terms
        combined[n_pos + bal_rows] = bal_terms
        in_sel = selected[ix.eq_seg]
        order = ix.eq_order[in_sel]
        self.equity_x[todo] = fold(combined[order], np.searchsorted(todo, ix.eq_seg[in_sel]), k)
        self.exact_done[todo] = True

    def exact_account(self, i: int) -> tuple[Decimal, Decimal, Decimal]:
        self.ensure_exact(np.array([i], dtype=np.intp))
        return self.gross_x[i], self.net_x[i], self.equity_x[i]

    def exact_totals(self, members: Ints) -> tuple[Decimal, Decimal, Decimal]:
        """An aggregate's gross, net and equity: `aggregate` sums its accounts' figures in member order."""
        self.ensure_exact(np.sort(members))
        return (
            sum(self.gross_x[members].tolist(), ZERO),
            sum(self.net_x[members].tolist(), ZERO),
            sum(self.equity_x[members].tolist(), ZERO),
        )

    def scope_members(self, key: str) -> Ints:
        if key == FIRM_KEY:
            return np.arange(self.n_accounts, dtype=np.intp)
        if key.startswith("group:") and key[6:] in self.book.groups and key not in self.index.rank:
            rank = self.index.rank
            return np.array([rank[a] for a in self.book.groups[key[6:]]], dtype=np.intp)
        return np.array([self.index.rank[key]], dtype=np.intp)

    def exact_equity(self, key: str) -> Decimal:
        i = self.index.rank.get(key)
        if i is not None and self.exact_done[i]:  # the common case: confirmed in a batch already
            value: Decimal = self.equity_x[i]
            return value
        members = self.scope_members(key)
        if key in self.index.rank:
            return self.exact_account(int(members[0]))[2]
        with localcontext(RISK_CONTEXT):
            return self.exact_totals(members)[2]

    # ---- P&L marks ----------------------------------------------------------------------------------

    def _fold_marks(self) -> _Marks:
        """Which scopes' marks change, decided exactly; the new marks themselves are computed on access.

        Returns the marks mapping and fills `self.mark_state` / hwm / day-start bounds for the loss limits.
        """
        ix = self.index
        old_marks = self.book.marks
        changed: dict[str, PnlMarks | None] = {}
        count = self.n_accounts
        state = np.full(count, _NEW, dtype=np.intp)
        hwm = np.zeros(count)
        dse = np.zeros(count)
        margin = self.rho * self.equity_abs
        lo, hi = self.equity_f - margin, self.equity_f + margin
        if old_marks:
            # `_mark_state`'s rules, vectorised: the float bounds decide "new high" unless they straddle the
            # high-water mark; those accounts are confirmed exactly in one batch (per-account confirmation
            # allocates book-sized arrays each time: quadratic), then compared exactly.
            olds = [old_marks.get(account) for account in ix.accounts]
            day = self.day
            has = np.array([old is not None for old in olds], dtype=bool)
            new_day = np.array([old is not None and day > old.trading_day for old in olds], dtype=bool)
            hwm_x = _objects([old.hwm if old is not None else ZERO for old in olds])
            hwm = _floats(hwm_x.tolist())
            dse = _floats([old.day_start_equity if old is not None else ZERO for old in olds])
            same_day = has & ~new_day
            slack = SLACK * np.abs(hwm)
            below = hi <= hwm - slack
            above = lo > hwm + slack
            ambiguous = np.nonzero(same_day & ~below & ~above)[0]
            higher = same_day & above
            if len(ambiguous):
                self.ensure_exact(ambiguous)
                higher[ambiguous] = np.asarray(self.equity_x[ambiguous] > hwm_x[ambiguous], dtype=bool)
            state[new_day] = _NEW_DAY
            state[same_day] = _SAME_DAY
            state[higher] = _NEW_HIGH
            accounts = ix.accounts
            changed.update((accounts[i], olds[i]) for i in np.nonzero(state != _SAME_DAY)[0].tolist())
        else:
            changed.update(dict.fromkeys(ix.accounts))
        self.mark_state, self.hwm_f, self.dse_f = state, hwm, dse
        self.scope_state: dict[str, tuple[int, float, float]] = {}
        for key in [FIRM_KEY, *(f"group:{g}" for g in self.book.groups)]:
            members = self.scope_members(key)
            e, a = float(self.equity_f[members].sum()), float(self.equity_abs[members].sum())
            old = old_marks.get(key)
            self.scope_state[key] = self._mark_state(key, old, (e - self.rho * a, e + self.rho * a), changed)
        return _Marks(self, old_marks, changed)

    def _mark_state(
        self, key: str, old: PnlMarks | None, bounds: tuple[float, float], changed: dict[str, PnlMarks | None]
    ) -> tuple[int, float, float]:
        """How `fold_marks` will treat this scope; the equity bounds decide "new high" unless too close."""
        lo, hi = bounds
        day = self.day
        if old is None:
            changed[key] = None
            return _NEW, 0.0, 0.0
        hwm, dse = float(old.hwm), float(old.day_start_equity)
        if day > old.trading_day:
            changed[key] = old
            return _NEW_DAY, hwm, dse
        if hi <= hwm - SLACK * abs(hwm):
            return _SAME_DAY, hwm, dse
        if lo > hwm + SLACK * abs(hwm) or self.exact_equity(key) > old.hwm:
            changed[key] = old
            return _NEW_HIGH, hwm, dse
        return _SAME_DAY, hwm, dse

    # ---- limits -------------------------------------------------------------------------------------

    def limit(self, limit: Limit) -> None:
        kind = limit.type
        if kind is LimitType.RECONCILIATION:
            self.reconciliation(limit)
        elif kind is LimitType.UNSETTLED_EXPOSURE:
            self.unsettled(limit)
        elif kind in (LimitType.STALE_DATA, LimitType.PRICE_DEVIATION):
            self.reference(limit)  # a handful of subjects, no exposures: nothing to gain
        elif limit.per_account or limit.scope is Scope.ACCOUNT:
            if kind in _SCALAR and (limit.asset is None or kind not in _ASSET_FILTERABLE):
                self.account_scalar(limit)
            elif kind is LimitType.POSITION_QUANTITY or kind is LimitType.POSITION_NOTIONAL:
                self.account_positions(limit)
            else:
                self.reference(limit)
        elif limit.scope_key in self.exposures:
            if kind in _SCALAR and (limit.asset is None or kind not in _ASSET_FILTERABLE):
                self.aggregate_scalar(limit)
            elif kind is LimitType.DELTA:
                self.aggregate_delta(limit)
            elif kind is LimitType.CONCENTRATION:
                self.aggregate_concentration(limit)
            else:
                self.reference(limit)

    def reference(self, limit: Limit) -> None:
        """The reference handler over the lazily exact exposures and marks."""
        if self.fallback is None:
            self.fallback = Run(
                self.book, self.now, self.exposures, self.marks, frozenset(self.exposures), None, False, self.out
            )
        self.fallback.limit(limit)

    def members(self, limit: Limit) -> Ints:
        """reference.Run.members as account indices, in the same order."""
        rank = self.index.rank
        if limit.scope is Scope.ACCOUNT:
            ref = str(limit.scope_ref)
            accounts: Any = (ref,) if ref in rank else ()
        elif limit.scope is Scope.GROUP:
            accounts = self.book.groups.get(str(limit.scope_ref), ())
        else:
            if limit.venue is None:
                return np.arange(self.n_accounts, dtype=np.intp)
            accounts = self.index.accounts
        venue = limit.venue
        venues = self.index.venues
        out = [rank[a] for a in accounts]
        if venue is not None:
            out = [i for i in out if venues[i] == venue]
        return np.array(out, dtype=np.intp)

    def subject(self, account: str, asset: str | None, venue: str | None) -> Subject:
        key = (account, asset, venue)
        subject = self.index.subjects.get(key)
        if subject is None:
            subject = self.index.subjects[key] = Subject(account, account, asset=asset, venue=venue)
        return subject

    def instrument_subject(self, account: str, inst: int) -> Subject:
        pair, kind = self.index.instrument(inst)
        subject = self.index.instrument_subjects.get((account, pair, kind))
        if subject is None:
            subject = self.index.instrument_subjects[account, pair, kind] = Subject(
                account, account, symbol=pair, kind=kind
            )
        return subject

    def emit(self, limit: Limit, value: Decimal, subject: Subject, detail: str = "") -> None:
        self.out.append(Check(limit, subject, value, limit.level(value), detail))

    def _scalar_bounds(self, limit: Limit, gross: Floats, net: Floats, equity: Floats, equity_abs: Floats) -> Bools:
        """Which of these scopes may have a value at or above clear (vectorised; False = provably below)."""
        rho = self.rho
        clear = float(limit.clear_at) * (1 - 4 * SLACK)
        kind = limit.type
        if kind is LimitType.GROSS_NOTIONAL:
            result: Bools = gross * (1 + rho) >= clear
        elif kind is LimitType.NET_NOTIONAL:
            result = np.abs(net) + rho * gross >= clear
        else:  # LEVERAGE: unbounded unless equity is surely positive
            e_lo = equity - rho * equity_abs
            result = (e_lo <= 0) | (gross * (1 + rho) >= clear * e_lo)
        return result

    def _loss_bounds(self, limit: Limit, state: Ints, hwm: Floats, dse: Floats, e_lo: Floats) -> Bools:
        """DAILY_LOSS / DRAWDOWN over the marks after this evaluation's fold (see `_fold_marks`)."""
        clear = float(limit.clear_at) * (1 - 4 * SLACK)
        hwm_lo, hwm_hi = hwm - SLACK * np.abs(hwm), hwm + SLACK * np.abs(hwm)
        if limit.type is LimitType.DAILY_LOSS:
            # new or new-day marks start the day at this equity: loss 0 < clear
            keeps_day = (state == _SAME_DAY) | (state == _NEW_HIGH)
            result: Bools = keeps_day & (dse + SLACK * np.abs(dse) - e_lo >= clear)
        else:
            # drawdown is 0 when marks are new or the equity is the new high; otherwise against the old hwm
            old_hwm = (state == _SAME_DAY) | (state == _NEW_DAY)
            deep = (hwm_hi - e_lo) >= clear * hwm_lo
            result = old_hwm & (hwm_hi > 0) & ((hwm_lo <= 0) | deep)
        return result

    def account_scalar(self, limit: Limit) -> None:
        members = self.members(limit)
        if len(members) == 0:
            return
        kind = limit.type
        if kind is LimitType.DAILY_LOSS or kind is LimitType.DRAWDOWN:
            e_lo = self.equity_f[members] - self.rho * self.equity_abs[members]
            maybe = self._loss_bounds(limit, self.mark_state[members], self.hwm_f[members], self.dse_f[members], e_lo)
        else:
            maybe = self._scalar_bounds(
                limit, self.gross_f[members], self.net_f[members], self.equity_f[members], self.equity_abs[members]
            )
        candidates = members[maybe]
        if len(candidates) == 0:
            return
        self.ensure_exact(np.sort(candidates))
        clear = limit.clear_at
        accounts = self.index.accounts
        for i in candidates.tolist():
            account = accounts[i]
            value = self._scalar_value(kind, account, self.gross_x[i], self.net_x[i], self.equity_x[i])
            if value >= clear:
                self.emit(limit, value, self.subject(account, limit.asset, limit.venue))

    def _scalar_value(self, kind: LimitType, key: str, gross: Decimal, net: Decimal, equity: Decimal) -> Decimal:
        if kind is LimitType.GROSS_NOTIONAL:
            return gross
        if kind is LimitType.NET_NOTIONAL:
            return abs(net)
        if kind is LimitType.LEVERAGE:
            return leverage(gross, equity)
        marks = self.marks.get(key)
        if marks is None:  # pragma: no cover - every covered scope has marks after the fold
            return ZERO
        return daily_loss(marks, equity) if kind is LimitType.DAILY_LOSS else drawdown(marks, equity)

    def aggregate_scalar(self, limit: Limit) -> None:
        key = limit.scope_key
        members = self.members(limit)
        gross = np.array([self.gross_f[members].sum()])
        net = np.array([self.net_f[members].sum()])
        equity = np.array([self.equity_f[members].sum()])
        equity_abs = np.array([self.equity_abs[members].sum()])
        kind = limit.type
        if kind is LimitType.DAILY_LOSS or kind is LimitType.DRAWDOWN:
            if limit.venue is not None:
                maybe = True  # the scope's marks against a venue's part of its equity: just compute it
            else:
                state, hwm, dse = self.scope_state[key]
                e_lo = equity - self.rho * equity_abs
                arrays = np.array([state]), np.array([hwm]), np.array([dse])
                maybe = bool(self._loss_bounds(limit, *arrays, e_lo)[0])
        else:
            maybe = bool(self._scalar_bounds(limit, gross, net, equity, equity_abs)[0])
        if not maybe:
            return
        value = self._scalar_value(kind, key, *self.exact_totals(members))
        if value >= limit.clear_at:
            self.emit(limit, value, Subject(key, None, asset=limit.asset, venue=limit.venue))

    def account_positions(self, limit: Limit) -> None:  # noqa: PLR0915 (screen, confirm, order: one flow)
        """Per (account, instrument): quantities and notionals netted within the account."""
        ix = self.index
        members = self.members(limit)
        if len(members) == 0 or len(ix.inst_acct) == 0:
            return
        member = np.zeros(self.n_accounts, dtype=bool)
        member[members] = True
        wanted = member[ix.inst_acct]
        if limit.symbol is not None:
            wanted &= ix.inst_pair_code == ix.pair_codes.get(limit.symbol, -1)
        if limit.kind is not None:
            wanted &= ix.inst_kind_code == _KIND_CODES.get(limit.kind, -1)
        if limit.asset is not None:
            wanted &= ix.inst_base_code == ix.asset_codes.get(limit.asset, -1)
        n_inst = len(ix.inst_acct)
        priced = self.priced
        quantity = limit.type is LimitType.POSITION_QUANTITY
        rho = self.rho
        clear = float(limit.clear_at) * (1 - 4 * SLACK)
        if quantity:
            q = np.where(priced, ix.p_qty_f, 0.0)
            total = _sums(ix.p_inst, q, n_inst)
            bound = rho * _sums(ix.p_inst, np.abs(q), n_inst)
            hi = total + bound if limit.side is Side.LONG else bound - total
        else:
            hi = np.abs(_sums(ix.p_inst, self.n_f, n_inst)) + rho * _sums(ix.p_inst, self.abs_n, n_inst)
        candidates = np.nonzero(wanted & (hi >= clear) & (np.bincount(ix.p_inst, priced, n_inst) > 0))[0]
        if len(candidates) == 0:
            return
        chosen = np.zeros(n_inst, dtype=bool)
        chosen[candidates] = True
        pos = np.nonzero(chosen[ix.p_inst] & priced)[0]
        order = np.argsort(ix.p_inst[pos], kind="stable")
        pos = pos[order]
        seg = np.searchsorted(candidates, ix.p_inst[pos])
        values = ix.p_qty[pos] if quantity else self.notionals()[pos]
        sums = fold(values, seg, len(candidates)).tolist()
        first = np.full(len(candidates), ix.n_positions, dtype=np.intp)
        np.minimum.at(first, seg, pos)  # the reference's dict order: first priced position
        ranks = {m: r for r, m in enumerate(members.tolist())}
        firsts = first.tolist()
        owners = ix.inst_acct[candidates].tolist()
        rows = sorted(range(len(candidates)), key=lambda r: (ranks[owners[r]], firsts[r]))
        clear_x = limit.clear_at
        long = limit.side is Side.LONG
        for r in rows:
            inst = int(candidates[r])
            total_x = sums[r]
            if not quantity:
                value = abs(total_x)
            elif long:
                value = total_x if total_x > ZERO else ZERO
            else:
                value = -total_x if total_x < ZERO else ZERO
            if value >= clear_x:
                account = ix.accounts[int(ix.inst_acct[inst])]
                self.emit(limit, value, self.instrument_subject(account, inst))

    def _scope_positions(self, limit: Limit) -> Ints:
        """Priced positions of the limit's aggregate scope, in the reference's leg order."""
        ix = self.index
        members = self.members(limit)
        member = np.zeros(self.n_accounts, dtype=bool)
        member[members] = True
        pos = np.nonzero(member[ix.p_acct] & self.priced)[0]
        if len(members) > 1 and np.any(np.diff(members) < 0):
            ranks = np.empty(self.n_accounts, dtype=np.intp)
            ranks[members] = np.arange(len(members))
            pos = pos[np.argsort(ranks[ix.p_acct[pos]], kind="stable")]
        return pos

    def units_with_delta(self) -> tuple[Objects, Floats]:
        """Per position: units, or for options units × the hook's delta when it gives one."""
        if self.effective_units is None:
            ix = self.index
            units, units_f = ix.p_units, ix.p_units_f
            if len(ix.options):
                units, units_f = units.copy(), units_f.copy()
                hook = self.book.delta_hook
                for i in ix.options.tolist():
                    delta = hook(ix.position(self.book, i))
                    if delta is not None:
                        units[i] = units[i] * delta
                        units_f[i] = _f(units[i])
            self.effective_units = (units, units_f)
        return self.effective_units

    def aggregate_delta(self, limit: Limit) -> None:
        ix = self.index
        pos = self._scope_positions(limit)
        if len(pos) == 0:
            return
        units, units_f = self.units_with_delta()
        bases = ix.p_base[pos]
        n_assets = len(ix.asset_codes)
        total = _sums(bases, units_f[pos], n_assets)
        bound = self.rho * _sums(bases, np.abs(units_f[pos]), n_assets)
        clear = float(limit.clear_at) * (1 - 4 * SLACK)
        maybe = np.abs(total) + bound >= clear
        if limit.asset is not None:
            only = np.zeros(n_assets, dtype=bool)
            if limit.asset in ix.asset_codes:
                only[ix.asset_codes[limit.asset]] = True
            maybe &= only
        candidates = np.nonzero(maybe)[0]
        if len(candidates) == 0:
            return
        chosen = pos[maybe[bases]]
        chosen_bases = ix.p_base[chosen]
        order = np.argsort(chosen_bases, kind="stable")
        seg = np.searchsorted(candidates, chosen_bases[order])
        sums = fold(units[chosen[order]], seg, len(candidates)).tolist()
        first: dict[int, int] = {}
        assets = ix.assets
        for b in chosen_bases.tolist():
            first.setdefault(b, len(first))
        for c in sorted(range(len(candidates)), key=lambda c: first[int(candidates[c])]):
            value = abs(sums[c])
            if value >= limit.clear_at:
                subject = Subject(limit.scope_key, None, asset=assets[int(candidates[c])], venue=limit.venue)
                self.emit(limit, value, subject)

    def aggregate_concentration(self, limit: Limit) -> None:
        """Screen only; a possible breach runs the reference handler (breakdowns need the whole scope)."""
        ix = self.index
        dimension = limit.dimension or Dimension.ASSET
        if dimension == Dimension.ASSET:
            pos = self._scope_positions(limit)
            by_key = _sums(ix.p_base[pos], self.abs_n[pos], len(ix.asset_codes))
        else:
            members = self.members(limit)
            names = ix.venues if dimension == Dimension.VENUE else ix.custodians
            codes: dict[str, int] = {}
            keys = np.array([codes.setdefault(names[i], len(codes)) for i in members.tolist()], dtype=np.intp)
            by_key = _sums(keys, self.gross_f[members], len(codes)) if len(keys) else np.zeros(1)
        total = float(by_key.sum())
        if total == 0.0:
            return  # every term is exactly zero: share 0 < clear
        clear = float(limit.clear_at) * (1 - 4 * SLACK)
        rho = self.rho
        if float(by_key.max()) * (1 + rho) >= clear * total * (1 - rho):
            self.reference(limit)

    def reconciliation(self, limit: Limit) -> None:
        """reference.Run.reconciliation with the (price-independent) mismatches kept on the book index."""
        ix = self.index
        key = (limit.asset, limit.venue, limit.scope, limit.scope_ref, limit.abs_tolerance, limit.rel_tolerance)
        known = ix.reconciled.get(key)
        if known is None:
            known = ix.reconciled[key] = Reconciled(np.zeros(self.n_accounts, dtype=bool), {})
        members = self.members(limit)
        book = self.book
        asset = limit.asset
        for i in members[~known.done[members]].tolist():
            account = ix.accounts[i]
            if book.accounts[account].custodian is not None:
                balances = [b for b in book.balances.get(account, ()) if asset is None or b.asset == asset]
                custody = [c for c in book.custody.get(account, ()) if asset is None or c.asset == asset]
                mismatches = reconcile(
                    balances, custody, abs_tolerance=limit.abs_tolerance, rel_tolerance=limit.rel_tolerance
                )
                if mismatches:
                    known.mismatches[i] = mismatches
            known.done[i] = True
        # accounts with mismatches, in member order
        ranks = np.full(self.n_accounts, -1, dtype=np.intp)
        ranks[members] = np.arange(len(members))
        hits = np.array(list(known.mismatches), dtype=np.intp)
        hits = hits[ranks[hits] >= 0]
        found = [(i, known.mismatches[i]) for i in hits[np.argsort(ranks[hits], kind="stable")].tolist()]
        usd = self.book.prices.usd
        clear = limit.clear_at
        for i, mismatches in found:
            account = ix.accounts[i]
            for m in mismatches:
                # reconcile() applied the limit's own tolerance: every mismatch is outside it
                price = usd.get(m.asset)
                value = abs(m.difference) * price if price is not None else INFINITY
                if value >= clear:
                    detail = f"exchange={m.exchange_total};custody={m.custody_total}"
                    self.emit(limit, value, self.subject(account, m.asset, None), detail)

    def unsettled(self, limit: Limit) -> None:
        """reference.Run's unsettled exposure without building the aggregate just to list its accounts."""
        book = self.book
        settlements = book.settlements
        if limit.per_account or limit.scope is Scope.ACCOUNT:
            scopes = [(a, [a], a) for a in (self.index.accounts[i] for i in self.members(limit).tolist())]
        elif limit.scope_key in self.exposures:
            key = limit.scope_key
            members = self.members(limit)
            scopes = [(key, [self.index.accounts[i] for i in members.tolist()], None)]
        else:
            return
        for scope_key, accounts, account in scopes:
            rows = [
                s for a in accounts for s in settlements.get(a, ()) if limit.asset is None or s.asset == limit.asset
            ]
            unsettled = unsettled_exposure(rows, book.prices.usd, self.now)
            value = Decimal(unsettled.count) if limit.measure is Measure.COUNT else unsettled.value
            if value >= limit.clear_at:
                detail = f"count={unsettled.count};unpriced={','.join(unsettled.unpriced)}"
                self.emit(limit, value, Subject(scope_key, account, asset=limit.asset, venue=limit.venue), detail)


_SCALAR = frozenset(
    {
        LimitType.GROSS_NOTIONAL,
        LimitType.NET_NOTIONAL,
        LimitType.LEVERAGE,
        LimitType.DAILY_LOSS,
        LimitType.DRAWDOWN,
    }
)
_ASSET_FILTERABLE = frozenset({LimitType.GROSS_NOTIONAL, LimitType.NET_NOTIONAL})
