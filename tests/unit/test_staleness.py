"""The in-memory staleness tracker."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

from services.staleness import StalenessTracker

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def test_age_grows_from_the_newest_accepted_time_and_times_never_go_back() -> None:
    tracker = StalenessTracker()
    assert tracker.age("ex-a", "positions", T0) is None
    tracker.record("ex-a", "positions", T0)
    tracker.record("ex-a", "positions", T0 - timedelta(seconds=30))  # a late, older run
    assert tracker.age("ex-a", "positions", T0 + timedelta(seconds=4)) == 4.0
    assert tracker.snapshot() == {("ex-a", "positions"): T0}


def test_seeded_from_run_kinds_and_freshness_holds_only_evaluated_kinds() -> None:
    tracker = StalenessTracker.from_runs(
        {
            ("ex-a", "positions"): T0,
            ("cust", "custody_balances"): T0,
            ("cust", "settlements"): T0,
            ("md", "prices"): T0,
            ("old", "something_else"): T0,
        }
    )
    assert set(tracker.snapshot()) == {
        ("ex-a", "positions"),
        ("cust", "custody"),
        ("cust", "settlements"),
        ("md", "prices"),
    }
    assert set(tracker.freshness()) == {("ex-a", "positions"), ("cust", "custody"), ("md", "prices")}


def test_expected_pairs_never_seen_are_infinitely_old() -> None:
    tracker = StalenessTracker(expected=[("ex-a", "balances")])
    tracker.record("ex-b", "balances", T0)
    ages = tracker.ages(T0 + timedelta(seconds=2))
    assert math.isinf(ages[("ex-a", "balances")])
    assert ages[("ex-b", "balances")] == 2.0


def test_concurrent_records_keep_the_newest() -> None:
    tracker = StalenessTracker()

    def record(offset: int) -> None:
        for i in range(200):
            tracker.record("ex-a", "prices", T0 + timedelta(milliseconds=offset + i * 10))

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.newest("ex-a", "prices") == T0 + timedelta(milliseconds=3 + 199 * 10)


def test_merged_times_from_other_replicas_only_move_forward() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    tracker = StalenessTracker()
    tracker.record("ex-a", "positions", t0 + timedelta(seconds=5))
    tracker.merge({("ex-a", "positions"): t0, ("ex-b", "balances"): t0 + timedelta(seconds=3)})
    assert tracker.newest("ex-a", "positions") == t0 + timedelta(seconds=5)
    assert tracker.newest("ex-b", "balances") == t0 + timedelta(seconds=3)
