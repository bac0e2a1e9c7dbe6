"""add account risk history; unbounded alert values

Per-account risk figures for history (written at a bounded rate by the evaluation, see docs/schema.md).
Observed values of alerts and alert events become unconstrained NUMERIC: a check's value can be
Infinity (leverage at equity <= 0, data never seen) or exceed 20 integer digits, which NUMERIC(38, 18)
rejects; failing the whole evaluation on such a value would hide exactly the breach it signals.

Revision ID: 55ef3106ff02
Revises: 0002b1a5e7e2
Create Date: 2026-11-22 01:58:30.957301+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "55ef3106ff02"
down_revision: str | None = "0002b1a5e7e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric(precision=38, scale=18)


def upgrade() -> None:
    op.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
    op.create_table(
        "account_risk_history",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
        sa.Column("gross", AMOUNT, nullable=False),
        sa.Column("net", AMOUNT, nullable=False),
        sa.Column("equity", AMOUNT, nullable=False),
        sa.Column("leverage", sa.Numeric(), nullable=False),
        sa.Column("unrealized_pnl", AMOUNT, nullable=False),
        sa.Column("daily_pnl", AMOUNT, nullable=False),
        sa.Column("drawdown", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "recorded_at", name=op.f("pk_account_risk_history")),
    )
    op.create_index(
        op.f("ix_account_risk_history__recorded_at"),
        "account_risk_history",
        ["recorded_at"],
        unique=False,
        postgresql_using="brin",
    )
    # Widening NUMERIC(38, 18) to NUMERIC keeps every stored value exactly (no rewrite of the digits).
    op.alter_column("alerts", "observed_value", type_=sa.Numeric(), existing_type=AMOUNT, existing_nullable=False)
    op.alter_column("alert_events", "observed_value", type_=sa.Numeric(), existing_type=AMOUNT, existing_nullable=True)


def downgrade() -> None:
    # Narrowing fails on a stored Infinity: that is the point of the upgrade, so don't hide it.
    op.alter_column("alert_events", "observed_value", type_=AMOUNT, existing_type=sa.Numeric(), existing_nullable=True)
    op.alter_column("alerts", "observed_value", type_=AMOUNT, existing_type=sa.Numeric(), existing_nullable=False)
    op.drop_index(
        op.f("ix_account_risk_history__recorded_at"), table_name="account_risk_history", postgresql_using="brin"
    )
    op.drop_table("account_risk_history")
