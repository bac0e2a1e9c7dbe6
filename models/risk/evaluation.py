"""Evaluate limits over a risk book: checks, per-scope exposures and updated P&L marks. Pure.

`evaluate` takes the fast path (`models.risk.fast`: a float screen over numpy arrays, then an exact
Decimal recomputation of every figure it reports); `models.risk.reference` is the straightforward exact
evaluation it is tested against. Both return identical results (docs/risk-model.md, "Performance").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from models.risk import fast, reference
from models.risk.book import RiskBook
from models.risk.limits import Limit
from models.risk.results import RISK_CONTEXT, Check, Evaluation, RiskSummary, Subject, summarize

__all__ = [
    "RISK_CONTEXT",
    "Check",
    "Evaluation",
    "RiskSummary",
    "Subject",
    "evaluate",
    "evaluate_accounts",
    "evaluate_limits",
    "summarize",
]


def evaluate(book: RiskBook, limits: Iterable[Limit], now: datetime, *, include_ok: bool = False) -> Evaluation:
    """Evaluate every account and scope of the book.

    The fast path serves every call except `include_ok=True` (a diagnostic listing every subject) and books
    the float screen can't bound (non-finite or astronomically large values); both use the reference.
    """
    limits = list(limits)
    if not include_ok:
        result = fast.evaluate(book, limits, now)
        if result is not None:
            return result
    return reference.evaluate(book, limits, now, include_ok=include_ok)


def evaluate_limits(book: RiskBook, limits: Iterable[Limit], now: datetime) -> list[Check]:
    return list(evaluate(book, limits, now).checks)


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
    return reference.evaluate_accounts(book, limits, accounts, now, previous=previous, include_ok=include_ok)
