"""add notification deliveries

An append-only record of every delivered notification (one row per delivered outbox row), so the
outbox itself can be purged: until now the outbox row's ``delivered_at`` was the only record that a
notification reached its receiver, and auditors ask that question years later. The dispatcher writes
the row in the transaction that marks the outbox row delivered; the next revision backfills the rows
delivered before this one. No foreign key to ``notification_outbox`` (its rows are purged); the event
is referenced in ``alert_events``, which is never deleted.

Like ``alert_events``, the database refuses UPDATE, DELETE and TRUNCATE on it. A new table only: no lock
on existing ones, so older replicas keep running while it is created.

Revision ID: 7c4e2a9d1b05
Revises: 5a7d1c2e9b30
Create Date: 2026-12-05 03:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c4e2a9d1b05"
down_revision: str | None = "5a7d1c2e9b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("outbox_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["alert_events.id"], name=op.f("fk_notification_deliveries__event_id__alert_events")
        ),
        sa.PrimaryKeyConstraint("outbox_id", name=op.f("pk_notification_deliveries")),
    )
    op.create_index(op.f("ix_notification_deliveries__event_id"), "notification_deliveries", ["event_id"])
    op.create_index(op.f("ix_notification_deliveries__delivered_at"), "notification_deliveries", ["delivered_at"])
    op.execute(
        sa.text(
            """
            CREATE FUNCTION reject_notification_delivery_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'notification_deliveries is append-only: % rejected', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END;
            $$
            """
        )
    )
    op.execute(
        sa.text(
            "CREATE TRIGGER notification_deliveries_append_only BEFORE UPDATE OR DELETE ON notification_deliveries "
            "FOR EACH ROW EXECUTE FUNCTION reject_notification_delivery_change()"
        )
    )
    op.execute(
        sa.text(
            "CREATE TRIGGER notification_deliveries_no_truncate BEFORE TRUNCATE ON notification_deliveries "
            "FOR EACH STATEMENT EXECUTE FUNCTION reject_notification_delivery_change()"
        )
    )


def downgrade() -> None:
    op.drop_table("notification_deliveries")  # drops its triggers too
    op.execute(sa.text("DROP FUNCTION reject_notification_delivery_change()"))
