"""index alert events by time and id

ListAlertEvents pages through years of the audit log by time range, keyset on (occurred_at, id). The BRIN
index on occurred_at narrows a range scan but can't return rows in order, so every page would sort the
whole remaining range; this btree walks the range in order and stops after one page. Built
concurrently: alert_events is the largest table and is appended to while the monitor runs.

Revision ID: b96e91d07848
Revises: 0003d4e5f6a7
Create Date: 2026-11-22 02:30:29.700758+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b96e91d07848"
down_revision: str | None = "0003d4e5f6a7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_alert_events__occurred_at_id",
            "alert_events",
            ["occurred_at", "id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_alert_events__occurred_at_id", table_name="alert_events", postgresql_concurrently=True)
