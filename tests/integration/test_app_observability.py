"""The composition root wires the dispatcher, the scrape-time gauges and the registration: a real Monitor
on loopback, a real webhook receiver, a real Redis."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
import redis
from sqlalchemy import Engine

from services.app import Monitor
from services.config import Settings
from services.errors import ConfigError
from tests.ecosystem_fixtures import Receiver, wait_until
from tests.integration.outbox_rows import add_event, insert_alert

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_monitor_dispatches_exports_backlog_and_registers(
    database_url: str, engine: Engine, receiver: Receiver, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "from-the-environment")
    port = receiver.start()
    name = f"risk-monitor-app-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        service_name=name,
        service_instance="app-test-1",
        database_url=database_url,
        http_port=0,
        grpc_port=0,
        notifications_channels=("webhook",),
        notifications_webhook_url=f"http://127.0.0.1:{port}/hook",
        notifications_webhook_secret_env="TEST_WEBHOOK_SECRET",
        notifications_dispatch_interval_s=0.2,
        registry_enabled=True,
        registry_redis_url=redis_url,
    )
    receiver.status = 503  # the receiver is down when the event is written
    event_id = add_event(engine, insert_alert(engine), "opened", ["webhook"])
    monitor = Monitor(settings)
    monitor.start()
    probe = redis.Redis.from_url(redis_url)
    try:
        assert monitor.http is not None
        wait_until(lambda: f"webhook:{event_id}" in receiver.received_keys(), timeout_s=20)
        scraped = _scrape(monitor.http.port)
        assert 'risk_monitor_outbox_backlog{channel="webhook"} 1.0' in scraped  # pending while it is down
        assert 'risk_monitor_outbox_oldest_pending_age_seconds{channel="webhook"}' in scraped

        stored = json.loads(probe.get(f"registry:services:{name}") or b"null")
        assert (stored["instance_id"], stored["host"]) == ("app-test-1", "127.0.0.1")
        assert (stored["http_port"], stored["grpc_port"]) == (monitor.http.port, monitor.grpc_port)

        receiver.status = 200
        wait_until(lambda: f"webhook:{event_id}" in receiver.accepted, timeout_s=30)
        assert receiver.accepted[f"webhook:{event_id}"].headers["X-Risk-Monitor-Signature"].startswith("sha256=")
    finally:
        monitor.stop()
    assert probe.exists(f"registry:services:{name}") == 0
    probe.close()


def test_a_webhook_secret_variable_that_is_not_set_stops_the_start(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        http_port=0,
        grpc_port=0,
        notifications_channels=("webhook",),
        notifications_webhook_url="http://127.0.0.1:9/hook",
        notifications_webhook_secret_env="RISK_TEST_SECRET_THAT_IS_NOT_SET",
    )
    monitor = Monitor(settings)
    with pytest.raises(ConfigError, match="RISK_TEST_SECRET_THAT_IS_NOT_SET"):
        monitor.start()
