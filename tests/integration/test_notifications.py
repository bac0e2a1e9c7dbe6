"""The outbox dispatcher end to end: real PostgreSQL, real HTTP receivers on loopback, a real Alertmanager."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from services import database
from services.notifications import documents, outbox
from services.notifications.channels import AlertmanagerChannel, AuditChannel, HttpJsonPoster, WebhookChannel
from services.notifications.dispatcher import Dispatcher
from services.notifications.resend import ResendActiveAlerts
from tests.ecosystem_fixtures import Receiver, alertmanager_alerts, free_port, wait_until
from tests.integration.outbox_rows import add_event, attempts, insert_alert, outbox_row

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"


def _channel_name() -> str:
    # A channel name per test: rows other tests left pending are never claimed here.
    return f"webhook-{uuid.uuid4().hex[:8]}"


def _dispatcher(engine: Engine, channels: dict[str, object], **kwargs: float) -> Dispatcher:
    return Dispatcher(
        database.session_factory(engine),
        channels,  # type: ignore[arg-type]
        retry_base_s=kwargs.get("retry_base_s", 0.05),
        retry_max_s=kwargs.get("retry_max_s", 0.2),
        lease_s=kwargs.get("lease_s", 30.0),
        jitter=lambda: 0.5,
    )


def _webhook(port: int, name: str, secret: str = SECRET) -> WebhookChannel:
    return WebhookChannel(
        f"http://127.0.0.1:{port}/hooks/risk", HttpJsonPoster(timeout_s=2.0), secret=secret, name=name
    )


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_webhook_receives_the_signed_event_and_the_attempt_is_recorded(engine: Engine, receiver: Receiver) -> None:
    port = receiver.start()
    name = _channel_name()
    alert = insert_alert(engine)
    event_id = add_event(engine, alert, "opened", [name])

    assert _dispatcher(engine, {name: _webhook(port, name)})() == 1

    [request] = receiver.requests
    assert request.path == "/hooks/risk"
    assert request.headers["Idempotency-Key"] == f"{name}:{event_id}"
    assert request.headers["X-Risk-Monitor-Signature"] == documents.signature(request.body, SECRET)
    body = request.json()
    assert (body["event_id"], body["event_type"], body["alert"]["id"]) == (event_id, "opened", alert.id)
    assert body["alert"]["account"] == alert.account
    assert attempts(engine, f"{name}:{event_id}") == [(True, 200, None)]
    row = outbox_row(engine, f"{name}:{event_id}")
    assert row["delivered_at"] is not None
    assert row["attempts"] == 1


def test_a_receiver_that_is_down_delays_the_event_but_gets_it_exactly_once(engine: Engine) -> None:
    name = _channel_name()
    port = free_port()  # nothing listens yet: connections are refused
    alert = insert_alert(engine)
    event_id = add_event(engine, alert, "opened", [name])
    key = f"{name}:{event_id}"
    dispatch = _dispatcher(engine, {name: _webhook(port, name)})
    failed_before = _sample("risk_monitor_notification_attempts_total", {"channel": name, "outcome": "failed"})

    assert dispatch() == 0
    receiver = Receiver(status=503)  # back, but answering 503 for a while
    receiver.start(port)
    try:
        wait_until(lambda: (dispatch(), len(receiver.requests) >= 2)[1], timeout_s=20)
        assert receiver.accepted == {}
        receiver.status = 200
        wait_until(lambda: dispatch() == 1 or outbox_row(engine, key)["delivered_at"] is not None, timeout_s=20)
        for _ in range(3):
            dispatch()  # later runs must not deliver it again
    finally:
        receiver.stop()

    assert list(receiver.accepted) == [key]
    assert receiver.received_keys().count(key) == len(receiver.requests)  # every request carried the same key
    assert sum(1 for r in receiver.requests if r.headers.get("Idempotency-Key") == key) >= 3
    recorded = attempts(engine, key)
    assert recorded[0][:2] == (False, None)  # refused: no status code
    assert "ConnectionError" in (recorded[0][2] or "")
    assert any(status == 503 for _ok, status, _err in recorded)
    assert recorded[-1] == (True, 200, None)
    assert [ok for ok, _s, _e in recorded].count(True) == 1
    row = outbox_row(engine, key)
    assert row["last_error"] is None
    assert row["attempts"] == len(recorded)
    failed_after = _sample("risk_monitor_notification_attempts_total", {"channel": name, "outcome": "failed"})
    assert failed_after - failed_before == len(recorded) - 1


def test_a_crash_after_sending_redelivers_with_the_same_key_and_the_receiver_dedups(
    engine: Engine, receiver: Receiver
) -> None:
    port = receiver.start()
    name = _channel_name()
    alert = insert_alert(engine)
    event_id = add_event(engine, alert, "opened", [name])
    channel = _webhook(port, name)
    sessions = database.session_factory(engine)
    # A dispatcher claims the row with a short lease, delivers it, and dies before recording the result.
    with sessions.begin() as session:
        [item] = outbox.claim(session, name, limit=10, lease_s=0.2)
    assert channel.deliver(item.payload, item.idempotency_key).ok

    dispatch = _dispatcher(engine, {name: channel})
    wait_until(lambda: dispatch() == 1, timeout_s=10)

    assert receiver.received_keys() == [f"{name}:{event_id}"] * 2
    assert list(receiver.accepted) == [f"{name}:{event_id}"]
    assert outbox_row(engine, f"{name}:{event_id}")["delivered_at"] is not None


def test_two_replicas_dispatching_at_once_deliver_each_row_once(engine: Engine, receiver: Receiver) -> None:
    port = receiver.start()
    name = _channel_name()
    keys = {f"{name}:{add_event(engine, insert_alert(engine), 'opened', [name])}" for _ in range(20)}
    replicas = [_dispatcher(engine, {name: _webhook(port, name)}) for _ in range(2)]
    replicas[0].batch_size = replicas[1].batch_size = 3

    def run(dispatch: Dispatcher) -> None:
        for _ in range(20):
            dispatch()

    threads = [threading.Thread(target=run, args=(d,)) for d in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(receiver.received_keys()) == sorted(keys)  # raw requests, before the receiver's dedup


def test_events_of_one_alert_arrive_in_order_even_when_the_first_is_retried(engine: Engine, receiver: Receiver) -> None:
    port = receiver.start()
    receiver.status = 503
    name = _channel_name()
    alert = insert_alert(engine)
    opened = add_event(engine, alert, "opened", [name])
    alert.state = "resolved"
    add_event(engine, alert, "resolved", [name])
    dispatch = _dispatcher(engine, {name: _webhook(port, name)})

    dispatch()
    dispatch()
    assert set(receiver.received_keys()) == {f"{name}:{opened}"}  # the resolved event waits behind the opened one
    receiver.status = 200
    wait_until(lambda: (dispatch(), len(receiver.accepted) == 2)[1], timeout_s=20)

    assert [r.json()["event_type"] for r in receiver.accepted.values()] == ["opened", "resolved"]


def test_audit_correlator_gets_its_event_vocabulary(engine: Engine, receiver: Receiver) -> None:
    port = receiver.start()
    name = f"audit-{uuid.uuid4().hex[:8]}"
    alert = insert_alert(engine, limit_type="drawdown", severity="critical")
    event_id = add_event(engine, alert, "opened", [name])

    channel = AuditChannel(f"http://127.0.0.1:{port}", HttpJsonPoster(timeout_s=2.0), name=name)
    assert _dispatcher(engine, {name: channel})() == 1

    [request] = receiver.requests
    assert request.path == "/api/v1/audit/events"
    assert request.headers["Idempotency-Key"] == f"{name}:{event_id}"
    body = request.json()
    assert set(body) == {"event_type", "source", "message"}
    assert (body["event_type"], body["source"]) == ("drawdown_limit_breach", "risk-monitor")
    assert alert.account in body["message"]
    assert "critical" in body["message"]


def test_backlog_counts_pending_rows_per_channel(engine: Engine) -> None:
    name = _channel_name()
    for _ in range(3):
        add_event(engine, insert_alert(engine), "opened", [name])
    sessions = database.session_factory(engine)
    with sessions() as session:
        backlog = outbox.backlog(session, ["never-used"])
    assert backlog[name].pending == 3
    assert backlog[name].oldest_age_s >= 0
    assert backlog["never-used"] == outbox.Backlog(0, 0.0)


def _alertmanager_channel(url: str, name: str = "alertmanager") -> AlertmanagerChannel:
    return AlertmanagerChannel(url, HttpJsonPoster(timeout_s=5.0), validity=timedelta(minutes=5), name=name)


def test_alertmanager_shows_the_alert_and_then_its_resolution(engine: Engine, alertmanager_url: str) -> None:
    name = f"alertmanager-{uuid.uuid4().hex[:8]}"
    alert = insert_alert(engine, limit_type="gross_notional", severity="critical")
    add_event(engine, alert, "opened", [name])
    dispatch = _dispatcher(engine, {name: _alertmanager_channel(alertmanager_url, name)})

    assert dispatch() == 1
    [shown] = alertmanager_alerts(alertmanager_url, fingerprint=alert.fingerprint)
    assert shown["labels"] == {
        "alertname": "RiskLimitBreach",
        "service": "risk-monitor",
        "limit": f"gross_notional-{alert.fingerprint[3:]}",
        "limit_type": "gross_notional",
        "severity": "critical",
        "fingerprint": alert.fingerprint,
        "subject": "BTC",
        "account": alert.account,
        "symbol": "BTC-USDT",
    }
    assert shown["annotations"]["observed_value"] == "1200.5"
    assert shown["status"]["state"] == "active"

    alert.state = "resolved"
    add_event(engine, alert, "resolved", [name])
    assert dispatch() == 1
    # Alertmanager lists only alerts whose endsAt has not passed: the resolved one is gone.
    wait_until(lambda: alertmanager_alerts(alertmanager_url, fingerprint=alert.fingerprint) == [], timeout_s=10)


def test_an_escalation_replaces_the_warning_twin_in_alertmanager(engine: Engine, alertmanager_url: str) -> None:
    name = f"alertmanager-{uuid.uuid4().hex[:8]}"
    alert = insert_alert(engine, severity="warning")
    add_event(engine, alert, "opened", [name])
    alert.severity = "critical"
    add_event(engine, alert, "escalated", [name])

    dispatch = _dispatcher(engine, {name: _alertmanager_channel(alertmanager_url, name)})
    # One event per alert and channel per run: the escalation waits for the opening to be delivered.
    assert (dispatch(), dispatch()) == (1, 1)

    shown = alertmanager_alerts(alertmanager_url, fingerprint=alert.fingerprint)
    assert [a["labels"]["severity"] for a in shown] == ["critical"]


def test_resend_reposts_every_active_alert(engine: Engine, alertmanager_url: str) -> None:
    alert = insert_alert(engine, severity="warning")  # open in the database, never sent as an event
    resend = ResendActiveAlerts(database.session_factory(engine), _alertmanager_channel(alertmanager_url))
    ok_before = _sample("risk_monitor_alertmanager_resends_total", {"outcome": "ok"})

    assert resend() >= 1

    [shown] = alertmanager_alerts(alertmanager_url, fingerprint=alert.fingerprint)
    assert shown["labels"]["account"] == alert.account
    assert shown["annotations"]["state"] == "open"
    assert _sample("risk_monitor_alertmanager_resends_total", {"outcome": "ok"}) == ok_before + 1
