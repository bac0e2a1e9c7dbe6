"""The notification outbox in PostgreSQL: claim due rows, record attempts, report the backlog.

Claiming is a lease: due rows are locked with ``FOR UPDATE SKIP LOCKED`` (replicas never wait on each
other), their ``next_attempt_at`` is pushed ``lease_s`` ahead, and the transaction commits before any
HTTP call, so no row lock or idle transaction is held while a receiver is slow. A process that dies
mid-delivery leaves the row to be claimed again when the lease runs out: at least once, never lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

# Rows are delivered in order per (channel, alert): a row waits while an earlier row of the same alert
# on the same channel is undelivered, so a receiver never sees "resolved" before "opened".
_CLAIM = text(
    """
    WITH due AS (
        SELECT o.id
        FROM notification_outbox o
        JOIN alert_events e ON e.id = o.event_id
        WHERE o.delivered_at IS NULL
          AND o.channel = :channel
          AND o.next_attempt_at <= now()
          AND NOT EXISTS (
              SELECT 1
              FROM notification_outbox p
              JOIN alert_events pe ON pe.id = p.event_id
              WHERE p.channel = o.channel
                AND p.delivered_at IS NULL
                AND p.id < o.id
                AND pe.alert_id = e.alert_id
          )
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED
    )
    UPDATE notification_outbox AS t
    SET next_attempt_at = now() + make_interval(secs => :lease_s)
    FROM due
    WHERE t.id = due.id
    RETURNING t.id, t.event_id, t.channel, t.idempotency_key, t.payload, t.attempts, t.created_at
    """
)

_RECORD_ATTEMPT = text(
    """
    INSERT INTO notification_attempts (outbox_id, attempted_at, ok, status_code, error)
    VALUES (:id, now(), :ok, :status_code, :error)
    """
)

# Marks the row delivered and writes its permanent record in one statement: the outbox row is purged
# after retention.delivered_notifications_days, notification_deliveries is kept (auditors).
_MARK_DELIVERED = text(
    """
    WITH marked AS (
        UPDATE notification_outbox
        SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
        WHERE id = :id AND delivered_at IS NULL
        RETURNING id, event_id, channel, idempotency_key, payload, created_at, delivered_at, attempts
    )
    INSERT INTO notification_deliveries
        (outbox_id, event_id, channel, idempotency_key, payload, created_at, delivered_at, attempts, status_code)
    SELECT id, event_id, channel, idempotency_key, payload, created_at, delivered_at, attempts, :status_code
    FROM marked
    RETURNING extract(epoch FROM delivered_at - created_at)
    """
)

_SCHEDULE_RETRY = text(
    """
    UPDATE notification_outbox
    SET attempts = attempts + 1, last_error = :error, next_attempt_at = now() + make_interval(secs => :delay_s)
    WHERE id = :id AND delivered_at IS NULL
    """
)

_RELEASE = text(
    """
    UPDATE notification_outbox SET next_attempt_at = now() + make_interval(secs => :delay_s)
    WHERE id = ANY(:ids) AND delivered_at IS NULL
    """
)

_BACKLOG = text(
    """
    SELECT channel, count(*), extract(epoch FROM now() - min(created_at))
    FROM notification_outbox
    WHERE delivered_at IS NULL
    GROUP BY channel
    """
)

_ACTIVE_ALERTS = text(
    """
    SELECT a.id, a.fingerprint, a.limit_name, a.limit_type, a.limit_version,
           CASE WHEN c.id IS NULL THEN NULL ELSE c.venue_id || ':' || c.external_id END AS account,
           a.subject, a.symbol, a.severity, a.state, a.observed_value, a.threshold, a.data_time,
           a.opened_at, a.acknowledged_at, a.resolved_at, a.detection_latency_s
    FROM alerts a
    LEFT JOIN accounts c ON c.id = a.account_id
    WHERE a.state <> 'resolved'
    ORDER BY a.id
    """
)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    event_id: int
    channel: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int  # failed attempts before this claim
    created_at: datetime


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_s: float


def claim(session: Session, channel: str, *, limit: int, lease_s: float) -> list[OutboxItem]:
    rows = session.execute(_CLAIM, {"channel": channel, "limit": limit, "lease_s": lease_s}).all()
    return sorted((OutboxItem(*row) for row in rows), key=lambda item: item.id)


def record_delivered(session: Session, item: OutboxItem, *, status_code: int | None) -> float | None:
    """Returns seconds from the row's creation to its delivery (None if it was already delivered)."""
    session.execute(_RECORD_ATTEMPT, {"id": item.id, "ok": True, "status_code": status_code, "error": None})
    latency = session.execute(_MARK_DELIVERED, {"id": item.id, "status_code": status_code}).scalar_one_or_none()
    return None if latency is None else float(latency)


def record_failed(
    session: Session, item: OutboxItem, *, status_code: int | None, error: str, retry_in_s: float
) -> None:
    session.execute(_RECORD_ATTEMPT, {"id": item.id, "ok": False, "status_code": status_code, "error": error})
    session.execute(_SCHEDULE_RETRY, {"id": item.id, "error": error, "delay_s": retry_in_s})


def release(session: Session, ids: Sequence[int], *, retry_in_s: float) -> None:
    """Give claimed rows back without an attempt (their channel just failed on an earlier row)."""
    if ids:
        session.execute(_RELEASE, {"ids": list(ids), "delay_s": retry_in_s})


def backlog(session: Session, channels: Iterable[str] = ()) -> dict[str, Backlog]:
    """Pending rows per channel; every named channel is present (zero when it has nothing pending)."""
    out = {name: Backlog(0, 0.0) for name in channels}
    for channel, pending, age in session.execute(_BACKLOG):
        out[channel] = Backlog(int(pending), max(float(age), 0.0))
    return out


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def active_alert_documents(session: Session) -> list[dict[str, Any]]:
    """Every alert not resolved, as the ``alert`` part of an event document (for the re-send job)."""
    out = []
    for row in session.execute(_ACTIVE_ALERTS).mappings():
        alert: dict[str, Any] = {key: _text(value) for key, value in row.items()}
        alert["id"] = row["id"]
        alert["limit_version"] = row["limit_version"]
        alert["detection_latency_s"] = row["detection_latency_s"]
        out.append(alert)
    return out
