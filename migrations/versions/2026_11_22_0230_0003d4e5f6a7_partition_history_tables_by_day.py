"""partition history tables by day

The snapshot tables, collection_runs and rejected_records grow without bound and are queried by time, so
they become range-partitioned by their time column (daily partitions plus a DEFAULT one): retention
then drops whole partitions instead of deleting rows, and a time-bounded query reads only its days.
docs/schema.md ("History at volume") explains the choice of tables.

Each table is rebuilt: the plain table is renamed aside, the partitioned parent is created under the old
name with the same constraint and index names (the naming convention), partitions are created for every
day present in the data and for yesterday through a week ahead (so a freshly migrated database accepts
writes at once; the maintenance job keeps the window moving), the rows are copied, identity sequences
continue where they were, and the *_latest views are recreated on the new tables.

Partitioning forces the time column into every primary key: collection_runs' becomes (id, started_at),
rejected_records' (id, rejected_at), and rejected_records.run_id loses its foreign key (a partitioned
table can only be referenced through a unique key that contains its partition key).

Revision ID: 0003d4e5f6a7
Revises: 55ef3106ff02
Create Date: 2026-11-22 02:30:00+00:00
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003d4e5f6a7"
down_revision: str | None = "55ef3106ff02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRECREATE_DAYS = 7  # the default of retention.precreate_days; the maintenance job takes over from here

# Frozen copy of migration 0001's views: they must be dropped and recreated around the table swap.
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


def _amount(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Numeric(precision=38, scale=18), nullable=nullable)


def _time(name: str, nullable: bool = False, **kw: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


@dataclass(frozen=True)
class _Table:
    name: str
    key: str  # partition key
    pk: tuple[str, ...]  # primary key once partitioned
    old_pk: tuple[str, ...]  # primary key of the plain table (downgrade)
    columns: tuple[sa.Column, ...]  # in the table's column order
    indexes: tuple[tuple[str, tuple[str, ...], str], ...]  # (name, columns, method)
    foreign_keys: tuple[tuple[str, str, str], ...] = ()  # (name, column, "table(column)")
    checks: tuple[tuple[str, str], ...] = ()  # (name, condition)
    identity: str | None = None


def _tables() -> list[_Table]:
    """Fresh Column objects per call (a Column belongs to one Table). Order: views' tables first."""
    brin = (("ix_{t}__collected_at", ("collected_at",), "brin"),)
    return [
        _Table(
            "position_snapshots",
            "collected_at",
            ("account_id", "collected_at", "symbol"),
            ("account_id", "collected_at", "symbol"),
            (
                sa.Column("account_id", sa.Integer(), nullable=False),
                _time("collected_at"),
                sa.Column("symbol", sa.Text(), nullable=False),
                _amount("quantity"),
                _amount("avg_price", True),
                _amount("mark_price", True),
                _amount("realized_pnl", True),
                _time("observed_at"),
                sa.Column("run_id", sa.BigInteger(), nullable=False),
            ),
            brin,
        ),
        _Table(
            "balance_snapshots",
            "collected_at",
            ("account_id", "collected_at", "asset"),
            ("account_id", "collected_at", "asset"),
            (
                sa.Column("account_id", sa.Integer(), nullable=False),
                _time("collected_at"),
                sa.Column("asset", sa.Text(), nullable=False),
                _amount("available"),
                _amount("locked"),
                _amount("total"),
                _time("observed_at"),
                sa.Column("run_id", sa.BigInteger(), nullable=False),
            ),
            brin,
        ),
        _Table(
            "custody_balance_snapshots",
            "collected_at",
            ("custodian_account_id", "collected_at", "account_id", "asset"),
            ("custodian_account_id", "collected_at", "account_id", "asset"),
            (
                sa.Column("custodian_account_id", sa.Integer(), nullable=False),
                _time("collected_at"),
                sa.Column("account_id", sa.Integer(), nullable=False),
                sa.Column("asset", sa.Text(), nullable=False),
                _amount("total"),
                _time("observed_at"),
                sa.Column("run_id", sa.BigInteger(), nullable=False),
            ),
            brin,
        ),
        _Table(
            "price_snapshots",
            "collected_at",
            ("venue_id", "symbol", "collected_at"),
            ("venue_id", "symbol", "collected_at"),
            (
                sa.Column("venue_id", sa.Text(), nullable=False),
                sa.Column("symbol", sa.Text(), nullable=False),
                _time("collected_at"),
                _amount("price"),
                _amount("volume", True),
                _time("observed_at"),
                sa.Column("run_id", sa.BigInteger(), nullable=False),
            ),
            brin,
        ),
        _Table(
            "rejected_records",
            "rejected_at",
            ("id", "rejected_at"),
            ("id",),
            (
                sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
                sa.Column("run_id", sa.BigInteger(), nullable=False),
                sa.Column("venue_id", sa.Text(), nullable=False),
                sa.Column("kind", sa.Text(), nullable=False),
                sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
                sa.Column("reason", sa.Text(), nullable=False),
                _time("rejected_at", server_default=sa.text("now()")),
            ),
            (("ix_{t}__rejected_at", ("rejected_at",), "brin"), ("ix_{t}__run_id", ("run_id",), "btree")),
            identity="id",
        ),
        _Table(
            "collection_runs",
            "started_at",
            ("id", "started_at"),
            ("id",),
            (
                sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
                sa.Column("job", sa.Text(), nullable=False),
                sa.Column("venue_id", sa.Text(), nullable=False),
                sa.Column("kind", sa.Text(), nullable=False),
                _time("started_at"),
                _time("finished_at", True),
                sa.Column("status", sa.Text(), nullable=False),
                sa.Column("records_accepted", sa.Integer(), server_default=sa.text("0"), nullable=False),
                sa.Column("records_rejected", sa.Integer(), server_default=sa.text("0"), nullable=False),
                sa.Column("error", sa.Text(), nullable=True),
            ),
            (("ix_{t}__venue_id_kind_started_at", ("venue_id", "kind", "started_at"), "btree"),),
            foreign_keys=(("fk_{t}__venue_id__venues", "venue_id", "venues(id)"),),
            checks=(("ck_{t}__status", "status IN ('running', 'succeeded', 'partial', 'failed')"),),
            identity="id",
        ),
    ]


RUN_FK = "fk_rejected_records__run_id__collection_runs"


def _x(sql: str, **params: object) -> None:
    # Table, column and partition names below come from the constants in this file, never from input.
    op.get_bind().execute(sa.text(sql), params)


def _set_aside(t: _Table, pk_name: str) -> str:
    """Rename the table out of the way and free every name the replacement needs; returns the new name."""
    aside = f"{t.name}_old"
    _x(f"ALTER TABLE {t.name} RENAME TO {aside}")
    _x(f"ALTER TABLE {aside} DROP CONSTRAINT {pk_name}")
    for name, _cols, _method in t.indexes:
        _x(f"DROP INDEX {name.format(t=t.name)}")
    for name, _col, _ref in t.foreign_keys:
        _x(f"ALTER TABLE {aside} DROP CONSTRAINT {name.format(t=t.name)}")
    if t.identity:
        # Frees the sequence name for the new table's identity; the copy restarts it at max(id) + 1.
        _x(f"ALTER TABLE {aside} ALTER COLUMN {t.identity} DROP IDENTITY")
    return aside


def _create(t: _Table, *, partitioned: bool) -> None:
    args: list[sa.SchemaItem] = [*t.columns]
    args.append(sa.PrimaryKeyConstraint(*(t.pk if partitioned else t.old_pk), name=f"pk_{t.name}"))
    args += [sa.CheckConstraint(cond, name=name.format(t=t.name)) for name, cond in t.checks]
    kw = {"postgresql_partition_by": f"RANGE ({t.key})"} if partitioned else {}
    op.create_table(t.name, *args, **kw)
    for name, col, ref in t.foreign_keys:
        _x(f"ALTER TABLE {t.name} ADD CONSTRAINT {name.format(t=t.name)} FOREIGN KEY ({col}) REFERENCES {ref}")
    for name, cols, method in t.indexes:
        op.create_index(name.format(t=t.name), t.name, list(cols), unique=False, postgresql_using=method)


def _copy_back(t: _Table, aside: str) -> None:
    columns = ", ".join(c.name for c in t.columns)
    _x(f"INSERT INTO {t.name} ({columns}) SELECT {columns} FROM {aside}")  # noqa: S608
    if t.identity:
        # The new identity starts at 1; continue after the copied ids.
        seq = f"pg_get_serial_sequence('{t.name}', '{t.identity}')"
        _x(f"SELECT setval({seq}, COALESCE(max({t.identity}), 0) + 1, false) FROM {t.name}")  # noqa: S608
    _x(f"DROP TABLE {aside}")


def _partition_days(t: _Table, aside: str) -> list[date]:
    today = datetime.now(UTC).date()
    window = {today + timedelta(days=n) for n in range(-1, PRECREATE_DAYS + 1)}
    days_sql = f"SELECT DISTINCT ({t.key} AT TIME ZONE 'UTC')::date FROM {aside}"  # noqa: S608
    in_data = op.get_bind().scalars(sa.text(days_sql))
    return sorted(window | set(in_data))


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
    for name in LATEST_VIEWS:
        _x(f"DROP VIEW {name}")
    _x(f"ALTER TABLE rejected_records DROP CONSTRAINT {RUN_FK}")
    for t in _tables():
        aside = _set_aside(t, f"pk_{t.name}")
        _create(t, partitioned=True)
        _create_partitions(t, _partition_days(t, aside))
        _copy_back(t, aside)
    for name, query in LATEST_VIEWS.items():
        _x(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    """Back to plain tables: every partition's rows (the default's included) are copied into one table."""
    for name in LATEST_VIEWS:
        _x(f"DROP VIEW {name}")
    for t in _tables():
        aside = _set_aside(t, f"pk_{t.name}")
        _create(t, partitioned=False)
        _copy_back(t, aside)  # dropping the partitioned parent drops its partitions
    # NOT VALID: runs dropped by retention leave rejected records without their run; new rows are checked.
    _x(
        f"ALTER TABLE rejected_records ADD CONSTRAINT {RUN_FK} FOREIGN KEY (run_id)"
        " REFERENCES collection_runs(id) NOT VALID"
    )
    for name, query in LATEST_VIEWS.items():
        _x(f"CREATE VIEW {name} AS {query}")
