"""Tables: SQLAlchemy 2 mapped classes (rows). Domain values live in ``models.risk``; repositories convert.

Conventions (docs/schema.md explains each table):
- every time is ``timestamptz`` and every quantity or amount ``NUMERIC(38, 18)`` (exact; 20 integer digits,
  18 decimals: enough for wei-denominated crypto and for notional sums);
- snapshot tables are append-only and time-ordered: their primary key starts with the account and
  contains ``collected_at`` (so native partitioning by time needs no key change), a BRIN index covers
  time-range scans, and ``snapshot_heads`` + the ``*_latest`` views (``LATEST_VIEWS``) give the current
  state so evaluation never scans history;
- history tables (the snapshots, ``collection_runs``, ``rejected_records``, ``evaluations``,
  ``account_risk_history``) are partitioned by day on their time column (``postgresql_partition_by``;
  docs/schema.md says why): retention drops whole partitions and a time-bounded query reads only its days.
  ``services.partitions`` creates and drops the partitions;
- snapshot tables carry no foreign keys: a per-row FK check would halve the COPY rate, and the only
  writer resolves account ids from ``accounts`` in the same transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s__%(column_0_N_name)s",
    "uq": "uq_%(table_name)s__%(column_0_N_name)s",
    "ck": "ck_%(table_name)s__%(constraint_name)s",
    "fk": "fk_%(table_name)s__%(column_0_N_name)s__%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AMOUNT = Numeric(38, 18)
# Risk values (observed values of checks, leverage) can be unbounded: Decimal('Infinity') for leverage at
# equity <= 0 or never-seen data. NUMERIC(38, 18) rejects infinity, so these columns are unconstrained.
RISK_VALUE = Numeric()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: DateTime(timezone=True),
        Decimal: AMOUNT,
        dict[str, Any]: JSONB,
        str: Text,
        date: Date,
    }


def _now() -> Any:
    return mapped_column(server_default=func.now())


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# --- reference data -------------------------------------------------------------------------------


class VenueRow(Base):
    """An exchange, custodian or market-data source the monitor reads from."""

    __tablename__ = "venues"
    __table_args__ = (CheckConstraint(_in("kind", "exchange", "custodian", "market_data"), name="kind"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    kind: Mapped[str]
    base_url: Mapped[str | None]
    created_at: Mapped[datetime] = _now()


class AccountRow(Base):
    """An account at a venue. ``id`` is the compact key every snapshot row carries."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("venue_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    external_id: Mapped[str]
    account_type: Mapped[str | None]
    status: Mapped[str | None]
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()


# --- collection -----------------------------------------------------------------------------------


def _by_day(column: str) -> dict[str, str]:
    """Table option: native range partitioning on ``column`` (daily partitions, see services.partitions).
    Autogenerate does not compare it; tests/integration/test_partitions.py checks pg_catalog instead."""
    return {"postgresql_partition_by": f"RANGE ({column})"}


class CollectionRunRow(Base):
    """One run of a collection job against one venue and data kind. Partitioned by ``started_at``: the
    primary key has to contain it, so ``id`` alone is unique only by its identity sequence, and
    ``rejected_records.run_id`` carries no foreign key (a partitioned table cannot be referenced by
    ``id`` alone)."""

    __tablename__ = "collection_runs"
    __table_args__ = (
        PrimaryKeyConstraint("id", "started_at"),
        CheckConstraint(_in("status", "running", "succeeded", "partial", "failed"), name="status"),
        Index(None, "venue_id", "kind", "started_at"),
        _by_day("started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity())
    job: Mapped[str]
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    kind: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str]
    records_accepted: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    records_rejected: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None]


class RejectedRecordRow(Base):
    """A venue record that failed validation: its raw payload and why, kept for the venue's owners."""

    __tablename__ = "rejected_records"
    __table_args__ = (
        PrimaryKeyConstraint("id", "rejected_at"),
        Index(None, "run_id"),
        Index(None, "rejected_at", postgresql_using="brin"),
        _by_day("rejected_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity())
    run_id: Mapped[int] = mapped_column(BigInteger)  # no FK: collection_runs is partitioned
    venue_id: Mapped[str]
    kind: Mapped[str]
    payload: Mapped[dict[str, Any]]
    reason: Mapped[str]
    rejected_at: Mapped[datetime] = _now()


class SnapshotHeadRow(Base):
    """The newest accepted snapshot per (account, kind): the "latest" state is the snapshot rows at this
    ``collected_at``. One small row per account is all a batch has to update besides its COPY, and the
    ``*_latest`` views join through it on the snapshots' primary key, so evaluation never scans history.
    An account whose positions were all closed has a head and no rows: its latest book is empty."""

    __tablename__ = "snapshot_heads"
    __table_args__ = (CheckConstraint(_in("kind", "positions", "balances", "custody_balances"), name="kind"),)

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(primary_key=True)
    collected_at: Mapped[datetime]
    observed_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class PositionSnapshotRow(Base):
    __tablename__ = "position_snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("account_id", "collected_at", "symbol"),
        Index(None, "collected_at", postgresql_using="brin"),
        _by_day("collected_at"),
    )

    account_id: Mapped[int] = mapped_column(Integer)
    collected_at: Mapped[datetime]
    symbol: Mapped[str]
    quantity: Mapped[Decimal]
    avg_price: Mapped[Decimal | None]
    mark_price: Mapped[Decimal | None]
    realized_pnl: Mapped[Decimal | None]
    observed_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class BalanceSnapshotRow(Base):
    __tablename__ = "balance_snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("account_id", "collected_at", "asset"),
        Index(None, "collected_at", postgresql_using="brin"),
        _by_day("collected_at"),
    )

    account_id: Mapped[int] = mapped_column(Integer)
    collected_at: Mapped[datetime]
    asset: Mapped[str]
    available: Mapped[Decimal]
    locked: Mapped[Decimal]
    total: Mapped[Decimal]
    observed_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class CustodyBalanceSnapshotRow(Base):
    """What a custodian says it holds (segregated) for one exchange account, per asset."""

    __tablename__ = "custody_balance_snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("custodian_account_id", "collected_at", "account_id", "asset"),
        Index(None, "collected_at", postgresql_using="brin"),
        _by_day("collected_at"),
    )

    custodian_account_id: Mapped[int] = mapped_column(Integer)
    collected_at: Mapped[datetime]
    account_id: Mapped[int] = mapped_column(Integer)
    asset: Mapped[str]
    total: Mapped[Decimal]
    observed_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class PriceSnapshotRow(Base):
    __tablename__ = "price_snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("venue_id", "symbol", "collected_at"),
        Index(None, "collected_at", postgresql_using="brin"),
        _by_day("collected_at"),
    )

    venue_id: Mapped[str]
    symbol: Mapped[str]
    collected_at: Mapped[datetime]
    price: Mapped[Decimal]
    volume: Mapped[Decimal | None]
    observed_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class PriceLatestRow(Base):
    __tablename__ = "price_latest"

    venue_id: Mapped[str] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(primary_key=True)
    price: Mapped[Decimal]
    volume: Mapped[Decimal | None]
    observed_at: Mapped[datetime]
    collected_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


class SettlementRow(Base):
    """A settlement a custodian reported. Low volume, so one row per settlement, updated in place."""

    __tablename__ = "settlements"
    __table_args__ = (Index(None, "status", "expected_settlement_at"),)

    custodian_id: Mapped[str] = mapped_column(ForeignKey("venues.id"), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"))
    asset: Mapped[str]
    quantity: Mapped[Decimal]
    status: Mapped[str]
    initiated_at: Mapped[datetime]
    expected_settlement_at: Mapped[datetime]
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    run_id: Mapped[int] = mapped_column(BigInteger)


# --- limits and evaluation ------------------------------------------------------------------------


class LimitRow(Base):
    """One version of a limit. A change closes the old version (``valid_to``) and inserts a new one,
    so "which limit was in force at time T" is a range query."""

    __tablename__ = "limits"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        Index("ix_limits__name__current", "name", unique=True, postgresql_where=text("valid_to IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str]
    version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str]
    scope: Mapped[str]
    scope_ref: Mapped[str | None]
    filters: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    warn: Mapped[Decimal | None]
    critical: Mapped[Decimal | None]
    clear: Mapped[Decimal | None]
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    digest: Mapped[str]
    valid_from: Mapped[datetime]
    valid_to: Mapped[datetime | None]
    changed_by: Mapped[str]


class EvaluationRow(Base):
    """One evaluation pass (scheduled or tick flush): timing and counts. Partitioned by ``started_at``
    (one row per pass, forever): the primary key has to contain it, so ``id`` alone is unique only by its
    identity sequence, and a statement by ``id`` should also bound ``started_at`` to read one partition."""

    __tablename__ = "evaluations"
    __table_args__ = (
        PrimaryKeyConstraint("id", "started_at"),
        Index(None, "started_at", postgresql_using="brin"),
        _by_day("started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity())
    path: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    data_as_of: Mapped[datetime | None]
    accounts_evaluated: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    checks: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    breaches: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    alerts_opened: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    alerts_resolved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    status: Mapped[str]
    error: Mapped[str | None]


class PnlMarkRow(Base):
    """Persisted P&L anchors per scope ('firm', 'account:<id>'): the high-water mark survives restarts."""

    __tablename__ = "pnl_marks"

    scope: Mapped[str] = mapped_column(primary_key=True)
    high_water_mark: Mapped[Decimal]
    day_start_equity: Mapped[Decimal]
    trading_day: Mapped[date]
    updated_at: Mapped[datetime]


class AccountRiskHistoryRow(Base):
    """Per-account risk figures over time, written at a bounded rate: an account gets a row only when its
    figures changed since its last row, and at most once per ``evaluation.history_every_s``. Append-only,
    no foreign key (like the snapshots: high volume, one writer)."""

    __tablename__ = "account_risk_history"
    __table_args__ = (
        PrimaryKeyConstraint("account_id", "recorded_at"),
        Index(None, "recorded_at", postgresql_using="brin"),
        _by_day("recorded_at"),
    )

    account_id: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime]
    evaluation_id: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[Decimal]
    net: Mapped[Decimal]
    equity: Mapped[Decimal]
    leverage: Mapped[Decimal] = mapped_column(RISK_VALUE)
    unrealized_pnl: Mapped[Decimal]
    daily_pnl: Mapped[Decimal]
    drawdown: Mapped[Decimal] = mapped_column(RISK_VALUE)


# --- alerts and audit -----------------------------------------------------------------------------


class AlertRow(Base):
    """An alert. At most one non-resolved alert per fingerprint (the partial unique index)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("state", "open", "acknowledged", "resolved"), name="state"),
        CheckConstraint(_in("severity", "warning", "critical"), name="severity"),
        Index(
            "ix_alerts__fingerprint__active",
            "fingerprint",
            unique=True,
            postgresql_where=text("state <> 'resolved'"),
        ),
        Index(None, "opened_at", "id"),
        Index(None, "account_id", "opened_at", "id"),
        Index(None, "limit_type", "opened_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    fingerprint: Mapped[str]
    limit_name: Mapped[str]
    limit_type: Mapped[str]
    limit_version: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("accounts.id"))
    subject: Mapped[str]
    symbol: Mapped[str | None]
    severity: Mapped[str]
    state: Mapped[str]
    observed_value: Mapped[Decimal] = mapped_column(RISK_VALUE)
    threshold: Mapped[Decimal]
    data_time: Mapped[datetime]
    detection_latency_s: Mapped[float] = mapped_column(Double)
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None]
    ack_comment: Mapped[str | None]
    resolved_at: Mapped[datetime | None]


class AlertEventRow(Base):
    """Append-only, hash-chained log of every alert transition (UPDATE/DELETE/TRUNCATE rejected by a
    trigger). ``hash`` = sha256(prev_hash + canonical content); ``audit verify`` recomputes the chain."""

    __tablename__ = "alert_events"
    __table_args__ = (
        Index(None, "alert_id", "id"),
        Index(None, "occurred_at", postgresql_using="brin"),
        Index(None, "occurred_at", "id"),  # ListAlertEvents: keyset pages over a time range (gRPC API)
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alerts.id"))
    event_type: Mapped[str]
    occurred_at: Mapped[datetime]
    actor: Mapped[str]
    severity: Mapped[str]
    state: Mapped[str]
    observed_value: Mapped[Decimal | None] = mapped_column(RISK_VALUE)
    threshold: Mapped[Decimal | None]
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    prev_hash: Mapped[str]
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ComplianceStatusRow(Base):
    __tablename__ = "compliance_status"
    __table_args__ = (CheckConstraint(_in("status", "compliant", "warning", "breach"), name="status"),)

    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"), primary_key=True)
    status: Mapped[str]
    changed_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ComplianceHistoryRow(Base):
    __tablename__ = "compliance_history"
    __table_args__ = (Index(None, "account_id", "changed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"))
    status: Mapped[str]
    previous_status: Mapped[str | None]
    changed_at: Mapped[datetime]
    reason: Mapped[str | None]


class JobLeaseRow(Base):
    """Which replica runs a scheduled job: claimed and renewed with one upsert (services/leases.py).

    Times are the database's clock, so replicas' clocks never need to agree."""

    __tablename__ = "job_leases"

    job_id: Mapped[str] = mapped_column(primary_key=True)
    holder: Mapped[str]  # "<service.instance>#<pid>#<random>": unique per process, even across restarts
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class CollectionShardRow(Base):
    """One account shard of a per-account collection job and the replica collecting it (services/shards.py).

    Claimed with ``FOR UPDATE SKIP LOCKED`` and renewed by the holder's heartbeat; ``holder`` is NULL when
    released. Times are the database's clock."""

    __tablename__ = "collection_shards"

    job_id: Mapped[str] = mapped_column(primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str | None]
    acquired_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]


class ReplicaRow(Base):
    """A live replica (heartbeat): how many there are sets each one's fair share of the shards."""

    __tablename__ = "replicas"

    holder: Mapped[str] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class NotificationOutboxRow(Base):
    """Transactional outbox: written with the alert event, delivered by the dispatcher at least once."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index(
            "ix_notification_outbox__pending",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alert_events.id"))
    channel: Mapped[str]
    idempotency_key: Mapped[str] = mapped_column(unique=True)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None]


class NotificationAttemptRow(Base):
    __tablename__ = "notification_attempts"
    __table_args__ = (Index(None, "outbox_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    outbox_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("notification_outbox.id"))
    attempted_at: Mapped[datetime]
    ok: Mapped[bool]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None]


class NotificationDeliveryRow(Base):
    """Append-only record of a delivered outbox row, kept after the outbox row is purged (auditors).

    Written in the transaction that marks the outbox row delivered (services/notifications/outbox.py);
    a database trigger refuses UPDATE, DELETE and TRUNCATE. No foreign key to the outbox: its rows go."""

    __tablename__ = "notification_deliveries"

    outbox_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("alert_events.id"), index=True)
    channel: Mapped[str]
    idempotency_key: Mapped[str]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]  # when the outbox row was written
    delivered_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer)  # including the successful one
    status_code: Mapped[int | None] = mapped_column(Integer)


# --- current state views --------------------------------------------------------------------------
# Created by migration 0001 (the SQL is frozen there); declared here, outside Base.metadata, so queries
# can use them as tables and autogenerate does not try to create them.

VIEWS = MetaData()

position_latest = Table(
    "position_latest",
    VIEWS,
    Column("account_id", Integer),
    Column("symbol", Text),
    Column("quantity", AMOUNT),
    Column("avg_price", AMOUNT),
    Column("mark_price", AMOUNT),
    Column("realized_pnl", AMOUNT),
    Column("observed_at", DateTime(timezone=True)),
    Column("collected_at", DateTime(timezone=True)),
    Column("run_id", BigInteger),
)

balance_latest = Table(
    "balance_latest",
    VIEWS,
    Column("account_id", Integer),
    Column("asset", Text),
    Column("available", AMOUNT),
    Column("locked", AMOUNT),
    Column("total", AMOUNT),
    Column("observed_at", DateTime(timezone=True)),
    Column("collected_at", DateTime(timezone=True)),
    Column("run_id", BigInteger),
)

custody_balance_latest = Table(
    "custody_balance_latest",
    VIEWS,
    Column("custodian_account_id", Integer),
    Column("account_id", Integer),
    Column("asset", Text),
    Column("total", AMOUNT),
    Column("observed_at", DateTime(timezone=True)),
    Column("collected_at", DateTime(timezone=True)),
    Column("run_id", BigInteger),
)
