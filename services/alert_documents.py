"""The alert event document: the outbox payload, and what gRPC/notification channels can reuse.

Shape (docs/schema.md, "Outbox contract"): {"event_id", "event_type", "occurred_at", "actor",
"alert": {"id", "fingerprint", "limit_name", "limit_type", "limit_version", "account", "subject", "symbol",
"severity", "state", "observed_value", "threshold", "data_time", "opened_at", "acknowledged_at",
"resolved_at", "detection_latency_s"}}. Values are strings (Decimals normalized, times ISO 8601 UTC),
except ids, the limit version and the latency (numbers) and absent values (null).
"""

from __future__ import annotations

from typing import Any

from services.alert_records import AlertRecord, StoredEvent
from services.audit_chain import decimal_text, time_text


def alert_document(alert: AlertRecord) -> dict[str, Any]:
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "limit_name": alert.limit_name,
        "limit_type": alert.limit_type,
        "limit_version": alert.limit_version,
        "account": alert.account,
        "subject": alert.subject,
        "symbol": alert.symbol,
        "severity": alert.severity.value,
        "state": alert.state.value,
        "observed_value": decimal_text(alert.observed_value),
        "threshold": decimal_text(alert.threshold),
        "data_time": time_text(alert.data_time),
        "opened_at": time_text(alert.opened_at),
        "acknowledged_at": time_text(alert.acknowledged_at),
        "resolved_at": time_text(alert.resolved_at),
        "detection_latency_s": alert.detection_latency_s,
    }


def event_document(event: StoredEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "event_type": event.event_type.value,
        "occurred_at": time_text(event.occurred_at),
        "actor": event.actor,
        "alert": alert_document(event.alert),
    }
