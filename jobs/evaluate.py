"""The scheduled evaluation: one full pass over the book. Thin: the use case is services/evaluation.py.

A failed pass raises into the scheduler wrapper (jobs/schedule.py), which counts and logs it; the next
run is the retry. Nothing partial is committed: the pass writes in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from models.risk import Limit
from services.alert_records import StoredEvent
from services.book_loader import BookCache, FreshnessSource
from services.evaluation import FirmSignalsState, HistoryState, WrittenState, run_evaluation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateJob:
    engine: Engine
    limits: Callable[[], Sequence[Limit]]
    groups: Callable[[], Mapping[str, tuple[str, ...]]]
    channels: Callable[[], Sequence[str]]
    clock: Callable[[], datetime]
    history: HistoryState
    publish: Callable[[Sequence[StoredEvent]], None]
    freshness: FreshnessSource | None = None  # None: derived from collection_runs
    cache: BookCache = field(default_factory=BookCache)  # the previous book; rows of unmoved accounts
    written: WrittenState = field(default_factory=WrittenState)  # alerts/statuses the last pass committed
    per_account_metrics: bool = False
    firm_signals: FirmSignalsState = field(default_factory=FirmSignalsState)

    def __call__(self) -> None:
        result = run_evaluation(
            self.engine,
            self.limits(),
            self.clock(),
            groups=self.groups(),
            freshness=self.freshness,
            channels=self.channels(),
            history=self.history,
            publish=self.publish,
            cache=self.cache,
            per_account_metrics=self.per_account_metrics,
            firm_signals=self.firm_signals,
            written=self.written,
        )
        if result.events:
            log.info("evaluation %d: %d alert events", result.evaluation_id, len(result.events))
