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

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any

import numpy as np

from models.risk.book import RiskBook
from models.risk.exposure import (
    INFINITY,
    Exposure,
    account_exposure,
    aggregate,
    leverage,
)
from models.risk.fast_index import (
    DERIVATIVE,
    HUGE,
    KIND_CODES,
    OPTION,
    BookIndex,
    Bools,
    ExactMemo,
    Floats,
    Ints,
    NotScreenable,
    Objects,
    Reconciled,
    book_index,
    objects_array,
    to_float,
    to_floats,
)
from models.risk.limits import FIRM_KEY, Dimension, Limit, LimitType, Measure, Scope, Side
from models.risk.pnl import PnlMarks, daily_loss, drawdown, fold_marks, trading_day
from models.risk.reconcile import reconcile, unsettled_exposure
from models.risk.reference import Run
from models.risk.results import RISK_CONTEXT, Check, Evaluation, Subject
from models.risk.values import ZERO

UNIT_ROUNDOFF = 2.0**-53
# Relative slack on top of the summation bound: absorbs Decimal→float conversion of thresholds, marks and
# prices (≤ 2^-53 each), the few float operations after the sums, and the reference's own 28-digit
# rounding of quotients (≤ 5·10^-28). Orders of magnitude larger than all of them together.
SLACK = 1e-12
_NEW, _NEW_DAY, _SAME_DAY, _NEW_HIGH = 0, 1, 2, 3  # how a scope's P&L marks fold this evaluation


def _sums(segments: Ints, weights: Floats, count: int) -> Floats:
    """Float sums per segment (any order: the error bound in the docs does not depend on it)."""
    return np.bincount(segments, weights, count).astype(np.float64, copy=False)


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
    except NotScreenable:
        return None
    with localcontext(RISK_CONTEXT):
        try:
            run = _FastRun(book, index, now)
        except NotScreenable:
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
        self.pair_mark = objects_array([m if m is not None else ZERO for m in pair_marks])
        self.asset_usd = objects_array([u if u is not None else ZERO for u in asset_usd])
        pair_f = np.array([to_float(m) if m is not None else 0.0 for m in pair_marks])
        asset_f = np.array([to_float(u) if u is not None else 0.0 for u in asset_usd])
        own = ix.p_own
        self.priced = self.asset_ok[ix.p_quote] & (own | self.pair_ok[ix.p_pair])
        priced = self.priced
        quote_f = asset_f[ix.p_quote]
        n_f = np.where(priced, ix.p_a_f * np.where(own, quote_f, pair_f[ix.p_pair]), 0.0)
        abs_n = np.abs(n_f)
        self.n_f, self.abs_n = n_f, abs_n
        cq_f = ix.p_cost_f * quote_f
        is_option = priced & (ix.p_kind == OPTION)
        is_derivative = priced & (ix.p_kind == DERIVATIVE)
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
            if not np.all(np.abs(array) < HUGE * HUGE):
                raise NotScreenable("float overflow")
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
        option = priced & (kinds == OPTION)
        terms[option] = notional[option]
        derivative = priced & (kinds == DERIVATIVE)
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
            hwm_x = objects_array([old.hwm if old is not None else ZERO for old in olds])
            hwm = to_floats(hwm_x.tolist())
            dse = to_floats([old.day_start_equity if old is not None else ZERO for old in olds])
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
            wanted &= ix.inst_kind_code == KIND_CODES.get(limit.kind, -1)
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
                        units_f[i] = to_float(units[i])
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
