"""What each channel receives, and the retry schedule: pure functions, checked with literals."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifications import documents
from services.notifications.dispatcher import retry_delay

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _doc(event_type: str = "opened", **alert: Any) -> dict[str, Any]:
    base = {
        "id": 7,
        "fingerprint": "abc123",
        "limit_name": "btc-gross",
        "limit_type": "gross_notional",
        "limit_version": 2,
        "account": "binance:main",
        "subject": "BTC",
        "symbol": None,
        "severity": "critical",
        "state": "open",
        "observed_value": "1500.25",
        "threshold": "1000",
        "data_time": "2026-11-22T11:59:59+00:00",
        "opened_at": "2026-11-22T11:59:59.5+00:00",
        "acknowledged_at": None,
        "resolved_at": None,
        "detection_latency_s": 0.5,
    }
    return {
        "event_id": 42,
        "event_type": event_type,
        "occurred_at": NOW.isoformat(),
        "actor": "evaluation",
        "alert": {**base, **alert},
    }


@pytest.mark.parametrize(
    ("limit_type", "event_type"),
    [
        ("drawdown", "drawdown_limit_breach"),
        ("daily_loss", "drawdown_limit_breach"),
        ("unsettled_exposure", "liquidity_risk_alert"),
        ("reconciliation", "liquidity_risk_alert"),
        ("concentration", "correlation_risk_alert"),
        ("gross_notional", "risk_alert_generated"),
        ("stale_data", "risk_alert_generated"),
    ],
)
def test_audit_event_types_follow_the_correlator_vocabulary(limit_type: str, event_type: str) -> None:
    assert documents.audit_event(_doc(limit_type=limit_type))["event_type"] == event_type


def test_audit_message_carries_the_details() -> None:
    message = documents.audit_event(_doc())["message"]
    for detail in ("alert 7 opened", "binance:main", "1500.25", "1000", "btc-gross", "critical", "event 42"):
        assert detail in message


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = documents.canonical_json(_doc())
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert documents.signature(body, "k") == f"sha256={expected}"
    assert documents.canonical_json(_doc()) == body  # stable bytes for the same document


def test_a_firing_alert_expires_after_the_validity_unless_reposted() -> None:
    [alert] = documents.alertmanager_alerts(_doc(), now=NOW, validity=timedelta(minutes=3))
    assert alert["endsAt"] == "2026-11-22T12:03:00Z"
    assert alert["startsAt"] == "2026-11-22T11:59:59.5+00:00"
    assert alert["labels"]["severity"] == "critical"
    assert "symbol" not in alert["labels"]  # no empty labels


def test_a_resolved_alert_ends_when_it_was_resolved() -> None:
    resolved_at = "2026-11-22T12:00:30+00:00"
    [alert] = documents.alertmanager_alerts(
        _doc("resolved", state="resolved", resolved_at=resolved_at), now=NOW, validity=timedelta(minutes=3)
    )
    assert alert["endsAt"] == resolved_at


@pytest.mark.parametrize(
    ("event_type", "severity", "twin"), [("escalated", "critical", "warning"), ("deescalated", "warning", "critical")]
)
def test_a_severity_change_resolves_the_twin(event_type: str, severity: str, twin: str) -> None:
    firing, ended = documents.alertmanager_alerts(
        _doc(event_type, severity=severity), now=NOW, validity=timedelta(minutes=3)
    )
    assert (firing["labels"]["severity"], ended["labels"]["severity"]) == (severity, twin)
    assert ended["endsAt"] == NOW.isoformat()
    assert {k: v for k, v in firing["labels"].items() if k != "severity"} == {
        k: v for k, v in ended["labels"].items() if k != "severity"
    }


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    assert retry_delay(1, base_s=1, max_s=300, jitter=0.0) == 0.5
    assert retry_delay(1, base_s=1, max_s=300, jitter=0.999) == pytest.approx(0.9995)
    assert retry_delay(4, base_s=1, max_s=300, jitter=0.0) == 4.0
    assert retry_delay(40, base_s=1, max_s=300, jitter=0.0) == 150.0
    assert retry_delay(10_000, base_s=1, max_s=300, jitter=0.999) < 300
