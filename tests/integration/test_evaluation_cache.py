"""The evaluation job's state across passes: what it caches of its last commit must never hide a change made by
someone else (the tick path's writer, an operator's ack, another replica), and a kept book must give the same
results as a fresh read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from models.risk import AlertEvent, AlertState, Limit, LimitType, Transition
from services.alert_records import read_alerts
from services.alert_store import acknowledge, apply_transitions
from services.book_loader import BookCache
from services.evaluation import EvaluationResult, WrittenState, run_evaluation
from services.limits_store import current_limits, sync_limits
from services.tick_alerts import ACTOR as TICKS
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
LEVERAGE = Limit(
    "acct-leverage", LimitType.LEVERAGE, per_account=True, warn=Decimal(3), critical=Decimal(5), clear=Decimal("2.5")
)


class Replica:
    """One evaluation loop's state (as EvaluateJob keeps it) over a shared database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cache = BookCache()
        self.written = WrittenState()
        with engine.connect() as conn:
            self.limits = current_limits(conn)

    def evaluate(self, at: datetime) -> EvaluationResult:
        return run_evaluation(self.engine, self.limits, at, cache=self.cache, written=self.written)


class Desk:
    """One account long 1 BTC-USD perpetual at 10000: leverage = 10000 / USD balance."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.venues = Venues.on(engine)
        self.venues.venue("ex")
        self.venues.venue("md", "market_data")
        self.venues.prices("md", {"BTC-USD": "10000"}, T0)
        self.venues.positions("ex", "acct", {"BTC-USD-SWAP": ("1", "10000")}, T0, collected=T0)
        self.at = T0
        with engine.begin() as conn:
            sync_limits(conn, [LEVERAGE], now=T0 - timedelta(days=1), changed_by="test")

    def balance(self, usd: str) -> datetime:
        """A new balance snapshot; returns a time just after it to evaluate at."""
        self.at += timedelta(seconds=10)
        self.venues.balances("ex", "acct", {"USD": usd}, self.at, collected=self.at)
        return self.at + timedelta(seconds=1)

    def status(self) -> tuple[str, datetime, datetime, int]:
        with self.engine.connect() as conn:
            status, changed, updated = conn.execute(
                text("SELECT status, changed_at, updated_at FROM compliance_status")
            ).one()
            history = conn.scalar(text("SELECT count(*) FROM compliance_history"))
        return status, changed, updated, int(history or 0)


def _events(result: EvaluationResult) -> list[tuple[AlertEvent, str]]:
    return [(e.event_type, e.alert.severity.value) for e in result.events]


def test_an_alert_resolved_behind_the_cache_is_reopened_by_the_next_pass(fresh_engine: Engine) -> None:
    desk = Desk(fresh_engine)
    job = Replica(fresh_engine)
    first = job.evaluate(desk.balance("1500"))  # leverage 6.67: critical
    assert _events(first) == [(AlertEvent.OPENED, "critical")]
    steady = job.evaluate(desk.at + timedelta(seconds=2))
    assert (steady.events, steady.cache_hits) == ([], (True, True))
    # statuses are written on change only: both times are the first pass's
    assert desk.status() == ("breach", first.evaluation.at, first.evaluation.at, 1)

    # the tick path's writer resolves it (its own view of the account), behind the evaluation's cache
    at = desk.at + timedelta(seconds=3)
    with fresh_engine.begin() as conn:
        [record] = read_alerts(conn, active_only=True)
        alert = record.to_domain()
        resolved = replace(alert, state=AlertState.RESOLVED, updated_at=at, resolved_at=at)
        apply_transitions(conn, [Transition(AlertEvent.RESOLVED, resolved, alert)], at, TICKS, {})

    # still 6.67 in the snapshots: a new alert, which a pass trusting its stale cache would not open
    again = job.evaluate(desk.at + timedelta(seconds=4))
    assert _events(again) == [(AlertEvent.OPENED, "critical")]
    assert again.cache_hits == (False, True)
    assert again.events[0].alert.id != record.id
    assert job.evaluate(desk.at + timedelta(seconds=5)).cache_hits == (True, True)


def test_an_operator_ack_between_passes_is_seen_and_kept(fresh_engine: Engine) -> None:
    desk = Desk(fresh_engine)
    job = Replica(fresh_engine)
    [opened] = job.evaluate(desk.balance("1500")).events
    acknowledge(fresh_engine, opened.alert.id, "ops:ana", "hedging", desk.at + timedelta(seconds=2))
    after_ack = job.evaluate(desk.at + timedelta(seconds=3))
    assert (after_ack.events, after_ack.cache_hits) == ([], (False, True))
    assert job.written.alerts[opened.alert.fingerprint][0].state is AlertState.ACKNOWLEDGED
    # de-escalation from the cached, acknowledged alert keeps the ack
    [event] = job.evaluate(desk.balance("2500")).events  # leverage 4: warning
    assert (event.event_type, event.alert.state, event.alert.acknowledged_by) == (
        AlertEvent.DEESCALATED,
        AlertState.ACKNOWLEDGED,
        "ops:ana",
    )


def test_statuses_and_alerts_written_by_another_replica_are_re_read(fresh_engine: Engine) -> None:
    desk = Desk(fresh_engine)
    a, b = Replica(fresh_engine), Replica(fresh_engine)
    assert _events(a.evaluate(desk.balance("1500"))) == [(AlertEvent.OPENED, "critical")]
    # failover: replica b evaluates while the account is healthy, resolving the alert and the breach
    assert _events(b.evaluate(desk.balance("100000"))) == [(AlertEvent.RESOLVED, "critical")]
    assert desk.status()[0] == "compliant"
    # and back to a: its cache still says "breach, alert open"; the database says otherwise
    back = a.evaluate(desk.balance("1500"))
    assert back.cache_hits == (False, False)
    assert _events(back) == [(AlertEvent.OPENED, "critical")]
    status, changed, updated, history = desk.status()
    assert (status, changed, updated, history) == ("breach", back.evaluation.at, back.evaluation.at, 3)


def test_a_kept_book_evaluates_like_a_fresh_read_as_heads_move(fresh_engine: Engine) -> None:
    desk = Desk(fresh_engine)
    venues = desk.venues
    venues.positions("ex", "other", {"ETH-USD": ("10", "2000")}, T0, collected=T0)
    venues.prices("md", {"ETH-USD": "2000"}, T0)
    job = Replica(fresh_engine)
    for step, usd in enumerate(["1500", "1500", "2500", "100000", "1800"]):
        at = desk.balance(usd)
        if step == 3:  # the other account trades: its head moves too, with new contents
            venues.positions("ex", "other", {"ETH-USD": ("12", "2000")}, desk.at, collected=desk.at)
        kept = job.evaluate(at)
        fresh = run_evaluation(fresh_engine, job.limits, at + timedelta(milliseconds=1))  # no state at all
        assert [(c.fingerprint, c.level, c.value) for c in kept.evaluation.checks] == [
            (c.fingerprint, c.level, c.value) for c in fresh.evaluation.checks
        ]
        assert fresh.events == []  # the kept pass already wrote everything the fresh one found
        assert dict(kept.loaded.book.positions) == dict(fresh.loaded.book.positions)
        assert kept.loaded.book.freshness == fresh.loaded.book.freshness
