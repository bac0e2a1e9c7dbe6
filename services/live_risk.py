"""The in-memory risk state behind StreamTicks, CheckOrder and GetRiskSummary.

Seeded from the latest snapshots (a ``RiskBook``) and the current limits, updated by ticks. Each batch
updates the price table incrementally and hands the new book to ``models.risk.incremental.TickState``,
which screens every affected subject in floats and evaluates exactly only those whose level may have
changed: the level changes are exactly those of ``evaluate_accounts`` on the affected accounts (see
docs/risk-model.md, "Incremental (tick) path"). Changes go to a ``ChangeSink`` (the background alert
writer): the stream never waits on the database.

One lock serialises batches, CheckOrder and GetRiskSummary: a batch is typically well under a
millisecond of pure computation, a read revalues one account, and a single writer keeps "previous
level" well defined.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Protocol

from models.risk import (
    RISK_CONTEXT,
    Check,
    Evaluation,
    Exposure,
    InstrumentKind,
    Level,
    Limit,
    PnlMarks,
    Position,
    PositionTick,
    Price,
    PriceTable,
    PriceTick,
    RiskBook,
    apply_tick,
    canonical_symbol,
    evaluate,
    price_table,
)
from models.risk.incremental import LevelChange, TickState
from models.risk.price_update import PricePlan
from services.errors import InvalidArgumentError, NotFoundError

ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    """A trade: the account's position in (symbol, kind) moves by ``signed_quantity`` at ``price``."""

    account: str
    symbol: str
    signed_quantity: Decimal
    price: Decimal
    kind: InstrumentKind
    observed_at: datetime


LiveTick = PriceTick | PositionTick | Fill


@dataclass(frozen=True)
class Rejected:
    index: int
    field: str
    reason: str


@dataclass(frozen=True)
class BatchOutcome:
    changes: tuple[LevelChange, ...]
    rejected: tuple[Rejected, ...]
    accounts_evaluated: int  # accounts the batch covered (affected by its ticks)
    at: datetime  # when the batch was evaluated
    data_at: datetime  # time of the data that showed the changes: the batch's newest tick, or the snapshots


@dataclass(frozen=True)
class Order:
    account: str
    symbol: str
    signed_quantity: Decimal  # + buy, - sell
    price: Decimal
    kind: InstrumentKind = InstrumentKind.SPOT


@dataclass(frozen=True)
class OrderCheck:
    allowed: bool
    impacts: tuple[tuple[Check | None, Check], ...]  # (before, after) per check the order touches


@dataclass(frozen=True)
class AccountRisk:
    account: str
    book: RiskBook
    at: datetime  # the state's evaluation time
    exposure: Exposure
    marks: PnlMarks | None
    checks: tuple[Check, ...]  # include_ok checks of the account's scope


class ChangeSink(Protocol):
    """Receives every batch that changed a level (the tick alert writer). Must not block."""

    def submit(self, outcome: BatchOutcome, now: datetime) -> None: ...


def apply_fill(book: RiskBook, fill: Fill) -> PositionTick:
    """The position after a fill: the average price moves on additions, stays on reductions, and is
    the fill price when the position flips side."""
    pair = canonical_symbol(fill.symbol)
    current = next(
        (p for p in book.positions.get(fill.account, ()) if p.pair == pair and p.kind is fill.kind),
        None,
    )
    old_qty = current.quantity if current else ZERO
    old_avg = current.avg_price if current else ZERO
    with localcontext(RISK_CONTEXT):
        new_qty = old_qty + fill.signed_quantity
        if old_qty == ZERO or ((old_qty > ZERO) != (new_qty > ZERO) and new_qty != ZERO):
            avg = fill.price
        elif abs(new_qty) > abs(old_qty):
            avg = (old_qty * old_avg + fill.signed_quantity * fill.price) / new_qty
        else:
            avg = old_avg
    venue = book.accounts[fill.account].venue if fill.account in book.accounts else fill.account.partition(":")[0]
    position = Position(
        venue=venue,
        account=fill.account,
        symbol=current.symbol if current else fill.symbol,
        quantity=new_qty,
        avg_price=avg,
        observed_at=fill.observed_at,
        mark_price=None,
        realized_pnl=current.realized_pnl if current else None,
        multiplier=current.multiplier if current else Decimal(1),
        kind=fill.kind,
    )
    return PositionTick(position)


def level_changes(previous: Mapping[str, tuple[Level, Check]], evaluation: Evaluation) -> list[LevelChange]:
    """Level changes of the covered checks, following the alert state machine's hysteresis: a value at
    level ok but still at or above clear keeps its level; absent checks (below clear) clear."""
    changes: list[LevelChange] = []
    emitted = set()
    for check in evaluation.checks:
        fp = check.fingerprint
        emitted.add(fp)
        before, _ = previous.get(fp, (Level.OK, check))
        level = check.level if check.level is not Level.OK or check.value < check.clear else before
        if level is not before:
            changes.append(LevelChange(check, before, level, check.value))
    for fp, (before, check) in previous.items():
        if (
            fp not in emitted
            and before is not Level.OK
            and check.limit.name in evaluation.limits
            and check.subject.scope_key in evaluation.covered
        ):
            changes.append(LevelChange(check, before, Level.OK, None))
    return changes


class LiveRisk:
    def __init__(
        self,
        book: RiskBook,
        limits: Sequence[Limit] | Callable[[], Sequence[Limit]],
        now: datetime,
        sink: ChangeSink | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._sink = sink
        # A callable follows hot-reloaded limits: each batch evaluates with the limits current then.
        fixed = () if callable(limits) else tuple(limits)
        self._limits_source: Callable[[], Sequence[Limit]] = limits if callable(limits) else (lambda: fixed)
        limits_now = list(self._limits)
        evaluation = evaluate(book, limits_now, now)
        levels = {c.fingerprint: (c.level, c) for c in evaluation.checks if c.level is not Level.OK}
        self._state = TickState.seed(book, limits_now, evaluation, levels)
        self._plan = PricePlan.of(book.prices)

    @property
    def _limits(self) -> Sequence[Limit]:
        return self._limits_source()

    @property
    def book(self) -> RiskBook:
        return self._state.book

    @property
    def confirmed(self) -> int:
        """Accounts the last batch had to evaluate exactly (the rest were settled by the float screen)."""
        return self._state.confirmed

    def apply(self, ticks: Sequence[tuple[int, LiveTick]], now: datetime) -> BatchOutcome:
        """Apply a batch of (index, tick) in order, evaluate the affected accounts once, report changes."""
        rejected: list[Rejected] = []
        with self._lock:
            state = self._state
            book = state.book
            ticked: set[str] = set()
            repositioned: set[str] = set()
            moved_pairs: set[str] = set()
            moved_assets: set[str] = set()
            data_at: datetime | None = None
            for run in _runs(ticks):
                if isinstance(run, list):  # consecutive price ticks: one price-table update for all of them
                    self._plan, moves = self._plan.update(book.prices, run)
                    book = _with_prices(book, run, moves.table)
                    ticked |= moves.ticked
                    moved_pairs |= moves.pairs
                    moved_assets |= moves.assets
                    data_at = _newest(data_at, max(p.observed_at for p in run))
                    continue
                index, tick = run
                account = tick.account if isinstance(tick, Fill) else tick.position.account
                if account not in book.accounts:
                    rejected.append(Rejected(index, "account", f"unknown account {account!r}"))
                    continue
                resolved = apply_fill(book, tick) if isinstance(tick, Fill) else tick
                repositioned.add(account)  # what `affected_accounts` says of a position tick
                book = apply_tick(book, resolved)
                data_at = _newest(data_at, resolved.position.observed_at)
            changes, affected = state.advance(
                book,
                self._limits,
                now,
                ticked_pairs=ticked,
                moved_pairs=moved_pairs,
                moved_assets=moved_assets,
                repositioned=repositioned,
            )
            # The data that showed a change is the batch's newest tick (never later than now: clock skew).
            data_at = now if data_at is None else min(data_at, now)
            return self._publish(BatchOutcome(tuple(changes), tuple(rejected), affected, now, data_at))

    def resync(
        self, book: RiskBook, now: datetime, positions_as_of: Mapping[str, datetime] | None = None
    ) -> BatchOutcome:
        """Adopt a fresh snapshot book (positions, balances, accounts, marks): the venues are authoritative
        for what they have reported. A position ticked after the account's latest positions snapshot
        (``positions_as_of``) is one the venue has not reported yet: it is kept, or a fill streamed a moment
        before the venue poll would be undone and its alert resolved and re-opened. Prices keep the newest
        observation of either side. One full evaluation; level changes go to the sink like a batch's.
        Their data time is the newest data in the adopted book (snapshots and prices), not the resync clock."""
        with self._lock:
            current = self._state.book
            if positions_as_of is not None:
                for account, rows in current.positions.items():
                    as_of = positions_as_of.get(account)
                    for position in rows:
                        if as_of is None or position.observed_at > as_of:
                            book = apply_tick(book, PositionTick(position))
            merged = price_table([*book.prices.latest.values(), *current.prices.latest.values()])
            fresh = dict(book.freshness)
            for key, at in current.freshness.items():
                if key not in fresh or at > fresh[key]:
                    fresh[key] = at
            book = replace(book, prices=merged, freshness=fresh)
            limits = list(self._limits)
            evaluation = evaluate(book, limits, now)
            changes = level_changes(self._state.levels, evaluation)
            levels = dict(self._state.levels)
            for change in changes:
                fp = change.check.fingerprint
                if change.level is Level.OK:
                    levels.pop(fp, None)
                else:
                    levels[fp] = (change.level, change.check)
            self._state = TickState.seed(book, limits, evaluation, levels)
            self._plan = PricePlan.of(book.prices)
            data_at = min(max(fresh.values(), default=now), now)
            return self._publish(BatchOutcome(tuple(changes), (), len(book.accounts), now, data_at))

    def _publish(self, outcome: BatchOutcome) -> BatchOutcome:
        """Under the lock: hand the changes to the sink, so the writer sees outcomes in order."""
        if outcome.changes and self._sink is not None:
            self._sink.submit(outcome, outcome.at)
        return outcome

    def summary(self, account: str) -> AccountRisk:
        with self._lock:
            state = self._state
            if account not in state.book.accounts:
                raise NotFoundError(f"account {account!r} is not in the risk state")
            view = state.account_view(account, self._limits)
            return AccountRisk(account, state.book, state.at, view.exposure, view.marks, view.checks)

    def check_order(self, order: Order, now: datetime) -> OrderCheck:
        """Evaluate the account as if the order had filled; only that account is revalued, nothing changes."""
        try:
            symbol = canonical_symbol(order.symbol)
        except ValueError as exc:
            raise InvalidArgumentError(f"symbol: {exc}") from None
        with self._lock:
            state = self._state
            book = state.book
            if order.account not in book.accounts:
                raise NotFoundError(f"account {order.account!r} is not in the risk state")
            fill = Fill(order.account, symbol, order.signed_quantity, order.price, order.kind, now)
            new = apply_fill(book, fill).position
            # The order's own price marks the new position when the market has none yet.
            if symbol not in book.prices.pair_prices:
                new = replace(new, mark_price=order.price)
            kept = tuple(
                p for p in book.positions.get(order.account, ()) if (p.symbol, p.kind) != (new.symbol, new.kind)
            )
            positions = (*kept, new) if new.quantity != ZERO else kept
            before, after = state.what_if(order.account, positions, self._limits, now)
        old = {c.fingerprint: c for c in before}
        impacts = tuple(
            (old.get(c.fingerprint), c)
            for c in after
            if _touches(c, order.account) and (c.fingerprint not in old or old[c.fingerprint].value != c.value)
        )
        allowed = all(c.level is not Level.CRITICAL for _, c in impacts)
        return OrderCheck(allowed, impacts)


def _touches(check: Check, account: str) -> bool:
    return check.subject.account in (account, None)


def _runs(ticks: Sequence[tuple[int, LiveTick]]) -> list[list[Price] | tuple[int, Fill | PositionTick]]:
    """Position ticks and fills one by one; each run of consecutive price ticks as one list, keeping only
    the newest per (source, symbol): the batch is evaluated once, after all of them."""
    out: list[list[Price] | tuple[int, Fill | PositionTick]] = []
    run: dict[tuple[str, str], Price] = {}
    for index, tick in ticks:
        if isinstance(tick, PriceTick):
            run[(tick.price.source, tick.price.symbol)] = tick.price
            continue
        if run:
            out.append(list(run.values()))
            run = {}
        out.append((index, tick))
    if run:
        out.append(list(run.values()))
    return out


def _newest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _with_prices(book: RiskBook, prices: Sequence[Price], table: PriceTable) -> RiskBook:
    fresh = dict(book.freshness)
    for price in prices:
        key = (price.source, "prices")
        if key not in fresh or price.observed_at > fresh[key]:
            fresh[key] = price.observed_at
    return replace(book, prices=table, freshness=fresh)


def apply_prices(book: RiskBook, prices: Sequence[Price]) -> tuple[RiskBook, frozenset[str]]:
    """``apply_tick`` + ``affected_accounts`` for many prices at once: one price table instead of two per
    tick (rebuilding the table is most of a price tick's cost)."""
    old = book.prices
    table = price_table([*old.latest.values(), *prices])
    affected: set[str] = set()
    for price in prices:
        affected |= book.accounts_by_pair.get(canonical_symbol(price.symbol), frozenset())
    for asset in table.usd.keys() | old.usd.keys():
        if table.usd.get(asset) != old.usd.get(asset):
            affected |= book.accounts_by_asset.get(asset, frozenset())
    fresh = dict(book.freshness)
    for price in prices:
        key = (price.source, "prices")
        if key not in fresh or price.observed_at > fresh[key]:
            fresh[key] = price.observed_at
    return replace(book, prices=table, freshness=fresh), frozenset(affected)
