"""The alert state machine: checks in, transitions out. Pure; the caller stores alerts and sends notices."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from models.risk.evaluation import Check, Evaluation
from models.risk.limits import Level


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertEvent(StrEnum):
    OPENED = "opened"
    ESCALATED = "escalated"
    DEESCALATED = "deescalated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertError(ValueError):
    """A transition that is not allowed (acknowledging a resolved alert, a check for another alert)."""


_SEVERITY = {Level.WARN: Severity.WARNING, Level.CRITICAL: Severity.CRITICAL}


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str  # limit name + subject key (Check.fingerprint): at most one active alert per value
    limit_name: str
    scope_key: str
    state: AlertState
    severity: Severity
    value: Decimal  # the value of the last check that opened or changed it
    opened_at: datetime
    updated_at: datetime
    acknowledged_by: str | None = None
    ack_comment: str | None = None
    resolved_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state is not AlertState.RESOLVED


@dataclass(frozen=True, slots=True)
class Transition:
    event: AlertEvent
    alert: Alert  # the alert after the event; a new alert for OPENED
    previous: Alert | None


def step(previous: Alert | None, check: Check, now: datetime) -> tuple[Transition, ...]:
    """The transitions one check causes for its fingerprint's latest alert (empty: no-op).

    Resolution needs the value below the clear threshold (hysteresis); a value at level ok but at or
    above clear keeps the alert as it is. A resolved alert that breaches again opens a *new* alert.
    """
    if previous is not None and previous.fingerprint != check.fingerprint:
        raise AlertError(f"check {check.fingerprint!r} does not belong to alert {previous.fingerprint!r}")
    active = previous is not None and previous.active
    if check.level is Level.OK:
        if previous is not None and active and check.value < check.clear:
            resolved = replace(previous, state=AlertState.RESOLVED, value=check.value, updated_at=now, resolved_at=now)
            return (Transition(AlertEvent.RESOLVED, resolved, previous),)
        return ()
    severity = _SEVERITY[check.level]
    if previous is None or not active:
        opened = Alert(
            fingerprint=check.fingerprint,
            limit_name=check.limit.name,
            scope_key=check.subject.scope_key,
            state=AlertState.OPEN,
            severity=severity,
            value=check.value,
            opened_at=now,
            updated_at=now,
        )
        return (Transition(AlertEvent.OPENED, opened, previous),)
    if severity is previous.severity:
        return ()
    event = AlertEvent.ESCALATED if severity is Severity.CRITICAL else AlertEvent.DEESCALATED
    changed = replace(previous, severity=severity, value=check.value, updated_at=now)
    return (Transition(event, changed, previous),)


def acknowledge(alert: Alert, *, actor: str, comment: str, now: datetime) -> Transition | None:
    """Open → acknowledged. Acknowledging twice is a no-op (None); a resolved alert can't be acknowledged."""
    if not actor.strip() or not comment.strip():
        raise AlertError("acknowledging an alert needs an actor and a comment")
    if alert.state is AlertState.RESOLVED:
        raise AlertError(f"alert {alert.fingerprint!r} is resolved and can't be acknowledged")
    if alert.state is AlertState.ACKNOWLEDGED:
        return None
    acked = replace(alert, state=AlertState.ACKNOWLEDGED, acknowledged_by=actor, ack_comment=comment, updated_at=now)
    return Transition(AlertEvent.ACKNOWLEDGED, acked, alert)


def resolve_absent(alerts: Iterable[Alert], evaluation: Evaluation, now: datetime) -> list[Transition]:
    """Resolve active alerts the evaluation covered but emitted no check for: their value is below clear.

    Alerts of limits not evaluated (disabled, removed) or of scopes not covered (an account missing from
    the book, an account outside an incremental evaluation) are left alone.
    """
    emitted = {check.fingerprint for check in evaluation.checks}
    transitions = []
    for alert in alerts:
        if (
            alert.active
            and alert.limit_name in evaluation.limits
            and alert.scope_key in evaluation.covered
            and alert.fingerprint not in emitted
        ):
            resolved = replace(alert, state=AlertState.RESOLVED, updated_at=now, resolved_at=now)
            transitions.append(Transition(AlertEvent.RESOLVED, resolved, alert))
    return transitions
