"""The partitioning migration moves existing rows in and out and keeps identities and views working."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, create_engine, text

from services import database
from tests.conftest import revision_before, throwaway_database

pytestmark = pytest.mark.integration

PARTITIONING = "0003d4e5f6a7"
BEFORE = revision_before(PARTITIONING)
OLD = datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC)  # far outside the window the migration creates


def _seed(conn: Connection) -> int:
    conn.execute(text("INSERT INTO venues (id, kind) VALUES ('ex', 'exchange')"))
    run_id = int(
        conn.scalar(
            text(
                "INSERT INTO collection_runs (job, venue_id, kind, started_at, finished_at, status)"
                " VALUES ('collect_positions', 'ex', 'positions', :at, :at, 'partial') RETURNING id"
            ),
            {"at": OLD},
        )
    )
    conn.execute(
        text(
            "INSERT INTO rejected_records (run_id, venue_id, kind, payload, reason, rejected_at)"
            " VALUES (:run, 'ex', 'positions', '{}', 'bad', :at)"
        ),
        {"run": run_id, "at": OLD},
    )
    conn.execute(
        text(
            "INSERT INTO position_snapshots (account_id, collected_at, symbol, quantity, observed_at, run_id)"
            " VALUES (1, :at, 'BTC-USDT', 3, :at, :run)"
        ),
        {"at": OLD, "run": run_id},
    )
    conn.execute(
        text(
            "INSERT INTO snapshot_heads (account_id, kind, collected_at, observed_at, run_id)"
            " VALUES (1, 'positions', :at, :at, :run)"
        ),
        {"at": OLD, "run": run_id},
    )
    return run_id


def _relkind(conn: Connection, table: str) -> str:
    return str(conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": table}))


def test_existing_rows_move_into_day_partitions_and_back_out_on_downgrade(pg_server_url: str) -> None:
    with throwaway_database(pg_server_url) as url:
        eng = create_engine(database.normalize_url(url))
        try:
            database.upgrade(url, BEFORE)
            with eng.begin() as conn:
                run_id = _seed(conn)

            database.upgrade(url)
            with eng.begin() as conn:
                assert _relkind(conn, "collection_runs") == "p"
                where = conn.scalar(text("SELECT tableoid::regclass::text FROM position_snapshots"))
                assert where == "position_snapshots_p20250630"  # a partition for each day in the data
                assert conn.scalar(text("SELECT quantity FROM position_latest WHERE account_id = 1")) == 3
                new_id = conn.scalar(
                    text(
                        "INSERT INTO collection_runs (job, venue_id, kind, started_at, status)"
                        " VALUES ('j', 'ex', 'positions', now(), 'succeeded') RETURNING id"
                    )
                )
                assert new_id == run_id + 1  # the identity continues after the copied rows
                assert conn.scalar(text("SELECT count(*) FROM rejected_records WHERE run_id = :r"), {"r": run_id}) == 1

            database.downgrade(url, BEFORE)
            with eng.begin() as conn:
                assert {_relkind(conn, t) for t in ("collection_runs", "position_snapshots", "rejected_records")} == {
                    "r"
                }
                assert conn.scalar(text("SELECT count(*) FROM collection_runs")) == 2
                assert conn.scalar(text("SELECT quantity FROM position_latest WHERE account_id = 1")) == 3
                assert conn.scalar(text("SELECT count(*) FROM pg_inherits")) == 0
            database.upgrade(url)
            database.check(url)
            with eng.connect() as conn:
                assert conn.scalar(text("SELECT count(*) FROM position_snapshots_p20250630")) == 1
        finally:
            eng.dispose()
