"""Writes alerts, alert events and outbox rows with plain SQL, the way the evaluation side does (one
transaction per event, one outbox row per event and channel)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text


@dataclass
class TestAlert:
    id: int
    account: str
    fingerprint: str
    limit_type: str
    severity: str = "warning"
    state: str = "open"


def insert_alert(engine: Engine, *, limit_type: str = "gross_notional", severity: str = "warning") -> TestAlert:
    tag = uuid.uuid4().hex[:10]
    venue, external = f"venue-{tag}", f"acct-{tag}"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO venues (id, kind) VALUES (:v, 'exchange')"), {"v": venue})
        account_id = conn.execute(
            text("INSERT INTO accounts (venue_id, external_id) VALUES (:v, :e) RETURNING id"),
            {"v": venue, "e": external},
        ).scalar_one()
        alert_id = conn.execute(
            text(
                """
                INSERT INTO alerts (fingerprint, limit_name, limit_type, limit_version, account_id, subject, symbol,
                    severity, state, observed_value, threshold, data_time, detection_latency_s, opened_at,
                    updated_at)
                VALUES (:fp, :name, :type, 1, :account, 'BTC', 'BTC-USDT', :severity, 'open', 1200.5, 1000,
                    now(), 0.25, now(), now())
                RETURNING id
                """
            ),
            {
                "fp": f"fp-{tag}",
                "name": f"{limit_type}-{tag}",
                "type": limit_type,
                "account": account_id,
                "severity": severity,
            },
        ).scalar_one()
    return TestAlert(alert_id, f"{venue}:{external}", f"fp-{tag}", limit_type, severity)


def event_document(alert: TestAlert, event_id: int, event_type: str, occurred_at: datetime) -> dict[str, Any]:
    resolved = alert.state == "resolved"
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "actor": "evaluation",
        "alert": {
            "id": alert.id,
            "fingerprint": alert.fingerprint,
            "limit_name": f"{alert.limit_type}-{alert.fingerprint[3:]}",
            "limit_type": alert.limit_type,
            "limit_version": 1,
            "account": alert.account,
            "subject": "BTC",
            "symbol": "BTC-USDT",
            "severity": alert.severity,
            "state": alert.state,
            "observed_value": "1200.5",
            "threshold": "1000",
            "data_time": occurred_at.isoformat(),
            "opened_at": occurred_at.isoformat(),
            "acknowledged_at": None,
            "resolved_at": occurred_at.isoformat() if resolved else None,
            "detection_latency_s": 0.25,
        },
    }


def add_event(engine: Engine, alert: TestAlert, event_type: str, channels: list[str]) -> int:
    """Append an alert event and its outbox rows in one transaction; returns the event id."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if alert.state == "resolved":
            conn.execute(
                text("UPDATE alerts SET state = 'resolved', resolved_at = now(), updated_at = now() WHERE id = :id"),
                {"id": alert.id},
            )
        else:
            conn.execute(text("UPDATE alerts SET severity = :s WHERE id = :id"), {"s": alert.severity, "id": alert.id})
        digest = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        event_id = conn.execute(
            text(
                """
                INSERT INTO alert_events (alert_id, event_type, occurred_at, actor, severity, state, prev_hash, hash)
                VALUES (:a, :t, :at, 'evaluation', :s, :st, :prev, :hash) RETURNING id
                """
            ),
            {
                "a": alert.id,
                "t": event_type,
                "at": now,
                "s": alert.severity,
                "st": alert.state,
                "prev": "0" * 64,
                "hash": digest,
            },
        ).scalar_one()
        for channel in channels:
            conn.execute(
                text(
                    "INSERT INTO notification_outbox (event_id, channel, idempotency_key, payload) "
                    "VALUES (:e, :c, :k, CAST(:p AS jsonb))"
                ),
                {
                    "e": event_id,
                    "c": channel,
                    "k": f"{channel}:{event_id}",
                    "p": json.dumps(event_document(alert, event_id, event_type, now)),
                },
            )
    return int(event_id)


def attempts(engine: Engine, idempotency_key: str) -> list[tuple[bool, int | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.ok, a.status_code, a.error FROM notification_attempts a "
                "JOIN notification_outbox o ON o.id = a.outbox_id WHERE o.idempotency_key = :k ORDER BY a.id"
            ),
            {"k": idempotency_key},
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def outbox_row(engine: Engine, idempotency_key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT attempts, delivered_at, last_error FROM notification_outbox WHERE idempotency_key = :k"),
                {"k": idempotency_key},
            )
            .mappings()
            .one()
        )
    return dict(row)
