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

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext

import numpy as np

from models.risk.book import RiskBook
from models.risk.exposure import Exposure, account_exposure
from models.risk.fast_index import SPOT, NotScreenable, to_float
from models.risk.limits import FIRM_KEY, Level, Limit, LimitType, Scope, Side
from models.risk.pnl import PnlMarks, fold_marks, trading_day
from models.risk.results import RISK_CONTEXT, Check, Evaluation
from models.risk.tick_exact import ExactExposures, FoldedMarks, TickRun, WhatIf
from models.risk.tick_screen import (
    POSITION_TYPES,
    UNKNOWN,
    WIDEN,
    BookColumns,
    Bools,
    Floats,
    Ints,
    Sums,
    Zones,
    build_columns,
    screened,
    to_floats,
    zone_of,
    zones,
)
from models.risk.values import Position


@dataclass(frozen=True)
class LevelChange:
    check: Check  # the check after the batch; for a clear, the last check seen before it
    previous: Level
    level: Level
    value: Decimal | None  # None: cleared by absence (below the clear threshold, so no check was emitted)


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
    _index: BookColumns | None = None
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
            index = build_columns(book)
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

    def _carry_zones(self, old: BookColumns, old_screens: Mapping[Limit, _Screen]) -> None:
        """Zones of the subjects that still exist, by account (scalar limits) or account and instrument."""
        index = self._index
        assert index is not None
        for limit, previous in old_screens.items():
            screen = self._screen(limit)
            if limit.type in POSITION_TYPES:
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
        if limit.type in POSITION_TYPES:
            mask = accounts[ix.inst_acct]
            for j, (_, pair, kind) in enumerate(ix.inst_key):
                if mask[j] and (
                    (limit.symbol is not None and pair != limit.symbol)
                    or (limit.kind is not None and kind != limit.kind)
                    or (limit.asset is not None and ix.inst_base[j] != limit.asset)
                ):
                    mask[j] = False
            screen = _Screen(mask, np.full(len(ix.inst_key), UNKNOWN, dtype=np.int8))
        else:
            screen = _Screen(accounts, np.full(len(ix.accounts), UNKNOWN, dtype=np.int8))
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
                into[rows] = to_floats(values)

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
            self._hwm[i], self._dse[i] = to_float(marks.hwm), to_float(marks.day_start_equity)
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
        floats = Sums.of(ix, self._mark_f, self._usd_f)
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
        self, ix: BookColumns, pairs: Collection[str], assets: Collection[str], repositioned: Collection[str]
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
        run = TickRun(self.book, now, exposures, marks, covered, affected, include_ok, [], rank)
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
                mask = rows[ix.inst_acct] if limit.type in POSITION_TYPES else rows
                screen.zones[mask & screen.members] = 0
        for check in checks:
            found = self._screens.get(check.limit)
            if found is None:
                continue
            subject = check.subject
            if check.limit.type in POSITION_TYPES:
                j = ix.inst_of.get((str(subject.account), str(subject.symbol), str(subject.kind)))
            else:
                j = ix.rank.get(str(subject.account))
            if j is not None:
                found.zones[j] = zone_of(check.value, check.limit)

    def _candidates(
        self, ix: BookColumns, fl: Sums, limit: Limit, *, screen: _Screen, affected: Bools, out: Bools
    ) -> None:
        """Mark in `out` the accounts whose subjects of `limit` are uncertain or left their zone."""
        rho = ix.rho
        kind = limit.type
        if kind in POSITION_TYPES:
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
        z_lo, z_hi = zones(lo * (1 - WIDEN), limit), zones(hi * (1 + WIDEN), limit)
        cand = consider & ((z_lo != z_hi) | (z_lo != screen.zones) | np.isnan(lo) | np.isnan(hi))
        if kind in POSITION_TYPES:
            out[ix.inst_acct[cand]] = True
        else:
            out |= cand

    def _interval(self, fl: Sums, limit: Limit, rho: float) -> tuple[Floats, Floats]:
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
        self, ix: BookColumns, pairs: Collection[str], assets: Collection[str], repositioned: Collection[str]
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
            hit = (ix.p_kind != SPOT) & (pair_moved[ix.p_pair] | asset_moved[ix.p_quote])
            moved[ix.p_acct[hit]] = True
        moved[[ix.rank[a] for a in repositioned if a in ix.rank]] = True
        return moved

    def _fold(self, ix: BookColumns, fl: Sums, *, eq_moved: Bools, rows: Ints, groups: list[str], day: date) -> None:
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
        exposures = WhatIf(self.exact, account, self.exact.now(account))
        marks = FoldedMarks(self.marks, exposures, scope, trading_day(self.at, self.book.day_offset))
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
        current = WhatIf(self.exact, account, self.exact.now(account))  # a read revalues the account
        what_if = WhatIf(self.exact, account, after)
        before_marks = FoldedMarks(self.marks, current, covered, day)
        after_marks = FoldedMarks(self.marks, what_if, covered, day)
        before = self._run(enabled, covered, affected, now, exposures=current, marks=before_marks, include_ok=True)
        after_checks = self._run(enabled, covered, affected, now, exposures=what_if, marks=after_marks, include_ok=True)
        return before, after_checks


__all__ = ["AccountView", "ExactExposures", "LevelChange", "NotScreenable", "TickState", "screened"]
