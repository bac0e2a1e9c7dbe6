"""Protobuf <-> domain conversions for riskmonitor.v1: decimals as strings, times as Timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from google.protobuf.timestamp_pb2 import Timestamp
from riskmonitor.v1 import risk_monitor_pb2 as pb

from services.alert_queries import AlertEventView, AlertView, ComplianceView
from services.errors import InvalidArgumentError

SEVERITY_TO_PB = {"warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
SEVERITY_FROM_PB = {v: k for k, v in SEVERITY_TO_PB.items()}
STATE_TO_PB = {
    "open": pb.ALERT_STATE_OPEN,
    "acknowledged": pb.ALERT_STATE_ACKNOWLEDGED,
    "resolved": pb.ALERT_STATE_RESOLVED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
LEVEL_TO_PB = {"ok": pb.LEVEL_OK, "warn": pb.LEVEL_WARN, "critical": pb.LEVEL_CRITICAL}
COMPLIANCE_TO_PB = {
    "compliant": pb.COMPLIANCE_STATE_COMPLIANT,
    "warning": pb.COMPLIANCE_STATE_WARNING,
    "breach": pb.COMPLIANCE_STATE_BREACH,
}


MAX_INTEGER_DIGITS = 20


def dec(value: Decimal | None) -> str:
    """Plain decimal text without exponent or NUMERIC(38, 18) padding: "1000", "0.25", "Infinity"."""
    if value is None:
        return ""
    if not value.is_finite():
        return "Infinity" if value > 0 else ("-Infinity" if value.is_infinite() else "NaN")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


def optional_decimal(text: str, field: str, *, positive: bool = False) -> Decimal | None:
    return parse_decimal(text, field, positive=positive) if text else None


def parse_decimal(text: str, field: str, *, positive: bool = False) -> Decimal:
    """A required decimal field; InvalidArgumentError naming the field otherwise."""
    if not text:
        raise InvalidArgumentError(f"{field} is required")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgumentError(f"{field} is not a decimal number: {text[:40]!r}") from None
    if not value.is_finite():
        raise InvalidArgumentError(f"{field} must be finite")
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        # Amounts are NUMERIC(38, 18) in the database; larger values would overflow the risk context later.
        raise InvalidArgumentError(f"{field} is out of range (at most {MAX_INTEGER_DIGITS} integer digits)")
    if positive and value <= 0:
        raise InvalidArgumentError(f"{field} must be > 0")
    return value


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def from_ts(message: object, value: Timestamp, field: str) -> datetime | None:
    """The datetime of an optional Timestamp field (None when unset)."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return value.ToDatetime(tzinfo=UTC)


def alert_to_pb(a: AlertView) -> pb.Alert:
    return pb.Alert(
        id=a.id,
        fingerprint=a.fingerprint,
        limit_name=a.limit_name,
        limit_type=a.limit_type,
        limit_version=a.limit_version,
        account=a.account or "",
        subject=a.subject,
        symbol=a.symbol or "",
        severity=SEVERITY_TO_PB.get(a.severity, pb.SEVERITY_UNSPECIFIED),
        state=STATE_TO_PB.get(a.state, pb.ALERT_STATE_UNSPECIFIED),
        observed_value=dec(a.observed_value),
        threshold=dec(a.threshold),
        data_time=ts(a.data_time),
        detection_latency_seconds=a.detection_latency_s,
        opened_at=ts(a.opened_at),
        updated_at=ts(a.updated_at),
        acknowledged_at=ts(a.acknowledged_at),
        acknowledged_by=a.acknowledged_by or "",
        ack_comment=a.ack_comment or "",
        resolved_at=ts(a.resolved_at),
    )


def event_to_pb(e: AlertEventView) -> pb.AlertEvent:
    return pb.AlertEvent(
        id=e.id,
        alert_id=e.alert_id,
        event_type=e.event_type,
        occurred_at=ts(e.occurred_at),
        actor=e.actor,
        severity=SEVERITY_TO_PB.get(e.severity, pb.SEVERITY_UNSPECIFIED),
        state=STATE_TO_PB.get(e.state, pb.ALERT_STATE_UNSPECIFIED),
        observed_value=dec(e.observed_value),
        threshold=dec(e.threshold),
        details_json=json.dumps(e.details, sort_keys=True, default=str),
        prev_hash=e.prev_hash,
        hash=e.hash,
        fingerprint=e.fingerprint,
        limit_name=e.limit_name,
        account=e.account or "",
    )


def compliance_to_pb(c: ComplianceView) -> pb.ComplianceStatus:
    return pb.ComplianceStatus(
        account=c.account,
        state=COMPLIANCE_TO_PB.get(c.status, pb.COMPLIANCE_STATE_UNSPECIFIED),
        changed_at=ts(c.changed_at),
        updated_at=ts(c.updated_at),
    )
