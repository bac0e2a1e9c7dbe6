"""The list queries walk indexes in their ORDER BY: page N of years of history costs what page 1 costs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.sql import Select

from services.alert_queries import AlertFilter, EventFilter, alerts_query, events_query
from services.page_tokens import Cursor
from tests.integration.rpc_harness import T0, new_account

pytestmark = pytest.mark.integration
ROWS = 20_000


@pytest.fixture(scope="module")
def history(engine: Engine) -> int:
    """ROWS alerts over ~2 years, one event each. The returned account holds 1% of them and "leverage" is
    2% of the types: selective filters, as an auditor's usually are (one account among hundreds)."""
    ids = [new_account(engine)[0] for _ in range(4)]
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO alerts (fingerprint, limit_name, limit_type, limit_version, account_id, subject, symbol,
                    severity, state, observed_value, threshold, data_time, detection_latency_s, opened_at, updated_at)
                SELECT 'plan-' || g, 'lim', CASE WHEN g % 50 = 0 THEN 'leverage' ELSE 'gross_notional' END, 1,
                    CASE WHEN g % 100 = 0 THEN (:ids)[1] ELSE (:ids)[2 + g % 3] END, 'scope=x', NULL,
                    'critical', 'resolved', 2, 1,
                    :t0 + g * interval '1 hour', 0.5, :t0 + g * interval '1 hour', :t0 + g * interval '1 hour'
                FROM generate_series(1, :n) AS g
                """
            ),
            {"ids": ids, "t0": T0 - timedelta(days=900), "n": ROWS},
        )
        conn.execute(
            text(
                """
                INSERT INTO alert_events (alert_id, event_type, occurred_at, actor, severity, state, prev_hash, hash)
                SELECT id, 'opened', opened_at, 'evaluation', 'critical', 'open', md5(id::text) || md5(id::text),
                    md5('p' || id) || md5('q' || id)
                FROM alerts WHERE fingerprint LIKE 'plan-%'
                """
            )
        )
        conn.execute(text("ANALYZE alerts"))
        conn.execute(text("ANALYZE alert_events"))
    return ids[0]


def _plan(engine: Engine, stmt: Select[Any]) -> str:
    compiled = stmt.compile(dialect=engine.dialect)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).all()
    return "\n".join(r[0] for r in rows)


DEEP = Cursor(T0 - timedelta(days=250), 10_000)  # a page deep in the history


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "ix_alerts__opened_at_id"),
        ({"newest_first": True}, "ix_alerts__opened_at_id"),
        ({"severity": "critical", "state": "resolved"}, "ix_alerts__opened_at_id"),
        ({"limit_type": "leverage"}, "ix_alerts__limit_type_opened_at_id"),
        ({"account": "any"}, "ix_alerts__account_id_opened_at_id"),
    ],
)
def test_list_alerts_pages_by_index_not_by_scan(
    engine: Engine, history: int, filters: dict[str, Any], index: str
) -> None:
    plan = _plan(engine, alerts_query(AlertFilter(**filters), DEEP, 101, account_id=history))
    assert "Seq Scan on alerts" not in plan, plan
    assert index in plan, plan


def test_list_alert_events_by_time_range_uses_an_index(engine: Engine, history: int) -> None:
    flt = EventFilter(occurred_after=T0 - timedelta(days=300), occurred_before=T0 - timedelta(days=200))
    plan = _plan(engine, events_query(flt, DEEP, 101))
    assert "Seq Scan on alert_events" not in plan, plan
    assert "Seq Scan on alerts" not in plan, plan
    assert "ix_alert_events__occurred_at_id" in plan, plan
