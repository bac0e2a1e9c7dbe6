"""create core schema

The tables the whole service needs (docs/schema.md describes each): venues and accounts, collection
runs, append-only snapshot tables with their heads and *_latest views, rejected records, versioned
limits, evaluations, alerts and their event log, compliance status and history, and the outbox.

Revision ID: 0001a0c0de01
Revises:
Create Date: 2026-11-22 01:50:21.199455+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001a0c0de01"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Current state: the snapshot rows at each account's head. The join runs on the snapshots' primary key
# (account_id, collected_at, ...), so it reads only current rows however long the history is.
LATEST_VIEWS = {
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
    op.create_table(
        "balance_snapshots",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("available", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("locked", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("total", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "collected_at", "asset", name=op.f("pk_balance_snapshots")),
    )
    op.create_index(
        op.f("ix_balance_snapshots__collected_at"),
        "balance_snapshots",
        ["collected_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_table(
        "custody_balance_snapshots",
        sa.Column("custodian_account_id", sa.Integer(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("total", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "custodian_account_id", "collected_at", "account_id", "asset", name=op.f("pk_custody_balance_snapshots")
        ),
    )
    op.create_index(
        op.f("ix_custody_balance_snapshots__collected_at"),
        "custody_balance_snapshots",
        ["collected_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accounts_evaluated", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("checks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("breaches", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("alerts_opened", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("alerts_resolved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index(
        op.f("ix_evaluations__started_at"), "evaluations", ["started_at"], unique=False, postgresql_using="brin"
    )
    op.create_table(
        "limits",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("scope_ref", sa.Text(), nullable=True),
        sa.Column(
            "filters", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("warn", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("critical", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("clear", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limits")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_limits__name_version")),
    )
    op.create_index(
        "ix_limits__name__current", "limits", ["name"], unique=True, postgresql_where=sa.text("valid_to IS NULL")
    )
    op.create_table(
        "pnl_marks",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("high_water_mark", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("day_start_equity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("trading_day", sa.Date(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_pnl_marks")),
    )
    op.create_table(
        "position_snapshots",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("avg_price", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("mark_price", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("realized_pnl", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "collected_at", "symbol", name=op.f("pk_position_snapshots")),
    )
    op.create_index(
        op.f("ix_position_snapshots__collected_at"),
        "position_snapshots",
        ["collected_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_table(
        "price_latest",
        sa.Column("venue_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("price", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("volume", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("venue_id", "symbol", name=op.f("pk_price_latest")),
    )
    op.create_table(
        "price_snapshots",
        sa.Column("venue_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("volume", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("venue_id", "symbol", "collected_at", name=op.f("pk_price_snapshots")),
    )
    op.create_index(
        op.f("ix_price_snapshots__collected_at"),
        "price_snapshots",
        ["collected_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_table(
        "snapshot_heads",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('positions', 'balances', 'custody_balances')", name=op.f("ck_snapshot_heads__kind")
        ),
        sa.PrimaryKeyConstraint("account_id", "kind", name=op.f("pk_snapshot_heads")),
    )
    op.create_table(
        "venues",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('exchange', 'custodian', 'market_data')", name=op.f("ck_venues__kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_venues")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("venue_id", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_accounts__venue_id__venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("venue_id", "external_id", name=op.f("uq_accounts__venue_id_external_id")),
    )
    op.create_table(
        "collection_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("venue_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("records_accepted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("records_rejected", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'partial', 'failed')", name=op.f("ck_collection_runs__status")
        ),
        sa.ForeignKeyConstraint(["venue_id"], ["venues.id"], name=op.f("fk_collection_runs__venue_id__venues")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_runs")),
    )
    op.create_index(
        op.f("ix_collection_runs__venue_id_kind_started_at"),
        "collection_runs",
        ["venue_id", "kind", "started_at"],
        unique=False,
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("limit_name", sa.Text(), nullable=False),
        sa.Column("limit_type", sa.Text(), nullable=False),
        sa.Column("limit_version", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("observed_value", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("threshold", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("data_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detection_latency_s", sa.Double(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("severity IN ('warning', 'critical')", name=op.f("ck_alerts__severity")),
        sa.CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name=op.f("ck_alerts__state")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_alerts__account_id__accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        op.f("ix_alerts__account_id_opened_at_id"), "alerts", ["account_id", "opened_at", "id"], unique=False
    )
    op.create_index(
        "ix_alerts__fingerprint__active",
        "alerts",
        ["fingerprint"],
        unique=True,
        postgresql_where=sa.text("state <> 'resolved'"),
    )
    op.create_index(
        op.f("ix_alerts__limit_type_opened_at_id"), "alerts", ["limit_type", "opened_at", "id"], unique=False
    )
    op.create_index(op.f("ix_alerts__opened_at_id"), "alerts", ["opened_at", "id"], unique=False)
    op.create_table(
        "compliance_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("previous_status", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_compliance_history__account_id__accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_history")),
    )
    op.create_index(
        op.f("ix_compliance_history__account_id_changed_at"),
        "compliance_history",
        ["account_id", "changed_at"],
        unique=False,
    )
    op.create_table(
        "compliance_status",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('compliant', 'warning', 'breach')", name=op.f("ck_compliance_status__status")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_compliance_status__account_id__accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_compliance_status")),
    )
    op.create_table(
        "rejected_records",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("venue_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["collection_runs.id"], name=op.f("fk_rejected_records__run_id__collection_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_records")),
    )
    op.create_index(
        op.f("ix_rejected_records__rejected_at"),
        "rejected_records",
        ["rejected_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_index(op.f("ix_rejected_records__run_id"), "rejected_records", ["run_id"], unique=False)
    op.create_table(
        "settlements",
        sa.Column("custodian_id", sa.Text(), nullable=False),
        sa.Column("settlement_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=18), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("initiated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected_settlement_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_settlements__account_id__accounts")),
        sa.ForeignKeyConstraint(["custodian_id"], ["venues.id"], name=op.f("fk_settlements__custodian_id__venues")),
        sa.PrimaryKeyConstraint("custodian_id", "settlement_id", name=op.f("pk_settlements")),
    )
    op.create_index(
        op.f("ix_settlements__status_expected_settlement_at"),
        "settlements",
        ["status", "expected_settlement_at"],
        unique=False,
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("observed_value", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column("threshold", sa.Numeric(precision=38, scale=18), nullable=True),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_events__alert_id__alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_alert_events__hash")),
    )
    op.create_index(op.f("ix_alert_events__alert_id_id"), "alert_events", ["alert_id", "id"], unique=False)
    op.create_index(
        op.f("ix_alert_events__occurred_at"), "alert_events", ["occurred_at"], unique=False, postgresql_using="brin"
    )
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["alert_events.id"], name=op.f("fk_notification_outbox__event_id__alert_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_notification_outbox__idempotency_key")),
    )
    op.create_index(
        "ix_notification_outbox__pending",
        "notification_outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["notification_outbox.id"],
            name=op.f("fk_notification_attempts__outbox_id__notification_outbox"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempts")),
    )
    op.create_index(op.f("ix_notification_attempts__outbox_id"), "notification_attempts", ["outbox_id"], unique=False)

    for name, query in LATEST_VIEWS.items():
        op.execute(sa.text(f"CREATE VIEW {name} AS {query}"))


def downgrade() -> None:
    for name in LATEST_VIEWS:
        op.execute(sa.text(f"DROP VIEW {name}"))
    op.drop_index(op.f("ix_notification_attempts__outbox_id"), table_name="notification_attempts")
    op.drop_table("notification_attempts")
    op.drop_index(
        "ix_notification_outbox__pending",
        table_name="notification_outbox",
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.drop_table("notification_outbox")
    op.drop_index(op.f("ix_alert_events__occurred_at"), table_name="alert_events", postgresql_using="brin")
    op.drop_index(op.f("ix_alert_events__alert_id_id"), table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index(op.f("ix_settlements__status_expected_settlement_at"), table_name="settlements")
    op.drop_table("settlements")
    op.drop_index(op.f("ix_rejected_records__run_id"), table_name="rejected_records")
    op.drop_index(op.f("ix_rejected_records__rejected_at"), table_name="rejected_records", postgresql_using="brin")
    op.drop_table("rejected_records")
    op.drop_table("compliance_status")
    op.drop_index(op.f("ix_compliance_history__account_id_changed_at"), table_name="compliance_history")
    op.drop_table("compliance_history")
    op.drop_index(op.f("ix_alerts__opened_at_id"), table_name="alerts")
    op.drop_index(op.f("ix_alerts__limit_type_opened_at_id"), table_name="alerts")
    op.drop_index(
        "ix_alerts__fingerprint__active", table_name="alerts", postgresql_where=sa.text("state <> 'resolved'")
    )
    op.drop_index(op.f("ix_alerts__account_id_opened_at_id"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(op.f("ix_collection_runs__venue_id_kind_started_at"), table_name="collection_runs")
    op.drop_table("collection_runs")
    op.drop_table("accounts")
    op.drop_table("venues")
    op.drop_table("snapshot_heads")
    op.drop_index(op.f("ix_price_snapshots__collected_at"), table_name="price_snapshots", postgresql_using="brin")
    op.drop_table("price_snapshots")
    op.drop_table("price_latest")
    op.drop_index(op.f("ix_position_snapshots__collected_at"), table_name="position_snapshots", postgresql_using="brin")
    op.drop_table("position_snapshots")
    op.drop_table("pnl_marks")
    op.drop_index("ix_limits__name__current", table_name="limits", postgresql_where=sa.text("valid_to IS NULL"))
    op.drop_table("limits")
    op.drop_index(op.f("ix_evaluations__started_at"), table_name="evaluations", postgresql_using="brin")
    op.drop_table("evaluations")
    op.drop_index(
        op.f("ix_custody_balance_snapshots__collected_at"),
        table_name="custody_balance_snapshots",
        postgresql_using="brin",
    )
    op.drop_table("custody_balance_snapshots")
    op.drop_index(op.f("ix_balance_snapshots__collected_at"), table_name="balance_snapshots", postgresql_using="brin")
    op.drop_table("balance_snapshots")
