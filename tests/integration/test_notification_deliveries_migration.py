"""The notification_deliveries migrations: the backfill records every delivered outbox row, and only those."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, create_engine, inspect, text

from services import database
from tests.conftest import revision_before, throwaway_database

pytestmark = pytest.mark.integration

ADD_TABLE = "7c4e2a9d1b05"
BACKFILL = "8d5f3b0e2c16"
BEFORE = revision_before(ADD_TABLE)


def _seed(conn: Connection) -> dict[str, int]:
    """An event with three outbox rows: delivered after a failure, pending after failures, never tried."""
    alert = conn.scalar(
        text(
            "INSERT INTO alerts (fingerprint, limit_name, limit_type, limit_version, subject, severity, state,"
            " observed_value, threshold, data_time, detection_latency_s, opened_at, updated_at)"
            " VALUES ('fp-m', 'l', 'gross_notional', 1, 'firm', 'warning', 'open', 1, 1, now(), 0, now(), now())"
            " RETURNING id"
        )
    )
    event = conn.scalar(
        text(
            "INSERT INTO alert_events (alert_id, event_type, occurred_at, actor, severity, state, prev_hash, hash)"
            " VALUES (:a, 'opened', now(), 'test', 'warning', 'open', '', :h) RETURNING id"
        ),
        {"a": alert, "h": "e" * 64},
    )
    ids = {}
    for channel in ("webhook", "audit", "alertmanager"):
        ids[channel] = int(
            conn.scalar(
                text(
                    "INSERT INTO notification_outbox (event_id, channel, idempotency_key, payload)"
                    " VALUES (:e, :c, :k, CAST(:p AS jsonb)) RETURNING id"
                ),
                {"e": event, "c": channel, "k": f"{channel}:{event}", "p": '{"event_type": "opened"}'},
            )
        )
    conn.execute(
        text(
            "INSERT INTO notification_attempts (outbox_id, attempted_at, ok, status_code, error) VALUES"
            " (:webhook, now(), false, 503, 'down'), (:webhook, now(), true, 204, NULL),"
            " (:audit, now(), false, 500, 'boom')"
        ),
        ids,
    )
    conn.execute(text("UPDATE notification_outbox SET delivered_at = now(), attempts = 2 WHERE id = :webhook"), ids)
    conn.execute(text("UPDATE notification_outbox SET attempts = 1, last_error = 'boom' WHERE id = :audit"), ids)
    return ids


def _deliveries(conn: Connection) -> list[tuple[int, str, int, int | None]]:
    rows = conn.execute(
        text("SELECT outbox_id, channel, attempts, status_code FROM notification_deliveries ORDER BY outbox_id")
    ).all()
    return [(int(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]


def test_the_backfill_records_delivered_rows_and_downgrade_drops_the_table(pg_server_url: str) -> None:
    with throwaway_database(pg_server_url) as url:
        eng = create_engine(database.normalize_url(url))
        try:
            database.upgrade(url, BEFORE)
            with eng.begin() as conn:
                ids = _seed(conn)

            database.upgrade(url, ADD_TABLE)
            with eng.begin() as conn:
                assert _deliveries(conn) == []  # the schema revision writes no rows (schema/data split)
            database.upgrade(url)
            with eng.begin() as conn:
                assert _deliveries(conn) == [(ids["webhook"], "webhook", 2, 204)]
                assert conn.scalar(text("SELECT count(*) FROM notification_outbox")) == 3

            database.downgrade(url, BEFORE)
            assert "notification_deliveries" not in inspect(eng).get_table_names()
            with eng.begin() as conn:
                assert conn.scalar(text("SELECT count(*) FROM notification_outbox")) == 3
                assert conn.scalar(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'reject_notification%'")) == 0
            database.upgrade(url)
            with eng.begin() as conn:
                assert _deliveries(conn) == [(ids["webhook"], "webhook", 2, 204)]
        finally:
            eng.dispose()
