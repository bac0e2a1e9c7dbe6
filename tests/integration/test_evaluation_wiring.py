"""The composition root runs the limits reload and the evaluation on the scheduler and feeds subscribers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from services.app import Monitor
from services.config import Settings
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

LIMITS = """
[groups]
desk = ["ex:acct"]

[[limit]]
name = "desk-gross"
type = "gross_notional"
scope = "group"
scope_ref = "desk"
warn = "50"
"""


def test_monitor_reloads_limits_evaluates_on_schedule_and_publishes_alerts(
    fresh_engine: Engine, fresh_database_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.prices("md", {"BTC-USD": "100"}, now)
    v.positions("ex", "acct", {"BTC-USD": ("1", "100")}, now, collected=now)  # gross 100 > warn 50
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS)
    settings = Settings(
        database_url=fresh_database_url,
        http_port=0,
        grpc_port=0,
        limits_file=str(limits),
        evaluation_interval_s=0.2,
        notifications_channels=("webhook",),
        notifications_webhook_url="http://127.0.0.1:9/unreachable",  # rows stay pending: nothing answers there
    )
    monitor = Monitor(settings)
    subscription = monitor.alert_feed.subscribe()
    monitor.start()
    try:
        assert monitor.scheduler is not None
        assert {job.id for job in monitor.scheduler.get_jobs()} >= {"evaluate", "reload_limits"}
        event = subscription.get(timeout=20)
    finally:
        monitor.stop()
    assert event is not None
    assert (event.event_type.value, event.alert.limit_name, event.alert.subject) == (
        "opened",
        "desk-gross",
        "scope=group:desk",
    )
    with fresh_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM evaluations")) >= 1
        assert conn.scalar(text("SELECT changed_by FROM limits")).startswith(f"file:{limits}@")
        assert conn.scalar(text("SELECT channel FROM notification_outbox")) == "webhook"
    assert subscription.get(timeout=0.1) is None  # the feed was closed on stop
