"""The alert state machine: open, escalate, hysteresis, acknowledge, re-open; plus property tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.risk import (
    Alert,
    AlertError,
    AlertEvent,
    AlertState,
    Check,
    Severity,
    Subject,
    acknowledge,
    build_book,
    evaluate,
    resolve_absent,
    step,
)
from tests.factories import NOW, limit, position, price

LIMIT = limit("gross", warn="100", critical="200", clear="80")
SUBJECT = Subject("firm")


def check(value: str | int) -> Check:
    v = Decimal(value)
    return Check(LIMIT, SUBJECT, v, LIMIT.level(v))


def run(values: list[int]) -> list[tuple[AlertEvent, Alert]]:
    """Feed checks in order, keeping the latest alert per fingerprint like the caller's store would."""
    latest: Alert | None = None
    events = []
    for value in values:
        for t in step(latest, check(value), NOW):
            latest = t.alert
            events.append((t.event, t.alert))
    return events


def test_a_warn_opens_a_warning_and_critical_escalates_in_place() -> None:
    events = run([150, 250, 150])
    assert [(e, a.severity) for e, a in events] == [
        (AlertEvent.OPENED, Severity.WARNING),
        (AlertEvent.ESCALATED, Severity.CRITICAL),
        (AlertEvent.DEESCALATED, Severity.WARNING),
    ]
    assert len({a.opened_at for _, a in events}) == 1


def test_an_alert_resolves_only_below_the_clear_threshold() -> None:
    assert [e for e, _ in run([150, 90, 80])] == [AlertEvent.OPENED]  # 80 is not below clear 80
    assert [e for e, _ in run([150, 79])] == [AlertEvent.OPENED, AlertEvent.RESOLVED]


def test_a_resolved_alert_that_breaches_again_opens_a_new_alert() -> None:
    events = run([150, 10, 150])
    assert [e for e, _ in events] == [AlertEvent.OPENED, AlertEvent.RESOLVED, AlertEvent.OPENED]
    assert events[2][1].state is AlertState.OPEN


def test_acknowledge_is_idempotent_and_keeps_state_through_escalation() -> None:
    [(_, alert)] = run([150])
    acked = acknowledge(alert, actor="ana", comment="hedging", now=NOW)
    assert acked is not None
    assert acked.alert.state is AlertState.ACKNOWLEDGED
    assert acknowledge(acked.alert, actor="ana", comment="again", now=NOW) is None
    [escalated] = step(acked.alert, check(250), NOW)
    assert (escalated.alert.state, escalated.alert.severity) == (AlertState.ACKNOWLEDGED, Severity.CRITICAL)


def test_acknowledging_needs_an_actor_and_comment_and_never_a_resolved_alert() -> None:
    [(_, alert), (_, resolved)] = run([150, 0])
    with pytest.raises(AlertError, match="actor and a comment"):
        acknowledge(alert, actor="ana", comment=" ", now=NOW)
    with pytest.raises(AlertError, match="resolved"):
        acknowledge(resolved, actor="ana", comment="late", now=NOW)


def test_a_check_for_another_fingerprint_is_refused() -> None:
    [(_, alert)] = run([150])
    other = Check(LIMIT, Subject("group:x"), Decimal(150), LIMIT.level(Decimal(150)))
    with pytest.raises(AlertError):
        step(alert, other, NOW)


def test_alerts_without_a_check_in_a_covered_scope_resolve() -> None:
    book = build_book(positions=[position("1", None, symbol="BTC-USD")], prices=[price("BTC-USD", "50")])
    lim = limit("gross", warn="100")
    [opened] = step(None, Check(lim, Subject("firm"), Decimal(150), lim.level(Decimal(150))), NOW)
    result = evaluate(book, [lim], NOW)  # gross 50: below clear, no check emitted
    [resolved] = resolve_absent([opened.alert], result, NOW)
    assert resolved.alert.state is AlertState.RESOLVED
    assert resolve_absent([opened.alert], evaluate(book, [], NOW), NOW) == []  # limit not evaluated


values = st.lists(st.integers(min_value=0, max_value=300), max_size=40)


@given(values)
def test_never_more_than_one_active_alert_per_fingerprint(seq: list[int]) -> None:
    active = 0
    for event, _ in run(seq):
        active += {AlertEvent.OPENED: 1, AlertEvent.RESOLVED: -1}.get(event, 0)
        assert active in (0, 1)


@given(values)
def test_never_resolved_while_the_value_is_at_or_above_clear(seq: list[int]) -> None:
    for event, alert in run(seq):
        if event is AlertEvent.RESOLVED:
            assert alert.value < LIMIT.clear_at


@given(values)
def test_severity_always_matches_the_last_breached_level(seq: list[int]) -> None:
    latest: Alert | None = None
    last_breach: Severity | None = None
    for value in seq:
        for t in step(latest, check(value), NOW):
            latest = t.alert
        if value > 100:
            last_breach = Severity.CRITICAL if value > 200 else Severity.WARNING
        if latest is not None and latest.active:
            assert latest.severity is last_breach
