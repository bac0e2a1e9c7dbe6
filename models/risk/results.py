"""What an evaluation returns: checks, subjects, the evaluation itself and per-scope summaries. Pure types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

from models.risk.exposure import Exposure
from models.risk.limits import Level, Limit
from models.risk.pnl import PnlMarks, daily_pnl, drawdown
from models.risk.values import ZERO

# 28 significant digits, banker's rounding, and traps so a bad input fails loudly instead of yielding NaN.
RISK_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True, slots=True)
class Subject:
    """What a check is about. `scope_key` is the account key, "group:<name>" or "firm"."""

    scope_key: str
    account: str | None = None
    symbol: str | None = None
    asset: str | None = None
    venue: str | None = None
    kind: str | None = None
    # Built once: a pass reads every check's fingerprint several times (alert diff, absent-check resolution).
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        """`key`: stable text form, e.g. "scope=binance:a1;account=binance:a1;symbol=BTC-USDT;kind=spot"."""
        parts = [f"scope={self.scope_key}"]
        for name in ("account", "symbol", "asset", "venue", "kind"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        object.__setattr__(self, "key", ";".join(parts))


@dataclass(frozen=True, slots=True)
class Check:
    limit: Limit
    subject: Subject
    value: Decimal  # Decimal('Infinity') for unbounded: leverage at equity ≤ 0, never-seen data
    level: Level
    detail: str = ""  # e.g. which asset holds the concentration, the two sides of a mismatch

    @property
    def threshold(self) -> Decimal | None:
        """The threshold crossed; None at level ok."""
        return self.limit.threshold(self.level)

    @property
    def clear(self) -> Decimal:
        return self.limit.clear_at

    @property
    def utilisation(self) -> Decimal:
        """value / (critical, else warn); 1 means at the top threshold."""
        return self.value / self.limit.top

    @property
    def fingerprint(self) -> str:
        return f"{self.limit.name}|{self.subject.key}"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation's results.

    Only checks whose value is at or above the limit's clear threshold are emitted (all of them with
    include_ok=True): a (limit, subject) in a covered scope with no check is below clear, which is what
    `alerts.resolve_absent` relies on. Persist `changed_marks`.
    """

    at: datetime
    checks: tuple[Check, ...]
    exposures: Mapping[str, Exposure]  # every account, every group ("group:<name>") and "firm"
    marks: Mapping[str, PnlMarks]  # current marks of every scope
    changed_marks: Mapping[str, PnlMarks]
    covered: frozenset[str]  # scope keys whose subjects were all evaluated
    limits: frozenset[str]  # names of the enabled limits evaluated


@dataclass(frozen=True, slots=True)
class RiskSummary:
    """What GetRiskSummary and the metrics exporter show for one scope."""

    key: str
    exposure: Exposure
    leverage: Decimal
    daily_pnl: Decimal
    drawdown: Decimal
    marks: PnlMarks | None


def summarize(evaluation: Evaluation, key: str) -> RiskSummary:
    exposure = evaluation.exposures[key]
    marks = evaluation.marks.get(key)
    return RiskSummary(
        key=key,
        exposure=exposure,
        leverage=exposure.leverage,
        daily_pnl=daily_pnl(marks, exposure.equity) if marks else ZERO,
        drawdown=drawdown(marks, exposure.equity) if marks else ZERO,
        marks=marks,
    )
