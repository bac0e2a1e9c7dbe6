"""probe latest snapshots per head

The ``*_latest`` views joined ``snapshot_heads`` to the snapshot tables with a plain join, and the planner
was free to pick its method. With a day partition growing by ~10k rows a second (and no statistics until an
ANALYZE), it switched, for a read of some accounts (``WHERE account_id = ANY(...)``), to a hash join over a
sequential scan of the whole day's partition: the evaluation's read grew by ~30 ms a minute of collection
(docs/performance.md, "Soak"). Each view now probes the snapshot table once per head through its primary
key (a LATERAL subquery that ``OFFSET 0`` keeps from being flattened into a join), so a read costs the same
at 9 a.m. as at midnight. The account and the collection time come from the head, so a filter on either
goes to the heads' primary key. Same columns, same types, same rows.

Revision ID: 9e6a4c1f3d27
Revises: 8d5f3b0e2c16
Create Date: 2026-12-05 09:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9e6a4c1f3d27"
down_revision: str | None = "8d5f3b0e2c16"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROBED = {
    "position_latest": """
        SELECT h.account_id, s.symbol, s.quantity, s.avg_price, s.mark_price, s.realized_pnl,
               s.observed_at, h.collected_at, s.run_id
        FROM snapshot_heads h
        CROSS JOIN LATERAL (
            SELECT p.symbol, p.quantity, p.avg_price, p.mark_price, p.realized_pnl, p.observed_at, p.run_id
            FROM position_snapshots p
            WHERE p.account_id = h.account_id AND p.collected_at = h.collected_at
            OFFSET 0
        ) s
        WHERE h.kind = 'positions'
    """,
    "balance_latest": """
        SELECT h.account_id, s.asset, s.available, s.locked, s.total, s.observed_at, h.collected_at, s.run_id
        FROM snapshot_heads h
        CROSS JOIN LATERAL (
            SELECT b.asset, b.available, b.locked, b.total, b.observed_at, b.run_id
            FROM balance_snapshots b
            WHERE b.account_id = h.account_id AND b.collected_at = h.collected_at
            OFFSET 0
        ) s
        WHERE h.kind = 'balances'
    """,
    "custody_balance_latest": """
        SELECT h.account_id AS custodian_account_id, s.account_id, s.asset, s.total, s.observed_at,
               h.collected_at, s.run_id
        FROM snapshot_heads h
        CROSS JOIN LATERAL (
            SELECT c.account_id, c.asset, c.total, c.observed_at, c.run_id
            FROM custody_balance_snapshots c
            WHERE c.custodian_account_id = h.account_id AND c.collected_at = h.collected_at
            OFFSET 0
        ) s
        WHERE h.kind = 'custody_balances'
    """,
}

JOINED = {  # the definitions this revision replaces (revision 0003d4e5f6a7)
    "position_latest": """
        SELECT s.account_id, s.symbol, s.quantity, s.avg_price, s.mark_price, s.realized_pnl,
               s.observed_at, s.collected_at, s.run_id
        FROM snapshot_heads h
        JOIN position_snapshots s ON s.account_id = h.account_id AND s.collected_at = h.collected_at
        WHERE h.kind = 'positions'
    """,
    "balance_latest": """
        SELECT s.account_id, s.asset, s.available, s.locked, s.total, s.observed_at, s.collected_at, s.run_id
        FROM snapshot_heads h
        JOIN balance_snapshots s ON s.account_id = h.account_id AND s.collected_at = h.collected_at
        WHERE h.kind = 'balances'
    """,
    "custody_balance_latest": """
        SELECT s.custodian_account_id, s.account_id, s.asset, s.total, s.observed_at, s.collected_at, s.run_id
        FROM snapshot_heads h
        JOIN custody_balance_snapshots s
          ON s.custodian_account_id = h.account_id AND s.collected_at = h.collected_at
        WHERE h.kind = 'custody_balances'
    """,
}


def upgrade() -> None:
    for name, query in PROBED.items():
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")


def downgrade() -> None:
    for name, query in JOINED.items():
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
