"""The tick path's state follows the snapshots: the resync job adopts new accounts and positions, and a
breach on an account first seen through a resync opens an alert linked to that account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from jobs.resync_tick_state import ResyncTickStateJob
from models.risk import LimitType, PriceTick, Scope, build_book
from services.live_risk import LiveRisk
from services.tick_alerts import TickAlertWriter, store_persist
from tests.factories import limit, price
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)


def test_resync_brings_in_snapshot_accounts_and_their_alerts_link_to_them(fresh_engine: Engine) -> None:
    venues = Venues.on(fresh_engine)
    venues.venue("binance")
    venues.venue("md", "market_data")
    venues.positions("binance", "acct-9", {"BTC-USDT": ("2", "100")}, NOW, collected=NOW)
    venues.balances("binance", "acct-9", {"USDT": "1000"}, NOW, collected=NOW)
    venues.prices("md", {"BTC-USDT": "100", "USDT-USD": "1"}, NOW)
    key = "binance:acct-9"
    gross = limit("gross-9", LimitType.GROSS_NOTIONAL, warn="250", critical="400", scope=Scope.ACCOUNT, scope_ref=key)
    account_ids: dict[str, int] = {}
    writer = TickAlertWriter(store_persist(fresh_engine, account_ids))
    writer.start()
    live = LiveRisk(build_book(), [gross], NOW, writer)  # started before the account existed
    ResyncTickStateJob(fresh_engine, live, dict, account_ids, lambda: NOW)()
    assert key in live.book.accounts
    assert [p.quantity for p in live.book.positions[key]] == [Decimal(2)]
    outcome = live.apply([(0, PriceTick(price("BTC-USDT", "250", at=NOW + timedelta(seconds=1))))], NOW)
    assert [c.level.value for c in outcome.changes] == ["critical"]  # 2 × 250 = 500 > 400
    writer.stop()
    with fresh_engine.connect() as conn:
        rows = conn.execute(text("SELECT account_id, severity FROM alerts WHERE limit_name = 'gross-9'")).all()
    assert [tuple(r) for r in rows] == [(account_ids[key], "critical")]


def test_a_breach_a_resync_finds_is_dated_by_the_snapshots_not_the_resync(fresh_engine: Engine) -> None:
    venues = Venues.on(fresh_engine)
    venues.venue("binance")
    venues.venue("md", "market_data")
    venues.positions("binance", "acct-7", {"BTC-USDT": ("2", "100")}, NOW, collected=NOW)
    venues.balances("binance", "acct-7", {"USDT": "1000"}, NOW, collected=NOW)
    venues.prices("md", {"BTC-USDT": "250", "USDT-USD": "1"}, NOW)  # 2 × 250 = 500 > critical 400
    key = "binance:acct-7"
    gross = limit("gross-7", LimitType.GROSS_NOTIONAL, warn="250", critical="400", scope=Scope.ACCOUNT, scope_ref=key)
    account_ids: dict[str, int] = {}
    writer = TickAlertWriter(store_persist(fresh_engine, account_ids))
    writer.start()
    live = LiveRisk(build_book(), [gross], NOW, writer)
    later = NOW + timedelta(minutes=1)
    ResyncTickStateJob(fresh_engine, live, dict, account_ids, lambda: later)()
    writer.stop()
    with fresh_engine.connect() as conn:
        [(data_time, latency)] = conn.execute(
            text("SELECT data_time, detection_latency_s FROM alerts WHERE limit_name = 'gross-7'")
        ).all()
    assert data_time == NOW
    assert float(latency) == 60.0
