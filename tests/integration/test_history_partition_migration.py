"""Partitioning evaluations and account_risk_history moves their rows into day partitions and back out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Connection, create_engine, text

from services import database
from tests.conftest import revision_before, throwaway_database

pytestmark = pytest.mark.integration

PARTITIONING = "95c1fdcf939e"
BEFORE = revision_before(PARTITIONING)
OLD = datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC)  # far outside the window the migration creates


def _seed(conn: Connection) -> int:
    evaluation_id = int(
        conn.scalar(
            text(
                "INSERT INTO evaluations (path, started_at, finished_at, status, checks)"
                " VALUES ('scheduled', :at, :at, 'succeeded', 12) RETURNING id"
            ),
            {"at": OLD},
        )
    )
    conn.execute(
        text(
            "INSERT INTO account_risk_history (account_id, recorded_at, evaluation_id, gross, net, equity,"
            " leverage, unrealized_pnl, daily_pnl, drawdown)"
            " VALUES (1, :at, :e, 1500.25, -3, 1000, 'Infinity', 0.000000000000000001, -7, 0.25)"
        ),
        {"at": OLD, "e": evaluation_id},
    )
    return evaluation_id


def _relkind(conn: Connection, table: str) -> str:
    return str(conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": table}))


def _history(conn: Connection) -> tuple[object, ...]:
    return tuple(conn.execute(text("SELECT gross, net, leverage, unrealized_pnl FROM account_risk_history")).one())


def test_evaluation_history_moves_into_day_partitions_and_back_out_on_downgrade(pg_server_url: str) -> None:
    with throwaway_database(pg_server_url) as url:
        eng = create_engine(database.normalize_url(url))
        try:
            database.upgrade(url, BEFORE)
            with eng.begin() as conn:
                evaluation_id = _seed(conn)
                before = _history(conn)
            assert before[0] == Decimal("1500.25")
            assert before[2] == Decimal("Infinity")

            database.upgrade(url)
            with eng.begin() as conn:
                assert _relkind(conn, "evaluations") == "p"
                assert _relkind(conn, "account_risk_history") == "p"
                # A partition for the day in the data, whatever the window around today.
                assert conn.scalar(text("SELECT tableoid::regclass::text FROM evaluations")) == "evaluations_p20250630"
                assert conn.scalar(text("SELECT tableoid::regclass::text FROM account_risk_history")) == (
                    "account_risk_history_p20250630"
                )
                assert _history(conn) == before  # exact values, Infinity included
                now = datetime.now(UTC)
                far = now + timedelta(days=400)
                new_id = conn.scalar(
                    text(
                        "INSERT INTO evaluations (path, started_at, status) VALUES ('scheduled', :now, 'succeeded')"
                        " RETURNING id"
                    ),
                    {"now": now},
                )
                assert new_id == evaluation_id + 1  # the identity continues after the copied rows
                where = conn.scalar(
                    text("SELECT tableoid::regclass::text FROM evaluations WHERE id = :i"), {"i": new_id}
                )
                assert where == f"evaluations_p{now:%Y%m%d}"
                # A row far ahead of the created window still has a home.
                conn.execute(
                    text(
                        "INSERT INTO account_risk_history (account_id, recorded_at, evaluation_id, gross, net,"
                        " equity, leverage, unrealized_pnl, daily_pnl, drawdown)"
                        " VALUES (2, :at, 1, 0, 0, 0, 0, 0, 0, 0)"
                    ),
                    {"at": far},
                )
                assert conn.scalar(text("SELECT count(*) FROM account_risk_history_default")) == 1

            database.downgrade(url, BEFORE)
            with eng.begin() as conn:
                assert {_relkind(conn, t) for t in ("evaluations", "account_risk_history")} == {"r"}
                assert conn.scalar(text("SELECT count(*) FROM evaluations")) == 2
                assert conn.scalar(text("SELECT count(*) FROM account_risk_history")) == 2
                assert not conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_class WHERE relname LIKE 'evaluations\\_p%'"
                        " OR relname LIKE 'account\\_risk\\_history\\_%'"
                    )
                )
                assert conn.scalar(text("SELECT gross FROM account_risk_history WHERE account_id = 1")) == Decimal(
                    "1500.25"
                )
            database.upgrade(url)
            database.check(url)
            with eng.connect() as conn:
                assert conn.scalar(text("SELECT count(*) FROM evaluations_p20250630")) == 1
                # Re-upgraded: the far day is in the data now, so it gets its own partition.
                assert conn.scalar(text(f"SELECT count(*) FROM account_risk_history_p{far:%Y%m%d}")) == 1
        finally:
            eng.dispose()
