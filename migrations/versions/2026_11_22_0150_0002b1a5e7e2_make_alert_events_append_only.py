"""make alert events append-only

Auditors rely on alert_events years later, so the database itself refuses UPDATE, DELETE and TRUNCATE
on it, whatever the application does. (A superuser can still disable the trigger; the hash chain that
`risk-monitor audit verify` checks is what detects that.)

Revision ID: 0002b1a5e7e2
Revises: 0001a0c0de01
Create Date: 2026-11-22 01:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002b1a5e7e2"
down_revision: str | None = "0001a0c0de01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            """
            CREATE FUNCTION reject_alert_event_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'alert_events is append-only: % rejected', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END;
            $$
            """
        )
    )
    op.execute(
        sa.text(
            "CREATE TRIGGER alert_events_append_only BEFORE UPDATE OR DELETE ON alert_events "
            "FOR EACH ROW EXECUTE FUNCTION reject_alert_event_change()"
        )
    )
    op.execute(
        sa.text(
            "CREATE TRIGGER alert_events_no_truncate BEFORE TRUNCATE ON alert_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION reject_alert_event_change()"
        )
    )


def downgrade() -> None:
    op.execute(sa.text("DROP TRIGGER alert_events_no_truncate ON alert_events"))
    op.execute(sa.text("DROP TRIGGER alert_events_append_only ON alert_events"))
    op.execute(sa.text("DROP FUNCTION reject_alert_event_change()"))
