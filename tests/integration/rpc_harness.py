"""Serve the riskmonitor.v1 API on 127.0.0.1:0 over the test database, and write alert rows directly."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.orm import AccountRow, AlertEventRow, AlertRow, ComplianceStatusRow, VenueRow
from models.risk import Limit, RiskBook, build_book
from services.alert_store import CHAIN_LOCK
from services.config import Settings
from services.errors import UnavailableError
from services.rpc.api import RiskApi, build_api
from services.rpc.server import build_server
from services.rpc.servicer import Acknowledge
from services.tick_alerts import Persist

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_seq = itertools.count(1)


def _no_acknowledge(alert_id: int, *, actor: str, comment: str, now: datetime) -> bool:
    raise UnavailableError("acknowledge is not wired in this test")


def _no_persist(_batches: Sequence[object]) -> None:
    return None


@dataclass
class Served:
    port: int
    api: RiskApi
    channel: grpc.Channel
    stub: pb_grpc.RiskMonitorServiceStub


@contextmanager
def serving(
    engine: Engine,
    *,
    settings: Settings | None = None,
    book: RiskBook | None = None,
    limits: Sequence[Limit] = (),
    acknowledge: Acknowledge = _no_acknowledge,
    persist: Persist = _no_persist,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    channel_factory: Callable[[str], grpc.Channel] | None = None,
) -> Iterator[Served]:
    settings = settings or Settings(grpc_watch_poll_interval_s=0.05)
    api = build_api(
        settings,
        engine,
        book=book or build_book(),
        limits=limits,
        acknowledge=acknowledge,
        persist=persist,
        clock=clock,
    )
    server, _, port = build_server(
        "127.0.0.1:0", [api.registration], max_workers=16, interceptors=api.interceptors, credentials=api.credentials
    )
    server.start()
    api.start()
    target = f"127.0.0.1:{port}"
    channel = channel_factory(target) if channel_factory else grpc.insecure_channel(target)
    try:
        yield Served(port, api, channel, pb_grpc.RiskMonitorServiceStub(channel))
    finally:
        channel.close()
        api.close_streams()
        server.stop(0).wait()
        api.flush()


def new_account(engine: Engine) -> tuple[int, str]:
    """A fresh venue account; returns (id, key). Tests isolate their rows by account."""
    external = f"acct-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(pg_insert(VenueRow).values(id="testvenue", kind="exchange").on_conflict_do_nothing())
        account_id = conn.execute(
            insert(AccountRow).values(venue_id="testvenue", external_id=external).returning(AccountRow.id)
        ).scalar_one()
    return account_id, f"testvenue:{external}"


def add_alert(
    engine: Engine,
    account_id: int | None,
    *,
    opened_at: datetime,
    limit_type: str = "gross_notional",
    severity: str = "critical",
    state: str = "open",
    symbol: str | None = None,
    value: str = "150",
) -> int:
    n = next(_seq)
    values = {
        "fingerprint": f"test-{uuid.uuid4().hex}",
        "limit_name": f"{limit_type}-limit",
        "limit_type": limit_type,
        "limit_version": 1,
        "account_id": account_id,
        "subject": f"scope=x;n={n}",
        "symbol": symbol,
        "severity": severity,
        "state": state,
        "observed_value": Decimal(value),
        "threshold": Decimal("100"),
        "data_time": opened_at - timedelta(seconds=2),
        "detection_latency_s": 2.0,
        "opened_at": opened_at,
        "updated_at": opened_at,
        "resolved_at": opened_at if state == "resolved" else None,
    }
    with engine.begin() as conn:
        return int(conn.execute(insert(AlertRow).values(**values).returning(AlertRow.id)).scalar_one())


def add_event(engine: Engine, alert_id: int, *, event_type: str = "opened", at: datetime = T0) -> int:
    """Appends one event; the hashes are arbitrary 64-hex strings (these tests don't verify the chain).

    Under the chain lock, as every production append is: ids then commit in id order, the invariant the
    WatchAlerts poller relies on (without it, concurrent appends made a flaky gap in test_rpc_watch)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
        prev = conn.scalar(select(AlertEventRow.hash).order_by(AlertEventRow.id.desc()).limit(1)) or "0" * 64
        digest = hashlib.sha256(f"{prev}{uuid.uuid4()}".encode()).hexdigest()
        return int(
            conn.execute(
                insert(AlertEventRow)
                .values(
                    alert_id=alert_id,
                    event_type=event_type,
                    occurred_at=at,
                    actor="evaluation",
                    severity="critical",
                    state="open",
                    observed_value=Decimal("150"),
                    threshold=Decimal("100"),
                    details={"n": 1},
                    prev_hash=prev,
                    hash=digest,
                )
                .returning(AlertEventRow.id)
            ).scalar_one()
        )


def set_compliance(engine: Engine, account_id: int, status: str, changed_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(ComplianceStatusRow).values(
                account_id=account_id, status=status, changed_at=changed_at, updated_at=changed_at
            )
        )
