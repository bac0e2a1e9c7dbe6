"""What each channel receives, built from an outbox event document. Pure: no network, no clock.

The event document is the outbox row's ``payload`` (docs/notifications.md has its shape):
``{"event_id", "event_type", "occurred_at", "actor", "alert": {...}}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

SOURCE = "risk-monitor"
ALERTNAME = "RiskLimitBreach"
SEVERITIES = ("warning", "critical")

# The audit correlator's event vocabulary; anything not listed is a generic risk alert.
_AUDIT_EVENT_TYPES = {
    "drawdown": "drawdown_limit_breach",
    "daily_loss": "drawdown_limit_breach",
    "unsettled_exposure": "liquidity_risk_alert",
    "reconciliation": "liquidity_risk_alert",
    "concentration": "correlation_risk_alert",
}


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): sorted keys, no whitespace."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def canonical_json_list(items: list[dict[str, Any]]) -> bytes:
    return json.dumps(items, sort_keys=True, separators=(",", ":"), default=str).encode()


def signature(body: bytes, secret: str) -> str:
    """Value of ``X-Risk-Monitor-Signature``: HMAC-SHA256 of the body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def audit_event_type(limit_type: str) -> str:
    return _AUDIT_EVENT_TYPES.get(limit_type, "risk_alert_generated")


def audit_event(document: Mapping[str, Any], *, trace_id: str | None = None) -> dict[str, str]:
    """The audit correlator's ``{event_type, source, message}``; the details travel in ``message``.

    ``trace_id``: the delivering span's trace, so the audit trail links to the trace of the dispatch.
    """
    alert = document["alert"]
    where = ", ".join(
        part
        for part in (
            f"account {alert['account']}" if alert.get("account") else "",
            f"symbol {alert['symbol']}" if alert.get("symbol") else "",
            f"subject {alert['subject']}" if alert.get("subject") else "",
        )
        if part
    )
    message = (
        f"alert {alert['id']} {document['event_type']} by {document.get('actor') or SOURCE}: "
        f"{alert['severity']} {alert['limit_type']} limit '{alert['limit_name']}' (v{alert['limit_version']})"
        f"{' on ' + where if where else ''}; observed {alert['observed_value']} vs threshold {alert['threshold']}"
        f"; state {alert['state']}; data time {alert['data_time']}; event {document['event_id']}"
        f" at {document['occurred_at']}; fingerprint {alert['fingerprint']}"
        f"{'; trace ' + trace_id if trace_id else ''}"
    )
    return {"event_type": audit_event_type(str(alert["limit_type"])), "source": SOURCE, "message": message}


def _labels(alert: Mapping[str, Any], severity: str) -> dict[str, str]:
    # Labels identify the alert in Alertmanager, so they hold only what never changes over its life
    # (plus severity: an escalation resolves the other severity's twin, see alertmanager_alerts).
    labels = {
        "alertname": ALERTNAME,
        "service": SOURCE,
        "limit": str(alert["limit_name"]),
        "limit_type": str(alert["limit_type"]),
        "severity": severity,
        "fingerprint": str(alert["fingerprint"]),
        "subject": str(alert["subject"]),
    }
    if alert.get("account"):
        labels["account"] = str(alert["account"])
    if alert.get("symbol"):
        labels["symbol"] = str(alert["symbol"])
    return labels


def _annotations(alert: Mapping[str, Any], event_type: str) -> dict[str, str]:
    return {
        "summary": f"{alert['limit_type']} limit '{alert['limit_name']}' breached ({alert['severity']})",
        "description": (
            f"observed {alert['observed_value']} vs threshold {alert['threshold']} on {alert['subject']}"
            f"{' (' + str(alert['account']) + ')' if alert.get('account') else ''}"
        ),
        "alert_id": str(alert["id"]),
        "state": str(alert["state"]),
        "event_type": event_type,
        "observed_value": str(alert["observed_value"]),
        "threshold": str(alert["threshold"]),
        "limit_version": str(alert["limit_version"]),
        "data_time": str(alert["data_time"]),
        "detection_latency_s": str(alert["detection_latency_s"]),
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def alertmanager_alerts(
    document: Mapping[str, Any], *, now: datetime, validity: timedelta, generator_url: str = ""
) -> list[dict[str, Any]]:
    """Alertmanager v2 alerts for one event.

    A firing alert ends at ``now + validity`` unless re-posted (the re-send job keeps it alive), so an
    alert the monitor forgets still clears itself. A resolved alert is sent with its ``endsAt``. An
    escalation or de-escalation also resolves the twin with the previous severity.
    """
    alert = document["alert"]
    event_type = str(document["event_type"])
    severity = str(alert["severity"])
    starts = str(alert["opened_at"])
    base: dict[str, Any] = {"annotations": _annotations(alert, event_type)}
    if generator_url:
        base["generatorURL"] = generator_url
    if alert["state"] == "resolved":
        ends = str(alert.get("resolved_at") or document["occurred_at"])
        return [{**base, "labels": _labels(alert, severity), "startsAt": starts, "endsAt": ends}]
    out = [{**base, "labels": _labels(alert, severity), "startsAt": starts, "endsAt": _iso(now + validity)}]
    if event_type in ("escalated", "deescalated"):
        other = next(s for s in SEVERITIES if s != severity)
        out.append(
            {**base, "labels": _labels(alert, other), "startsAt": starts, "endsAt": str(document["occurred_at"])}
        )
    return out
