"""The latest-snapshot views probe one head at a time: a read costs the same however full today's partition is.

Before revision 9e6a4c1f3d27 the planner could answer a read of some accounts with a hash join over a
sequential scan of the whole day's partition (it did in the soak, with no statistics yet on a partition
growing by ~10k rows a second), so the evaluation's read grew with every collection run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from services import database
from services.book_loader import BALANCES_SQL, CUSTODY_SQL, POSITIONS_SQL
from tests.conftest import throwaway_database

pytestmark = pytest.mark.integration

ACCOUNTS = 1000
BATCHES = 150  # collection runs kept today per account: 300k balance rows, as after ~2.5 minutes of the soak
VIEWS = ("position_latest", "balance_latest", "custody_balance_latest")
MOVED = " WHERE account_id = ANY(%(ids)s)"  # the loader's read of the accounts whose head moved
MOVED_INT4 = " WHERE account_id = ANY(%(ids)s::int[])"
# What the evaluation reads (services/book_loader.py): whole, and for some accounts with the id array typed as
# psycopg sends a list of small ints (int2[]) and as int4[] (a larger id, or another client). Before this
# revision the int4[] form got a hash join over the day: which plan a read gets must not hang on such details.
READS = [
    POSITIONS_SQL,
    BALANCES_SQL,
    CUSTODY_SQL,
    POSITIONS_SQL + MOVED,
    BALANCES_SQL + MOVED,
    POSITIONS_SQL + MOVED_INT4,
    BALANCES_SQL + MOVED_INT4,
]


@pytest.fixture(scope="module")
def history(pg_server_url: str) -> Iterator[Engine]:
    """A day of many runs per account, not analyzed (as a new day's partition is): its own database."""
    with throwaway_database(pg_server_url) as url:
        database.upgrade(url)
        engine = database.make_engine(url, pool_size=2)
        now = datetime.now(UTC).replace(microsecond=0)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO venues (id, kind) VALUES ('ex', 'exchange'), ('cust', 'custodian')"))
            conn.execute(
                text(
                    "INSERT INTO accounts (venue_id, external_id)"
                    " SELECT 'ex', 'a' || g FROM generate_series(1, :n) g UNION ALL SELECT 'cust', 'vault'"
                ),
                {"n": ACCOUNTS},
            )
            # Batch k of every account was collected k seconds before now; the heads point at the newest.
            conn.execute(
                text(
                    """
                    INSERT INTO balance_snapshots
                        (account_id, collected_at, asset, available, locked, total, observed_at, run_id)
                    SELECT a.id, :now - k * interval '1 second', asset, 1, 0, 1, :now - k * interval '1 second', k
                    FROM accounts a, generate_series(0, :batches - 1) k, unnest(ARRAY['BTC', 'USDT']) asset
                    WHERE a.venue_id = 'ex'
                    """
                ),
                {"now": now, "batches": BATCHES},
            )
            conn.execute(
                text(
                    """
                    INSERT INTO position_snapshots (account_id, collected_at, symbol, quantity, observed_at, run_id)
                    SELECT a.id, :now - k * interval '1 second', 'S' || s || '-USDT', 1,
                           :now - k * interval '1 second', k
                    FROM accounts a, generate_series(0, 19) k, generate_series(1, 10) s
                    WHERE a.venue_id = 'ex'
                    """
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    """
                    INSERT INTO custody_balance_snapshots
                        (custodian_account_id, collected_at, account_id, asset, total, observed_at, run_id)
                    SELECT c.id, :now - k * interval '1 second', a.id, 'USDT', 1, :now - k * interval '1 second', k
                    FROM accounts c, accounts a, generate_series(0, 59) k
                    WHERE c.venue_id = 'cust' AND a.venue_id = 'ex'
                    """
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    """
                    INSERT INTO snapshot_heads (account_id, kind, collected_at, observed_at, run_id)
                    SELECT id, kind, :now, :now, 0 FROM accounts,
                        unnest(ARRAY['positions', 'balances']) kind WHERE venue_id = 'ex'
                    UNION ALL SELECT id, 'custody_balances', :now, :now, 0 FROM accounts WHERE venue_id = 'cust'
                    """
                ),
                {"now": now},
            )
        yield engine
        engine.dispose()


def _plan(engine: Engine, sql: str, params: dict[str, object]) -> str:
    with engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")  # the plan psycopg's first runs get
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, params).all())


@pytest.mark.parametrize("sql", READS)
def test_a_latest_read_probes_each_head_by_primary_key_and_never_scans_the_day(history: Engine, sql: str) -> None:
    ids = list(range(3, ACCOUNTS + 1, 3))  # a third of the accounts moved: the loader's partial read
    plan = _plan(history, sql, {"ids": ids})
    assert "Seq Scan on position_snapshots" not in plan, plan
    assert "Seq Scan on balance_snapshots" not in plan, plan
    assert "Seq Scan on custody_balance_snapshots" not in plan, plan
    assert "_pkey" in plan, plan  # each head's rows through the partition's primary key


def test_the_views_return_the_heads_rows_only(history: Engine) -> None:
    with history.connect() as conn:
        counts = {v: conn.scalar(text(f"SELECT count(*) FROM {v}")) for v in VIEWS}
        newest = conn.scalar(text("SELECT count(DISTINCT collected_at) FROM balance_latest"))
        moved = conn.execute(
            text("SELECT count(*), count(DISTINCT account_id) FROM balance_latest WHERE account_id = ANY(:ids)"),
            {"ids": [1, 2, 3, 999_999]},
        ).one()
    assert counts == {
        "position_latest": ACCOUNTS * 10,
        "balance_latest": ACCOUNTS * 2,
        "custody_balance_latest": ACCOUNTS,
    }
    assert newest == 1
    assert tuple(moved) == (6, 3)
