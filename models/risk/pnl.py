"""P&L over time: trading days, daily P&L and drawdown from persisted marks. Pure: the caller persists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from models.risk.values import ZERO


@dataclass(frozen=True, slots=True)
class PnlMarks:
    """What must survive a restart to compute daily P&L and drawdown for one scope (account/group/firm)."""

    hwm: Decimal
    day_start_equity: Decimal
    trading_day: date


def trading_day(now: datetime, day_offset: timedelta = timedelta(0)) -> date:
    """The trading day `now` belongs to; a day starts at UTC midnight + day_offset."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return (now.astimezone(UTC) - day_offset).date()


def update_marks(
    marks: PnlMarks | None, equity: Decimal, now: datetime, day_offset: timedelta = timedelta(0)
) -> PnlMarks:
    """Fold a new equity observation into the marks.

    Returns the *same object* when nothing changed, so callers can persist only what changed (identity
    check) and the hot path allocates nothing for quiet accounts. The first observation of a new trading
    day becomes that day's start equity (we never see the exact boundary). An observation from an
    earlier trading day than the marks (clock skew, replay) leaves the day untouched.
    """
    return fold_marks(marks, equity, trading_day(now, day_offset))


def fold_marks(marks: PnlMarks | None, equity: Decimal, day: date) -> PnlMarks:
    """`update_marks` with the trading day already known (the evaluation computes it once)."""
    if marks is None:
        return PnlMarks(hwm=equity, day_start_equity=equity, trading_day=day)
    if day > marks.trading_day:
        return PnlMarks(hwm=max(marks.hwm, equity), day_start_equity=equity, trading_day=day)
    if equity > marks.hwm:
        return PnlMarks(hwm=equity, day_start_equity=marks.day_start_equity, trading_day=marks.trading_day)
    return marks


def daily_pnl(marks: PnlMarks, equity: Decimal) -> Decimal:
    return equity - marks.day_start_equity


def daily_loss(marks: PnlMarks, equity: Decimal) -> Decimal:
    """Loss as a positive number: max(0, −daily P&L)."""
    pnl = equity - marks.day_start_equity
    return -pnl if pnl < ZERO else ZERO


def drawdown(marks: PnlMarks, equity: Decimal) -> Decimal:
    """(hwm − equity) / hwm as a fraction; zero while the high-water mark is not positive (undefined)."""
    if marks.hwm <= ZERO or equity >= marks.hwm:
        return ZERO
    return (marks.hwm - equity) / marks.hwm
