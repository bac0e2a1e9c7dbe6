"""The straightforward exact evaluation: every account valued in Decimal, every limit walked in Python.

This is the specification the fast path (`models.risk.fast`) is tested against, the baseline of
`benchmarks/evaluate_compute.py`, and the path `evaluate` takes where the fast path does not apply
(`include_ok=True`, the incremental `evaluate_accounts`). Keep it simple rather than fast.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from models.risk.book import RiskBook
from models.risk.exposure import (
    INFINITY,
    Exposure,
    account_exposure,
    aggregate,
    by_instrument,
    concentration,
    data_age_seconds,
    delta_by_asset,
    gross_by_asset,
    gross_by_custodian,
    gross_by_venue,
    net_by_asset,
)
from models.risk.limits import FIRM_KEY, Dimension, Limit, LimitType, Measure, Scope, Side
from models.risk.pnl import PnlMarks, daily_loss, drawdown, fold_marks, trading_day
from models.risk.reconcile import price_deviation, reconcile, unsettled_exposure, within_tolerance
from models.risk.results import RISK_CONTEXT, Check, Evaluation, Subject
from models.risk.values import ZERO


def evaluate(book: RiskBook, limits: Iterable[Limit], now: datetime, *, include_ok: bool = False) -> Evaluation:
    """Evaluate every account and scope of the book."""
    with localcontext(RISK_CONTEXT):
        exposures = {
            account: account_exposure(
                meta,
                book.positions.get(account, ()),
                book.balances.get(account, ()),
                book.prices,
            )
            for account, meta in book.accounts.items()
        }
        return _run(
            book,
            limits=list(limits),
            now=now,
            exposures=exposures,
            marks=book.marks,
            affected=None,
            include_ok=include_ok,
        )


def evaluate_accounts(
    book: RiskBook,
    limits: Iterable[Limit],
    accounts: Collection[str],
    now: datetime,
    *,
    previous: Evaluation,
    include_ok: bool = False,
) -> Evaluation:
    """Incremental evaluation after ticks: recompute `accounts`, reuse `previous` for the rest.

    Checks cover the given accounts, the groups they belong to and the firm (aggregates are re-summed
    from per-account exposures, which is cheap next to valuing positions).
    """
    with localcontext(RISK_CONTEXT):
        exposures = {a: e for a, e in previous.exposures.items() if a in book.accounts}
        for account in accounts:
            meta = book.accounts.get(account)
            if meta is not None:
                exposures[account] = account_exposure(
                    meta,
                    book.positions.get(account, ()),
                    book.balances.get(account, ()),
                    book.prices,
                )
        affected = frozenset(a for a in accounts if a in book.accounts)
        return _run(
            book,
            limits=list(limits),
            now=now,
            exposures=exposures,
            marks=previous.marks,
            affected=affected,
            include_ok=include_ok,
        )


def _run(
    book: RiskBook,
    *,
    limits: list[Limit],
    now: datetime,
    exposures: dict[str, Exposure],
    marks: Mapping[str, PnlMarks],
    affected: frozenset[str] | None,
    include_ok: bool,
) -> Evaluation:
    day = trading_day(now, book.day_offset)
    account_exposures = [exposures[a] for a in book.accounts]
    exposures[FIRM_KEY] = aggregate(FIRM_KEY, account_exposures)
    for group, members in book.groups.items():
        exposures[f"group:{group}"] = aggregate(f"group:{group}", (exposures[a] for a in members))
    if affected is None:
        covered = frozenset(exposures)
    else:
        groups = {f"group:{g}" for a in affected for g in book.accounts[a].groups}
        covered = frozenset({FIRM_KEY, *affected, *groups})
    current = dict(marks)
    changed: dict[str, PnlMarks] = {}
    for key in covered:
        old = marks.get(key)
        new = fold_marks(old, exposures[key].equity, day)
        if new is not old:
            current[key] = changed[key] = new
    run = Run(book, now, exposures, current, covered, affected, include_ok, [])
    enabled = [limit for limit in limits if limit.enabled]
    for limit in enabled:
        run.limit(limit)
    return Evaluation(
        at=now,
        checks=tuple(run.out),
        exposures=exposures,
        marks=current,
        changed_marks=changed,
        covered=covered,
        limits=frozenset(limit.name for limit in enabled),
    )


@dataclass(slots=True)
class Run:
    """The state of one evaluation pass; a class only to keep the per-type functions' arguments short.

    The fast path reuses it for limit types it does not vectorise, over its lazily exact mappings.
    """

    book: RiskBook
    now: datetime
    exposures: Mapping[str, Exposure]
    marks: Mapping[str, PnlMarks]
    covered: frozenset[str]
    affected: frozenset[str] | None
    include_ok: bool
    out: list[Check]

    def emit(self, limit: Limit, value: Decimal, subject: Subject, detail: str = "") -> None:
        self.out.append(Check(limit, subject, value, limit.level(value), detail))

    def members(self, limit: Limit) -> list[str]:
        if limit.scope is Scope.ACCOUNT:
            ref = str(limit.scope_ref)
            accounts: Iterable[str] = (ref,) if ref in self.book.accounts else ()
        elif limit.scope is Scope.GROUP:
            accounts = self.book.groups.get(str(limit.scope_ref), ())
        else:
            accounts = self.book.accounts
        venue = limit.venue
        metas = self.book.accounts
        return [a for a in accounts if venue is None or metas[a].venue == venue]

    def limit(self, limit: Limit) -> None:
        kind = limit.type
        if kind is LimitType.STALE_DATA:
            self.stale_data(limit)
        elif kind is LimitType.PRICE_DEVIATION:
            self.price_deviation(limit)
        elif kind is LimitType.RECONCILIATION:
            self.reconciliation(limit)
        elif limit.per_account or limit.scope is Scope.ACCOUNT:
            affected = self.affected
            for account in self.members(limit):
                if affected is None or account in affected:
                    self.scope_metric(limit, self.exposures[account], account, account)
        elif limit.scope_key in self.covered:
            if limit.venue is None:
                exposure = self.exposures[limit.scope_key]
            else:
                exposure = aggregate(limit.scope_key, (self.exposures[a] for a in self.members(limit)))
            self.scope_metric(limit, exposure, limit.scope_key, None)

    def scope_metric(self, limit: Limit, e: Exposure, scope_key: str, account: str | None) -> None:
        kind = limit.type
        if kind is LimitType.POSITION_QUANTITY or kind is LimitType.POSITION_NOTIONAL:
            self.position_metric(limit, e, scope_key, account)
        elif kind is LimitType.DELTA:
            for asset, delta in delta_by_asset(e, self.book.delta_hook).items():
                if limit.asset is None or asset == limit.asset:
                    value = abs(delta)
                    if self.include_ok or value >= limit.clear_at:
                        self.emit(limit, value, Subject(scope_key, account, asset=asset, venue=limit.venue))
        else:
            value, detail = self.scalar_metric(limit, e, scope_key)
            if self.include_ok or value >= limit.clear_at:
                self.emit(limit, value, Subject(scope_key, account, asset=limit.asset, venue=limit.venue), detail)

    def position_metric(self, limit: Limit, e: Exposure, scope_key: str, account: str | None) -> None:
        """Per instrument (canonical pair, kind); quantities and notionals net across the scope's accounts."""
        quantity = limit.type is LimitType.POSITION_QUANTITY
        long = limit.side is Side.LONG
        clear = limit.clear_at
        for (pair, instrument_kind), (qty, notional) in by_instrument(e, limit.symbol).items():
            if limit.kind is not None and instrument_kind != limit.kind:
                continue
            if limit.asset is not None and pair.partition("-")[0] != limit.asset:
                continue
            if not quantity:
                value = abs(notional)
            elif long:
                value = qty if qty > ZERO else ZERO
            else:
                value = -qty if qty < ZERO else ZERO
            if self.include_ok or value >= clear:
                self.emit(limit, value, Subject(scope_key, account, symbol=pair, kind=instrument_kind))

    def scalar_metric(self, limit: Limit, e: Exposure, scope_key: str) -> tuple[Decimal, str]:
        kind = limit.type
        detail = ""
        if kind is LimitType.GROSS_NOTIONAL:
            value = e.gross if limit.asset is None else gross_by_asset(e).get(limit.asset, ZERO)
        elif kind is LimitType.NET_NOTIONAL:
            value = abs(e.net if limit.asset is None else net_by_asset(e).get(limit.asset, ZERO))
        elif kind is LimitType.LEVERAGE:
            value = e.leverage
        elif kind is LimitType.DAILY_LOSS or kind is LimitType.DRAWDOWN:
            marks = self.marks.get(scope_key)
            if marks is None:  # a scope with no marks has no history yet: nothing lost
                value = ZERO
            else:
                value = daily_loss(marks, e.equity) if kind is LimitType.DAILY_LOSS else drawdown(marks, e.equity)
        elif kind is LimitType.CONCENTRATION:
            breakdown = {
                Dimension.ASSET: gross_by_asset,
                Dimension.VENUE: gross_by_venue,
                Dimension.CUSTODIAN: gross_by_custodian,
            }[limit.dimension or Dimension.ASSET]
            top, value = concentration(breakdown(e))
            detail = f"{limit.dimension}={top}"
        elif kind is LimitType.UNSETTLED_EXPOSURE:
            settlements = [
                s
                for a in e.accounts
                for s in self.book.settlements.get(a, ())
                if limit.asset is None or s.asset == limit.asset
            ]
            unsettled = unsettled_exposure(settlements, self.book.prices.usd, self.now)
            value = Decimal(unsettled.count) if limit.measure is Measure.COUNT else unsettled.value
            detail = f"count={unsettled.count};unpriced={','.join(unsettled.unpriced)}"
        else:  # pragma: no cover - every type is dispatched above or in `limit`
            raise AssertionError(kind)
        return value, detail

    def stale_data(self, limit: Limit) -> None:
        seen = False
        for (venue, data_kind), newest in self.book.freshness.items():
            if (limit.venue is None or venue == limit.venue) and (limit.kind is None or data_kind == limit.kind):
                seen = True
                value = data_age_seconds(newest, self.now)
                if self.include_ok or value >= limit.clear_at:
                    self.emit(limit, value, Subject(FIRM_KEY, venue=venue, kind=data_kind))
        if not seen:  # never received anything matching: infinitely stale
            self.emit(limit, INFINITY, Subject(FIRM_KEY, venue=limit.venue, kind=limit.kind))

    def price_deviation(self, limit: Limit) -> None:
        symbol = str(limit.symbol)
        value = price_deviation(self.book.prices.pair_prices.get(symbol), limit.reference or ZERO)
        if self.include_ok or value >= limit.clear_at:
            self.emit(limit, value, Subject(FIRM_KEY, symbol=symbol))

    def reconciliation(self, limit: Limit) -> None:
        """Per (account, asset) of accounts with a custodian; value = |custody − exchange| in USD."""
        usd = self.book.prices.usd
        for account in self.members(limit):
            if self.book.accounts[account].custodian is None:
                continue  # the venue holds the assets itself: nothing to reconcile against
            if self.affected is not None and account not in self.affected:
                continue
            asset = limit.asset
            balances = [b for b in self.book.balances.get(account, ()) if asset is None or b.asset == asset]
            custody = [c for c in self.book.custody.get(account, ()) if asset is None or c.asset == asset]
            if self.include_ok:
                tolerance = {"abs_tolerance": ZERO, "rel_tolerance": ZERO}
            else:
                tolerance = {"abs_tolerance": limit.abs_tolerance, "rel_tolerance": limit.rel_tolerance}
            for m in reconcile(balances, custody, **tolerance):
                price = usd.get(m.asset)
                within = within_tolerance(m.exchange_total, m.custody_total, limit.abs_tolerance, limit.rel_tolerance)
                value = ZERO if within else (abs(m.difference) * price if price is not None else INFINITY)
                if self.include_ok or value >= limit.clear_at:
                    detail = f"exchange={m.exchange_total};custody={m.custody_total}"
                    self.emit(limit, value, Subject(account, account, asset=m.asset), detail)
