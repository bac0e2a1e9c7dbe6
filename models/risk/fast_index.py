"""The fast path's price-independent index over a book: numpy columns of positions and balances.

Built once per book (`book_index`), or patched from the previous book's index for the accounts whose rows
changed (`patch_index`, used by `book_update.update_book`). Also the float conversion rules the screen relies
on (`to_float`, `to_floats`: a value the screen can't bound raises `NotScreenable`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from models.risk.book import RiskBook
from models.risk.exposure import NO_CUSTODIAN
from models.risk.results import RISK_CONTEXT, Subject
from models.risk.values import ONE, InstrumentKind, Position

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]

# Magnitudes the screen accepts: products and sums of up to 10^9 such terms stay normal floats (no overflow,
# no underflow), so every float operation has relative error ≤ 2^-53. Anything else (or a non-finite
# Decimal) sends the evaluation to the reference path.
HUGE = 1e150
TINY = 1e-150

SPOT, DERIVATIVE, OPTION = 0, 1, 2
KIND_CODES = {kind.value: i for i, kind in enumerate(InstrumentKind)}


class NotScreenable(ValueError):
    """The book holds values the float screen can't bound (non-finite or beyond float range)."""


def to_float(value: Decimal) -> float:
    if not value.is_finite():
        raise NotScreenable(str(value))
    out = float(value)
    if not (abs(out) < HUGE and (out == 0.0 or abs(out) > TINY)) or (out == 0.0 and value):
        raise NotScreenable(str(value))
    return out


def objects_array(values: list[Any]) -> Objects:
    out: Objects = np.fromiter(values, dtype=object, count=len(values))  # 5x faster than slice assignment
    return out


def to_floats(values: list[Decimal]) -> Floats:
    """`to_float` over a column, vectorised: the same conversions (correctly rounded) and the same rejections."""
    try:
        out = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError as exc:  # a signalling NaN
        raise NotScreenable(str(exc)) from None
    magnitude = np.abs(out)
    zero = out == 0.0
    if not np.all((magnitude < HUGE) & (zero | (magnitude > TINY))):  # NaN fails the first test
        raise NotScreenable("value beyond the float screen's range")
    for i in np.nonzero(zero)[0].tolist():  # a nonzero value that underflowed to 0.0
        if values[i]:
            raise NotScreenable(str(values[i]))
    return out


def _floats_except(values: list[Decimal], known_f: Floats, differ: list[int]) -> Floats:
    """`to_floats(values)` where `known_f` already holds the conversion of every value not listed in `differ`."""
    if not differ:
        return known_f
    out = known_f.copy()
    out[differ] = to_floats([values[i] for i in differ])
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
    p_kind: Ints  # SPOT / DERIVATIVE / OPTION
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

    qty_f = to_floats(qty)
    cost_f = to_floats(cost)
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
            [SPOT if p.kind is spot else OPTION if p.kind is option else DERIVATIVE for p in rows], dtype=np.intp
        ),
        "p_kcode": p_kcode,
        "p_own": np.array([p.mark_price is not None for p in rows], dtype=bool),
        "p_first": first,
        "p_local": local,
        "p_a": objects_array(a),
        "p_a_f": a_f,
        "p_cost": objects_array(cost),
        "p_cost_f": cost_f,
        "p_units": objects_array(units),
        "p_units_f": units_f,
        "p_qty": objects_array(qty),
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
        "b_total": objects_array(totals),
        "b_total_f": to_floats(totals),
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
        options=np.nonzero(p["p_kind"] == OPTION)[0],
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


def _remark(book: RiskBook, changed_accounts: tuple[list[int], Bools], p: dict[str, Any]) -> dict[str, Any]:
    """Position columns with the mark-dependent ones (``p_own``, ``p_a``, ``p_a_f``) recomputed for the rows of
    these accounts, whose rows are otherwise the ones ``p`` holds: same count and order, so they sit where
    they were. The same expressions as `_position_rows`."""
    ranks, changed = changed_accounts
    accounts = list(book.accounts)
    rows: list[Position] = []
    for i in ranks:
        rows += book.positions.get(accounts[i], ())
    at = np.flatnonzero(changed[p["p_acct"]])  # their rows, in account then row order, like ``rows``
    if len(at) != len(rows):
        raise ValueError("marks-only accounts must keep their number of positions")
    with localcontext(RISK_CONTEXT):
        a = [q.units if q.mark_price is None else q.units * q.mark_price for q in rows]
    own, p_a, p_a_f = p["p_own"].copy(), p["p_a"].copy(), p["p_a_f"].copy()
    own[at] = [q.mark_price is not None for q in rows]
    p_a[at] = objects_array(a)
    p_a_f[at] = _floats_except(a, p["p_units_f"][at], [i for i, q in enumerate(rows) if q.mark_price is not None])
    return {**p, "p_own": own, "p_a": p_a, "p_a_f": p_a_f}


def patch_index(
    previous: BookIndex,
    book: RiskBook,
    *,
    positions: Collection[str] = (),
    balances: Collection[str] = (),
    custody: Collection[str] = (),
    marks: Collection[str] = (),
) -> BookIndex:
    """`book`'s index from the index of a book with the same accounts mapping, whose positions, balances and
    custody rows differ only for the named accounts. Equal to a fresh build (tests compare them).

    ``marks``: accounts whose positions differ only in their venue mark prices (same rows in the same order
    otherwise), as every poll brings when marks move; only the mark-dependent columns of their rows are
    recomputed, in place."""
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
    if marks:
        p = _remark(book, mask(marks), p)
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
        done[[rank[a] for a in (*positions, *balances, *marks) if a in rank]] = False
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
