"""partition evaluations and account risk history by day

The two evaluation tables that grow with time join the daily-partitioned history (docs/schema.md,
"History at volume"): ``evaluations`` gets one row per pass (86,400 a day at the default 1 s cadence),
``account_risk_history`` up to accounts / ``evaluation.history_every_s`` rows a second. Both are
append-only and read by time, so retention drops whole days, as for the snapshots.

Same procedure as revision 0003d4e5f6a7: the plain table is renamed aside, the partitioned parent is
created under the old name with the same constraint and index names, partitions are created for every
day in the data and for yesterday through a week ahead, the rows are copied and the identity continues.
``evaluations``' primary key becomes ``(id, started_at)`` (a partitioned table's unique keys must contain
its partition key; ``id`` stays unique through its identity sequence); nothing references it by a foreign
key (``account_risk_history.evaluation_id`` never had one). ``account_risk_history``'s key
``(account_id, recorded_at)`` already contains its partition key.

Kept in its own file, separate from other work chained after the same head (the lead re-chains).

Revision ID: 95c1fdcf939e
Revises: 734342af2613
Create Date: 2026-11-22 04:30:00+00:00
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "95c1fdcf939e"
down_revision: str | None = "734342af2613"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRECREATE_DAYS = 7  # the default of retention.precreate_days; the maintenance job takes over from here
AMOUNT = sa.Numeric(precision=38, scale=18)


@dataclass(frozen=True)
class _Table:
    name: str
    key: str  # partition key
    pk: tuple[str, ...]  # primary key once partitioned
    old_pk: tuple[str, ...]  # primary key of the plain table (downgrade)
    columns: tuple[sa.Column, ...]  # in the table's column order
    brin: str  # the BRIN index on the time column (same name before and after)
    identity: str | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def _tables() -> list[_Table]:
    """Fresh Column objects per call (a Column belongs to one Table); frozen copies of the models."""
    return [
        _Table(
            "evaluations",
            "started_at",
            ("id", "started_at"),
            ("id",),
            (
                sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
                sa.Column("path", sa.Text(), nullable=False),
                _time("started_at"),
                _time("finished_at", True),
                _time("data_as_of", True),
                _count("accounts_evaluated"),
                _count("checks"),
                _count("breaches"),
                _count("alerts_opened"),
                _count("alerts_resolved"),
                sa.Column("status", sa.Text(), nullable=False),
                sa.Column("error", sa.Text(), nullable=True),
            ),
            "ix_evaluations__started_at",
            identity="id",
        ),
        _Table(
            "account_risk_history",
            "recorded_at",
            ("account_id", "recorded_at"),
            ("account_id", "recorded_at"),
            (
                sa.Column("account_id", sa.Integer(), nullable=False),
                _time("recorded_at"),
                sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
                sa.Column("gross", AMOUNT, nullable=False),
                sa.Column("net", AMOUNT, nullable=False),
                sa.Column("equity", AMOUNT, nullable=False),
                sa.Column("leverage", sa.Numeric(), nullable=False),
                sa.Column("unrealized_pnl", AMOUNT, nullable=False),
                sa.Column("daily_pnl", AMOUNT, nullable=False),
                sa.Column("drawdown", sa.Numeric(), nullable=False),
            ),
            "ix_account_risk_history__recorded_at",
        ),
    ]


def _x(sql: str) -> None:
    # Table, column and partition names below come from the constants in this file, never from input.
    op.get_bind().execute(sa.text(sql))


def _set_aside(t: _Table) -> str:
    """Rename the table out of the way and free every name the replacement needs; returns the new name."""
    aside = f"{t.name}_old"
    _x(f"ALTER TABLE {t.name} RENAME TO {aside}")
    _x(f"ALTER TABLE {aside} DROP CONSTRAINT pk_{t.name}")
    _x(f"DROP INDEX {t.brin}")
    if t.identity:
        # Frees the sequence name for the new table's identity; the copy restarts it at max(id) + 1.
        _x(f"ALTER TABLE {aside} ALTER COLUMN {t.identity} DROP IDENTITY")
    return aside


def _create(t: _Table, *, partitioned: bool) -> None:
    pk = sa.PrimaryKeyConstraint(*(t.pk if partitioned else t.old_pk), name=f"pk_{t.name}")
    kw = {"postgresql_partition_by": f"RANGE ({t.key})"} if partitioned else {}
    op.create_table(t.name, *t.columns, pk, **kw)
    op.create_index(t.brin, t.name, [t.key], unique=False, postgresql_using="brin")


def _copy_back(t: _Table, aside: str) -> None:
    columns = ", ".join(c.name for c in t.columns)
    _x(f"INSERT INTO {t.name} ({columns}) SELECT {columns} FROM {aside}")  # noqa: S608
    if t.identity:
        seq = f"pg_get_serial_sequence('{t.name}', '{t.identity}')"
        _x(f"SELECT setval({seq}, COALESCE(max({t.identity}), 0) + 1, false) FROM {t.name}")  # noqa: S608
    _x(f"DROP TABLE {aside}")


def _partition_days(t: _Table, aside: str) -> list[date]:
    today = datetime.now(UTC).date()
    window = {today + timedelta(days=n) for n in range(-1, PRECREATE_DAYS + 1)}
    days_sql = f"SELECT DISTINCT ({t.key} AT TIME ZONE 'UTC')::date FROM {aside}"  # noqa: S608
    return sorted(window | set(op.get_bind().scalars(sa.text(days_sql))))


def _create_partitions(t: _Table, days: list[date]) -> None:
    # Same names and bounds as services.partitions (frozen here: migrations must not import the app).
    for day in days:
        low, high = day.isoformat(), (day + timedelta(days=1)).isoformat()
        _x(
            f"CREATE TABLE {t.name}_p{day:%Y%m%d} PARTITION OF {t.name}"
            f" FOR VALUES FROM ('{low} 00:00:00+00') TO ('{high} 00:00:00+00')"
        )
    _x(f"CREATE TABLE {t.name}_default PARTITION OF {t.name} DEFAULT")


def upgrade() -> None:
    # Fail rather than queue the evaluation's writes behind a migration waiting for a busy table.
    _x("SET LOCAL lock_timeout = '5s'")
    for t in _tables():
        aside = _set_aside(t)
        _create(t, partitioned=True)
        _create_partitions(t, _partition_days(t, aside))
        _copy_back(t, aside)


def downgrade() -> None:
    """Back to plain tables: every partition's rows (the default's included) are copied into one table."""
    _x("SET LOCAL lock_timeout = '5s'")
    for t in _tables():
        aside = _set_aside(t)
        _create(t, partitioned=False)
        _copy_back(t, aside)  # dropping the partitioned parent drops its partitions
