"""How old each venue's data is: the newest accepted collection per (venue, kind), kept in memory.

Collection jobs record a time after every run that collected everything it was asked for; the tracker
is seeded at start from ``collection_runs`` so a restart does not make stale data look fresh (or
fresh data look never seen). Evaluation reads ``freshness()`` for ``models.risk.build_book``; the
``risk_data_staleness_seconds`` gauge reads ``ages()`` at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime

# The data kinds evaluation knows (models.risk.book keys freshness by these names).
POSITIONS, BALANCES, PRICES, CUSTODY = "positions", "balances", "prices", "custody"
SETTLEMENTS = "settlements"  # tracked and exported, but not part of the book's freshness
EVALUATED_KINDS = (POSITIONS, BALANCES, PRICES, CUSTODY)

# collection_runs.kind (the snapshot store's names) -> staleness kind.
RUN_KINDS = {
    "positions": POSITIONS,
    "balances": BALANCES,
    "prices": PRICES,
    "custody_balances": CUSTODY,
    "settlements": SETTLEMENTS,
}

Key = tuple[str, str]  # (venue id, kind)


class StalenessTracker:
    """Thread-safe newest-data time per (venue, kind). Times only move forward."""

    def __init__(self, seed: Mapping[Key, datetime] | None = None, *, expected: Iterable[Key] = ()) -> None:
        self._lock = threading.Lock()
        self._newest: dict[Key, datetime] = dict(seed or {})
        # Pairs the monitor collects: exported as +Inf until their first data, so "never" is visible.
        self._expected: set[Key] = set(expected)

    @classmethod
    def from_runs(cls, runs: Mapping[tuple[str, str], datetime], *, expected: Iterable[Key] = ()) -> StalenessTracker:
        """Seed from ``SnapshotStore.last_good_runs()`` (keyed by run kind)."""
        seed = {(venue, RUN_KINDS[kind]): at for (venue, kind), at in runs.items() if kind in RUN_KINDS}
        return cls(seed, expected=expected)

    def expect(self, venue: str, kind: str) -> None:
        with self._lock:
            self._expected.add((venue, kind))

    def record(self, venue: str, kind: str, at: datetime) -> None:
        with self._lock:
            current = self._newest.get((venue, kind))
            if current is None or at > current:
                self._newest[(venue, kind)] = at

    def merge(self, newest: Mapping[Key, datetime]) -> None:
        """Record times learned elsewhere (another replica's runs, read from the database); forward only."""
        for (venue, kind), at in newest.items():
            self.record(venue, kind, at)

    def newest(self, venue: str, kind: str) -> datetime | None:
        with self._lock:
            return self._newest.get((venue, kind))

    def age(self, venue: str, kind: str, now: datetime) -> float | None:
        """Seconds since the newest accepted data, or None if none was ever accepted."""
        newest = self.newest(venue, kind)
        return None if newest is None else max(0.0, (now - newest).total_seconds())

    def snapshot(self) -> dict[Key, datetime]:
        with self._lock:
            return dict(self._newest)

    def freshness(self) -> dict[Key, datetime]:
        """The ``freshness`` mapping ``models.risk.build_book`` takes: evaluated kinds only."""
        return {key: at for key, at in self.snapshot().items() if key[1] in EVALUATED_KINDS}

    def ages(self, now: datetime) -> dict[Key, float]:
        """Age in seconds of every known or expected pair; ``inf`` for an expected pair never seen."""
        with self._lock:
            keys = self._expected | set(self._newest)
            newest = dict(self._newest)
        return {
            key: float("inf") if key not in newest else max(0.0, (now - newest[key]).total_seconds())
            for key in sorted(keys)
        }
