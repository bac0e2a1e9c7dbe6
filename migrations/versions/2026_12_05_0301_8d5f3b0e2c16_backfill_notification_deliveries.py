"""backfill notification deliveries

Records every outbox row delivered before ``notification_deliveries`` existed (the previous revision),
with the status code of its successful attempt. Idempotent (``ON CONFLICT DO NOTHING``): rows a new
dispatcher already recorded are skipped. Rows an older replica marks delivered after this ran are
recorded by the purge itself before it deletes them (services/notifications/retention.py), so nothing
delivered is ever purged unrecorded.

Revision ID: 8d5f3b0e2c16
Revises: 7c4e2a9d1b05
Create Date: 2026-12-05 03:01:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8d5f3b0e2c16"
down_revision: str | None = "7c4e2a9d1b05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            INSERT INTO notification_deliveries
                (outbox_id, event_id, channel, idempotency_key, payload, created_at, delivered_at, attempts,
                 status_code)
            SELECT o.id, o.event_id, o.channel, o.idempotency_key, o.payload, o.created_at, o.delivered_at,
                   o.attempts,
                   (SELECT a.status_code FROM notification_attempts a
                    WHERE a.outbox_id = o.id AND a.ok ORDER BY a.id DESC LIMIT 1)
            FROM notification_outbox o
            WHERE o.delivered_at IS NOT NULL
            ON CONFLICT (outbox_id) DO NOTHING
            """
        )
    )


def downgrade() -> None:
    pass  # the rows are a true record, and the table is append-only; the previous revision drops it
