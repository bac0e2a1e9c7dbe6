"""Re-seed the tick path's in-memory risk state from the latest snapshots, so it does not drift from what
the venues report (positions, balances, new accounts) while ticks keep it current in between."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from services.book_loader import FreshnessSource, load_book
from services.live_risk import LiveRisk


@dataclass(frozen=True)
class ResyncTickStateJob:
    engine: Engine
    live: LiveRisk
    groups: Callable[[], Mapping[str, tuple[str, ...]]]
    account_ids: dict[str, int]  # shared with the tick alert writer: new accounts get their ids here
    clock: Callable[[], datetime]
    freshness: FreshnessSource | None = None  # the collection tracker, as the scheduled evaluation uses

    def __call__(self) -> None:
        loaded = load_book(self.engine, groups=self.groups(), freshness=self.freshness)
        self.account_ids.update(loaded.account_ids)  # accounts are never removed: update is enough
        self.live.resync(loaded.book, self.clock(), loaded.positions_as_of)
