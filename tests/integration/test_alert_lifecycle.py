"""End to end through the database: snapshots -> evaluation -> alerts open -> ack -> hysteresis -> resolve ->
re-open as a new alert; compliance history, outbox rows and the audit chain (intact, then tampered)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from models.risk import Limit, LimitType, step
from services import cli
from services.alert_documents import event_document
from services.alert_feed import AlertFeed
from services.alert_records import StoredEvent, read_alerts
from services.alert_store import AlertContext, acknowledge, apply_transitions
from services.errors import ConflictError, InvalidArgumentError, NotFoundError
from services.evaluation import run_evaluation
from services.limits_store import current_limits, sync_limits
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
LEVERAGE = Limit(
    "acct-leverage", LimitType.LEVERAGE, per_account=True, warn=Decimal(3), critical=Decimal(5), clear=Decimal("2.5")
)
CHANNELS = ("slack", "pager")


class Desk:
    """One account, long 1 BTC-USD perpetual at 10000: leverage = 10000 / USD balance."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.venues = Venues.on(engine)
        self.venues.venue("ex")
        self.venues.venue("md", "market_data")
        self.at = T0
        self.venues.prices("md", {"BTC-USD": "10000"}, T0)
        self.venues.positions("ex", "acct", {"BTC-USD-SWAP": ("1", "10000")}, T0, collected=T0)
        with engine.begin() as conn:
            sync_limits(conn, [LEVERAGE], now=T0 - timedelta(days=1), changed_by="test")
            self.limits = current_limits(conn)
        self.published: list[StoredEvent] = []

    def evaluate_with_balance(self, usd: str) -> list[StoredEvent]:
        self.at += timedelta(seconds=10)
        self.venues.balances("ex", "acct", {"USD": usd}, self.at, collected=self.at)
        result = run_evaluation(
            self.engine,
            self.limits,
            self.at + timedelta(seconds=1),
            channels=CHANNELS,
            publish=self.published.extend,
        )
        return result.events


def _types(events: Sequence[StoredEvent]) -> list[tuple[str, str, str]]:
    return [(e.event_type.value, e.alert.severity.value, e.alert.state.value) for e in events]


def test_alert_lifecycle_compliance_outbox_and_audit_chain(
    fresh_engine: Engine, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = Desk(fresh_engine)

    opened = desk.evaluate_with_balance("2500")  # leverage 4: warning
    assert _types(opened) == [("opened", "warning", "open")]
    alert_id = opened[0].alert.id

    escalated = desk.evaluate_with_balance("1600")  # 6.25: critical, same alert
    assert _types(escalated) == [("escalated", "critical", "open")]
    assert escalated[0].alert.id == alert_id
    assert escalated[0].alert.observed_value == Decimal("6.25")
    assert escalated[0].alert.threshold == Decimal(5)

    deescalated = desk.evaluate_with_balance("2000")  # 5: at critical, not above -> back to warning
    assert _types(deescalated) == [("deescalated", "warning", "open")]
    assert (deescalated[0].alert.id, deescalated[0].alert.threshold) == (alert_id, Decimal(3))

    ack = acknowledge(fresh_engine, alert_id, actor="alice", comment="hedging now", now=desk.at, channels=CHANNELS)
    assert ack.event is not None
    assert ack.alert.state.value == "acknowledged"
    assert ack.alert.acknowledged_by == "alice"
    repeat = acknowledge(fresh_engine, alert_id, actor="alice", comment="again", now=desk.at)
    assert repeat.event is None  # idempotent: no second event
    assert repeat.alert.ack_comment == "hedging now"

    assert desk.evaluate_with_balance("3600") == []  # 2.78: below warn, above clear 2.5 -> stays
    with fresh_engine.connect() as conn:
        [still] = read_alerts(conn, ids=[alert_id])
    assert (still.state.value, still.severity.value) == ("acknowledged", "warning")

    resolved = desk.evaluate_with_balance("5000")  # 2: below clear -> resolved
    assert _types(resolved) == [("resolved", "warning", "resolved")]
    with pytest.raises(ConflictError):
        acknowledge(fresh_engine, alert_id, actor="bob", comment="late", now=desk.at)

    reopened = desk.evaluate_with_balance("2500")  # breaches again: a NEW alert
    assert _types(reopened) == [("opened", "warning", "open")]
    assert reopened[0].alert.id != alert_id

    with fresh_engine.connect() as conn:
        history = conn.execute(
            text("SELECT previous_status, status FROM compliance_history ORDER BY changed_at, id")
        ).all()
        events = conn.execute(text("SELECT id, event_type, actor FROM alert_events ORDER BY id")).all()
        outbox = conn.execute(
            text("SELECT event_id, channel, idempotency_key, payload FROM notification_outbox ORDER BY id")
        ).all()
    assert [tuple(h) for h in history] == [
        (None, "warning"),
        ("warning", "breach"),
        ("breach", "warning"),
        ("warning", "compliant"),
        ("compliant", "warning"),
    ]
    types = ["opened", "escalated", "deescalated", "acknowledged", "resolved", "opened"]
    assert [e.event_type for e in events] == types
    assert events[3].actor == "alice"
    # one outbox row per event per channel, keyed for idempotent delivery, carrying the event document
    assert [(o.event_id, o.channel) for o in outbox] == [(e.id, c) for e in events for c in CHANNELS]
    assert all(o.idempotency_key == f"{o.channel}:{o.event_id}" for o in outbox)
    assert outbox[0].payload == event_document(opened[0])
    assert outbox[0].payload["alert"]["observed_value"] == "4"
    assert outbox[0].payload["alert"]["threshold"] == "3"
    assert outbox[0].payload["alert"]["account"] == "ex:acct"
    # events were published after commit, in id order (the acknowledgement went through the use case only)
    assert [e.id for e in desk.published] == [events[i].id for i in (0, 1, 2, 4, 5)]

    monkeypatch.setenv("RISK_MONITOR_DATABASE_URL", fresh_database_url)
    assert cli.main(["audit", "verify"]) == 0
    assert "audit chain intact: 6 events" in capsys.readouterr().out

    tampered = events[1].id
    with fresh_engine.begin() as conn:  # the superuser goes behind the trigger's back
        conn.execute(text("ALTER TABLE alert_events DISABLE TRIGGER alert_events_append_only"))
        conn.execute(text("UPDATE alert_events SET observed_value = 4.5 WHERE id = :id"), {"id": tampered})
        conn.execute(text("ALTER TABLE alert_events ENABLE TRIGGER alert_events_append_only"))
    assert cli.main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert f"BROKEN at event {tampered}" in err
    assert "altered" in err


def test_a_deleted_event_breaks_the_chain_at_the_next_one(
    fresh_engine: Engine, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = Desk(fresh_engine)
    desk.evaluate_with_balance("2500")
    desk.evaluate_with_balance("1600")
    desk.evaluate_with_balance("5000")
    with fresh_engine.begin() as conn:
        ids = list(conn.scalars(text("SELECT id FROM alert_events ORDER BY id")))
        conn.execute(text("ALTER TABLE alert_events DISABLE TRIGGER alert_events_append_only"))
        conn.execute(text("DELETE FROM notification_outbox WHERE event_id = :id"), {"id": ids[1]})
        conn.execute(text("DELETE FROM alert_events WHERE id = :id"), {"id": ids[1]})
        conn.execute(text("ALTER TABLE alert_events ENABLE TRIGGER alert_events_append_only"))
    monkeypatch.setenv("RISK_MONITOR_DATABASE_URL", fresh_database_url)
    assert cli.main(["audit", "verify"]) == 1
    assert f"BROKEN at event {ids[2]}: prev_hash" in capsys.readouterr().err


def test_acknowledge_rejects_unknown_alerts_and_missing_actor_or_comment(fresh_engine: Engine) -> None:
    desk = Desk(fresh_engine)
    [event] = desk.evaluate_with_balance("2500")
    with pytest.raises(NotFoundError):
        acknowledge(fresh_engine, event.alert.id + 1000, actor="alice", comment="x", now=desk.at)
    with pytest.raises(InvalidArgumentError):
        acknowledge(fresh_engine, event.alert.id, actor="alice", comment="  ", now=desk.at)
    with pytest.raises(InvalidArgumentError):
        acknowledge(fresh_engine, event.alert.id, actor="", comment="ok", now=desk.at)


def test_a_stale_open_transition_is_applied_to_the_alert_inserted_concurrently(fresh_engine: Engine) -> None:
    """The tick path computed "open" before the scheduled pass committed its alert for the same fingerprint:
    instead of a unique violation, the transition is redone against the existing alert."""
    desk = Desk(fresh_engine)
    [first] = desk.evaluate_with_balance("2500")  # warning alert exists
    result = run_evaluation(fresh_engine, desk.limits, desk.at + timedelta(seconds=2))
    assert result.events == []
    # a critical check for the same fingerprint, computed as if no alert existed yet
    with fresh_engine.connect() as conn:
        [limit] = current_limits(conn)
    from models.risk import Check, Level, Subject

    check = Check(limit, Subject("ex:acct", "ex:acct"), Decimal(7), Level.CRITICAL)
    assert check.fingerprint == first.alert.fingerprint
    stale = step(None, check, desk.at + timedelta(seconds=3))
    context = {check.fingerprint: AlertContext(check, first.alert.account_id, "ex:acct", desk.at)}
    with fresh_engine.begin() as conn:
        events = apply_transitions(conn, stale, desk.at + timedelta(seconds=3), "tick", context)
    assert _types(events) == [("escalated", "critical", "open")]
    assert events[0].alert.id == first.alert.id
    with fresh_engine.connect() as conn:
        active = conn.scalar(text("SELECT count(*) FROM alerts WHERE state <> 'resolved'"))
    assert active == 1


def test_feed_subscribers_get_events_and_a_full_queue_is_flagged_not_blocking() -> None:
    feed = AlertFeed(max_queue=1)
    fast, slow = feed.subscribe(), feed.subscribe()
    events = [object(), object()]
    feed.publish(events)  # type: ignore[arg-type]
    assert fast.get(timeout=0) is events[0]
    assert slow.overflowed
    fast.close()
    feed.close_all()
    assert slow.get(timeout=0) is events[0]
