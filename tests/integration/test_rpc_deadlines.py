"""Deadlines reach the database: a query outliving the caller's deadline is cancelled, not left running."""

from __future__ import annotations

import time

import grpc
import pytest
from riskmonitor.v1 import risk_monitor_pb2 as pb
from sqlalchemy import Engine, text

from tests.integration.rpc_harness import serving

pytestmark = pytest.mark.integration


def _waiting_on_alerts(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query ILIKE '%FROM alerts%'"
                )
            )
        )


def test_a_query_blocked_past_the_deadline_is_cancelled_on_the_server(engine: Engine) -> None:
    with serving(engine) as api, engine.connect() as locker:
        locker.execute(text("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE"))  # held until rollback
        with pytest.raises(grpc.RpcError) as err:
            api.stub.ListAlerts(pb.ListAlertsRequest(), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The server's statement carried the remaining deadline as its statement_timeout: it gives up
        # too, instead of waiting for the lock for as long as the lock is held.
        deadline = time.monotonic() + 5
        while _waiting_on_alerts(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_on_alerts(engine) == 0
        locker.rollback()
