"""The tick alert writer through a database outage: the tick path never blocks, no level change is lost.

A private PostgreSQL is stopped under a running writer while a tick stream keeps changing levels, far more
batches than the configured queue depth; ``LiveRisk.apply`` must keep returning (it used to block inside
its lock once a bounded queue filled), and every change must be written, in order, once the server is back.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from jobs.resync_tick_state import ResyncTickStateJob
from models.risk import LimitType, PriceTick, Scope, build_book
from services import database
from services.live_risk import LiveRisk
from services.tick_alerts import TickAlertWriter, store_persist
from tests.factories import limit, price
from tests.faults.conftest import PrivatePostgres
from tests.integration.snapshots import Venues
from tests.processes import wait_for

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
WARN_DEPTH = 5
SWINGS = 20  # breach, clear, breach, ...: 2 × SWINGS level changes, each its own batch


def test_ticks_keep_flowing_and_every_level_change_is_written_after_an_outage(
    private_pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    engine = database.make_engine(private_pg.url, pool_size=2)
    try:
        venues = Venues.on(engine)
        venues.venue("binance")
        venues.venue("md", "market_data")
        venues.positions("binance", "acct-1", {"BTC-USDT": ("2", "100")}, NOW, collected=NOW)
        venues.balances("binance", "acct-1", {"USDT": "1000"}, NOW, collected=NOW)
        venues.prices("md", {"BTC-USDT": "100", "USDT-USD": "1"}, NOW)
        key = "binance:acct-1"
        gross = limit(
            "gross-1", LimitType.GROSS_NOTIONAL, warn="250", critical="400", scope=Scope.ACCOUNT, scope_ref=key
        )
        account_ids: dict[str, int] = {}
        writer = TickAlertWriter(store_persist(engine, account_ids), warn_depth=WARN_DEPTH, retry_s=0.05)
        writer.start()
        live = LiveRisk(build_book(), [gross], NOW, writer)
        ResyncTickStateJob(engine, live, dict, account_ids, lambda: NOW)()
        caplog.set_level(logging.INFO, logger="services.tick_alerts")

        private_pg.down()
        changes: list[str] = []

        def stream() -> None:
            for n in range(2 * SWINGS):
                px = "250" if n % 2 == 0 else "100"  # 2 × 250 = 500 > critical 400; 2 × 100 = 200 is OK
                at = NOW + timedelta(seconds=n + 1)
                outcome = live.apply([(0, PriceTick(price("BTC-USDT", px, at=at)))], at)
                changes.extend(c.level.value for c in outcome.changes)

        ticks = threading.Thread(target=stream, daemon=True)
        ticks.start()
        ticks.join(60)  # a liveness bound, not a timing one: a blocked tick path never returns
        assert not ticks.is_alive(), "the tick path blocked on the alert writer's queue"
        assert changes == ["critical", "ok"] * SWINGS
        depth = REGISTRY.get_sample_value("risk_monitor_tick_alert_queue")
        assert depth is not None
        assert depth > WARN_DEPTH
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "tick alert queue" in r.getMessage()]
        assert len(warnings) == 1  # once per episode, not once per batch

        private_pg.up()
        wait_for(lambda: writer.persisted_batches == 2 * SWINGS, 60, "queued changes written after the outage")
        writer.stop()
        assert REGISTRY.get_sample_value("risk_monitor_tick_alert_queue") == 0
        assert any("back to" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
        with engine.connect() as conn:
            events = conn.execute(
                text(
                    "SELECT e.event_type FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
                    " WHERE a.limit_name = 'gross-1' ORDER BY e.id"
                )
            ).scalars()
            assert list(events) == ["opened", "resolved"] * SWINGS
            data_times = conn.execute(
                text("SELECT data_time FROM alerts WHERE limit_name = 'gross-1' ORDER BY id")
            ).scalars()
            assert list(data_times) == [NOW + timedelta(seconds=n + 1) for n in range(0, 2 * SWINGS, 2)]
    finally:
        engine.dispose()
