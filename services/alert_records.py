"""Alerts and alert events as stored: frozen values read from (and written to) ``alerts``/``alert_events``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from models.risk import Alert, AlertEvent, AlertState, Severity
from services.raw_rows import fetch_all


def scope_of(subject: str) -> str:
    """The scope key from a stored subject key ("scope=binance:a1;account=..." -> "binance:a1")."""
    first = subject.split(";", 1)[0]
    return first.partition("=")[2] if first.startswith("scope=") else first


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One ``alerts`` row, with the account key ("venue:external_id") joined in."""

    id: int
    fingerprint: str
    limit_name: str
    limit_type: str
    limit_version: int
    account_id: int | None
    account: str | None
    subject: str
    symbol: str | None
    severity: Severity
    state: AlertState
    observed_value: Decimal
    threshold: Decimal
    data_time: datetime
    detection_latency_s: float
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_comment: str | None = None
    resolved_at: datetime | None = None

    def to_domain(self) -> Alert:
        return Alert(
            fingerprint=self.fingerprint,
            limit_name=self.limit_name,
            scope_key=scope_of(self.subject),
            state=self.state,
            severity=self.severity,
            value=self.observed_value,
            opened_at=self.opened_at,
            updated_at=self.updated_at,
            acknowledged_by=self.acknowledged_by,
            ack_comment=self.ack_comment,
            resolved_at=self.resolved_at,
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An appended ``alert_events`` row and the alert as it was right after the event."""

    id: int
    event_type: AlertEvent
    occurred_at: datetime
    actor: str
    alert: AlertRecord
    details: dict[str, Any]
    prev_hash: str
    hash: str


_SELECT = (
    "SELECT a.id, a.fingerprint, a.limit_name, a.limit_type, a.limit_version, a.account_id,"
    " ac.venue_id || ':' || ac.external_id AS account, a.subject, a.symbol, a.severity, a.state,"
    " a.observed_value, a.threshold, a.data_time, a.detection_latency_s, a.opened_at, a.updated_at,"
    " a.acknowledged_at, a.acknowledged_by, a.ack_comment, a.resolved_at"
    " FROM alerts a LEFT JOIN accounts ac ON ac.id = a.account_id"
)


def _record(row: Any) -> AlertRecord:
    m = row._mapping
    return AlertRecord(**{**m, "severity": Severity(m["severity"]), "state": AlertState(m["state"])})


def read_alerts(
    conn: Connection,
    *,
    ids: Sequence[int] | None = None,
    fingerprints: Sequence[str] | None = None,
    active_only: bool = False,
    lock: bool = False,
) -> list[AlertRecord]:
    """Alerts by id and/or fingerprint (all when neither is given), oldest first; ``lock`` = FOR UPDATE."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if ids is not None:
        where.append("a.id = ANY(:ids)")
        params["ids"] = list(ids)
    if fingerprints is not None:
        where.append("a.fingerprint = ANY(:fps)")
        params["fps"] = list(fingerprints)
    if active_only:
        where.append("a.state <> 'resolved'")
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.id"
    if lock:
        sql += " FOR UPDATE OF a"
    return [_record(row) for row in conn.execute(text(sql), params)]


_ACTIVE_SQL = (
    "SELECT fingerprint, limit_name, subject, state, severity, observed_value, opened_at, updated_at,"
    " acknowledged_by, ack_comment, resolved_at FROM alerts WHERE state <> 'resolved'"
)


def active_alerts(conn: Connection) -> dict[str, Alert]:
    """Every active alert as a domain value, by fingerprint: what a full evaluation steps its checks against.
    Reads only the state machine's columns, as plain tuples (it runs every second over every open alert)."""
    states = {s.value: s for s in AlertState}
    severities = {s.value: s for s in Severity}
    return {
        fp: Alert(fp, name, scope_of(subject), states[state], severities[sev], value, opened, updated, by, note, res)
        for fp, name, subject, state, sev, value, opened, updated, by, note, res in fetch_all(conn, _ACTIVE_SQL)
    }


_ACTIVE_TYPED_SQL = _ACTIVE_SQL.replace("SELECT fingerprint,", "SELECT limit_type, fingerprint,")


def active_alerts_with_types(conn: Connection) -> dict[str, tuple[Alert, str]]:
    """`active_alerts` with each alert's limit type (the open-alert gauges count by it)."""
    states = {s.value: s for s in AlertState}
    severities = {s.value: s for s in Severity}
    return {
        fp: (
            Alert(fp, name, scope_of(subject), states[state], severities[sev], value, opened, updated, by, note, res),
            limit_type,
        )
        for limit_type, fp, name, subject, state, sev, value, opened, updated, by, note, res in fetch_all(
            conn, _ACTIVE_TYPED_SQL
        )
    }
