"""Daily partitions of the history tables: created ahead, strays routed home, expired ones dropped.

Planning (which days, which names, what has expired) is plain functions; the SQL runs in short
transactions under an advisory lock, so replicas running the job at once take turns and the second one
finds nothing to do. Never deletes history row by row: retention detaches and drops whole
partitions (docs/schema.md, "History at volume").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Connection, Engine, TextClause, text

log = logging.getLogger(__name__)

# Any constant; only has to differ from the migration lock (migrations/env.py) and be shared by replicas.
PARTITION_LOCK_ID = 7_351_204_118
# A partition waiting for a lock held by a long query must give up (and retry next run) rather than
# queue every writer of the table behind its ACCESS EXCLUSIVE request.
LOCK_TIMEOUT = "5s"
_PARTITION = re.compile(r"^(?P<parent>[a-z_]+?)_(?:p(?P<day>\d{8})|default)$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_BOUND = re.compile(r"^\d{4}-\d{2}-\d{2} 00:00:00\+00$")


@dataclass(frozen=True, slots=True)
class HistoryTable:
    """A table partitioned by day on ``key``; ``head_kind`` names the snapshot_heads rows that point
    into it (their rows survive retention), ``head_account`` the column such a head's account matches."""

    name: str
    key: str
    retention: str  # which RetentionPolicy field applies
    head_kind: str | None = None
    head_account: str = "account_id"


HISTORY_TABLES: tuple[HistoryTable, ...] = (
    HistoryTable("position_snapshots", "collected_at", "snapshots_days", "positions"),
    HistoryTable("balance_snapshots", "collected_at", "snapshots_days", "balances"),
    HistoryTable(
        "custody_balance_snapshots", "collected_at", "snapshots_days", "custody_balances", "custodian_account_id"
    ),
    HistoryTable("price_snapshots", "collected_at", "snapshots_days"),
    HistoryTable("collection_runs", "started_at", "collection_runs_days"),
    HistoryTable("rejected_records", "rejected_at", "rejected_records_days"),
    HistoryTable("evaluations", "started_at", "evaluations_days"),
    HistoryTable("account_risk_history", "recorded_at", "account_risk_history_days"),
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days of history kept per table class, and days of partitions created ahead of today."""

    precreate_days: int = 7
    snapshots_days: int = 30
    collection_runs_days: int = 90
    rejected_records_days: int = 90
    evaluations_days: int = 90
    account_risk_history_days: int = 400  # a year of risk figures plus a margin: year-on-year questions
    # Delivered outbox rows and their attempts (not partitioned: purged in batches, services/notifications/
    # retention.py); the notification_deliveries record of each delivery is kept.
    delivered_notifications_days: int = 30

    def days_for(self, table: HistoryTable) -> int:
        days: int = getattr(self, table.retention)
        return days


@dataclass(slots=True)
class MaintenanceReport:
    table: str
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_from_default: int = 0  # stray rows moved into a partition created for their day
    kept_for_heads: int = 0  # rows of dropped partitions kept (in the default) because a head points at them
    stray_rows: int = 0  # rows still in the default partition that belong in a daily partition


# --- planning (pure) ------------------------------------------------------------------------------


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def default_partition(table: str) -> str:
    return f"{table}_default"


def is_partition(name: str, parents: Iterable[str]) -> bool:
    """True for a daily or default partition of one of ``parents`` (so schema checks can ignore it)."""
    match = _PARTITION.match(name)
    return match is not None and match["parent"] in set(parents)


def partition_day(table: str, name: str) -> date | None:
    """The day a daily partition of ``table`` covers; None for the default partition or a foreign name."""
    prefix = f"{table}_p"
    if not name.startswith(prefix) or not name[len(prefix) :].isdigit() or len(name) != len(prefix) + 8:
        return None
    suffix = name[len(prefix) :]
    return date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:]))


def partition_days(table: str, names: Iterable[str]) -> list[date]:
    """The days covered by the daily partitions among ``names`` (the default partition has no day)."""
    return sorted(d for d in (partition_day(table, n) for n in names) if d is not None)


def days_to_ensure(today: date, precreate_days: int) -> list[date]:
    """Yesterday (late rows of a run that started before midnight) through ``precreate_days`` ahead."""
    return [today + timedelta(days=n) for n in range(-1, precreate_days + 1)]


def retention_cutoff(today: date, retention_days: int) -> date:
    """The oldest day kept. A day is dropped only when all of it is older than ``retention_days``; never
    yesterday or today, whatever the setting, because the job keeps those partitions."""
    if retention_days >= (today - date.min).days:
        return date.min  # "keep everything" settings must not overflow the calendar
    return min(today - timedelta(days=retention_days), today - timedelta(days=1))


def expired(days: Iterable[date], cutoff: date) -> list[date]:
    return sorted(d for d in days if d < cutoff)


def bounds(day: date) -> tuple[str, str]:
    """Range bounds of a day's partition in UTC, as timestamptz literals."""
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


# --- SQL ------------------------------------------------------------------------------------------


def _sql(template: str, **names: str) -> TextClause:
    """SQL with table names, column names and partition bounds filled in (none of which can be a bound
    parameter). They come from HISTORY_TABLES and dates, never from input, and are checked anyway."""
    for name in names.values():
        if not (_IDENTIFIER.match(name) or _BOUND.match(name)):
            raise ValueError(f"not a plain SQL identifier or partition bound: {name!r}")
    return text(template.format(**names))


def maintain(engine: Engine, table: HistoryTable, policy: RetentionPolicy, *, today: date) -> MaintenanceReport:
    """Ensure the partitions around ``today``, drop the expired ones, count strays."""
    report = MaintenanceReport(table.name)
    cutoff = retention_cutoff(today, policy.days_for(table))
    with engine.begin() as conn:
        _lock(conn)
        existing = partitions_of(conn, table.name)
        for day in days_to_ensure(today, policy.precreate_days):
            if partition_name(table.name, day) not in existing:
                report.moved_from_default += create_partition(conn, table, day)
                report.created.append(partition_name(table.name, day))
    # One transaction per dropped partition: DETACH holds ACCESS EXCLUSIVE on the parent until commit, so
    # writers wait for one partition's drop (tens of ms), not for a whole catch-up of months.
    for day in expired(partition_days(table.name, existing), cutoff):
        with engine.begin() as conn:
            _lock(conn)
            if partition_name(table.name, day) not in partitions_of(conn, table.name):
                continue  # another replica dropped it while we waited for the lock
            report.kept_for_heads += drop_partition(conn, table, day)
            report.dropped.append(partition_name(table.name, day))
    with engine.begin() as conn:
        _lock(conn)
        _purge_default(conn, table, cutoff)
        report.stray_rows = stray_rows(conn, table, cutoff)
    if report.moved_from_default:
        log.warning(
            "moved %d rows of %s from the default partition into new daily partitions",
            report.moved_from_default,
            table.name,
        )
    if report.stray_rows:
        log.warning(
            "%d rows of %s are in the default partition: no daily partition covers their time",
            report.stray_rows,
            table.name,
        )
    return report


def _lock(conn: Connection) -> None:
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PARTITION_LOCK_ID})


def partitions_of(conn: Connection, table: str) -> set[str]:
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": table},
    )
    return {str(name) for (name,) in rows}


def create_partition(conn: Connection, table: HistoryTable, day: date) -> int:
    """Create ``day``'s partition; rows already in the default partition for that day move into it.

    Built as a plain table and attached, rather than ``CREATE TABLE ... PARTITION OF``: ATTACH takes only
    SHARE UPDATE EXCLUSIVE on the parent, so writers of today's partition are not blocked, and it lets
    stray rows move out of the default first (attaching fails while the default holds rows of the day).
    Returns the number of rows moved.
    """
    child, default = partition_name(table.name, day), default_partition(table.name)
    low, high = bounds(day)
    names = {"parent": table.name, "child": child, "default": default, "key": table.key, "low": low, "high": high}
    conn.execute(_sql("CREATE TABLE {child} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)", **names))
    moved = conn.execute(
        _sql(
            "WITH moved AS (DELETE FROM {default} WHERE {key} >= CAST(:low AS timestamptz)"
            " AND {key} < CAST(:high AS timestamptz) RETURNING *)"
            " INSERT INTO {child} SELECT * FROM moved",
            **names,
        ),
        {"low": low, "high": high},
    ).rowcount
    conn.execute(_sql("ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES FROM ('{low}') TO ('{high}')", **names))
    return int(moved or 0)


def drop_partition(conn: Connection, table: HistoryTable, day: date) -> int:
    """Detach and drop ``day``'s partition, keeping the rows a snapshot head points at.

    Plain DETACH inside the transaction (not CONCURRENTLY: that cannot run in a transaction block and is
    refused while the table has a default partition), so detach, the head-row copy and the drop commit
    or roll back together. The kept rows are re-inserted through the parent; with their day's range gone
    they land in the default partition, at their original ``collected_at``, so the ``*_latest`` views
    still find them. Returns the number of rows kept.
    """
    names = {"parent": table.name, "child": partition_name(table.name, day), "key": table.key}
    conn.execute(_sql("ALTER TABLE {parent} DETACH PARTITION {child}", **names))
    kept = 0
    if table.head_kind is not None:
        kept = conn.execute(
            _sql(
                # Heads are few (one per account); filtering them to the day first keeps this an index
                # probe per head instead of a scan of the whole detached day.
                "INSERT INTO {parent} SELECT s.* FROM snapshot_heads h JOIN {child} s"
                " ON h.account_id = s.{account} AND h.collected_at = s.{key}"
                " WHERE h.kind = :kind AND h.collected_at >= CAST(:low AS timestamptz)"
                " AND h.collected_at < CAST(:high AS timestamptz)",
                account=table.head_account,
                **names,
            ),
            {"kind": table.head_kind, "low": bounds(day)[0], "high": bounds(day)[1]},
        ).rowcount
    conn.execute(_sql("DROP TABLE {child}", **names))
    return int(kept or 0)


def _purge_default(conn: Connection, table: HistoryTable, cutoff: date) -> None:
    """Drop expired rows from the (small) default partition: kept head rows whose head has moved on,
    and late strays older than the retention. The default is the one place a DELETE is cheap."""
    template = "DELETE FROM {default} d WHERE d.{key} < CAST(:cutoff AS timestamptz)"
    if table.head_kind is not None:
        template += (
            " AND NOT EXISTS (SELECT 1 FROM snapshot_heads h WHERE h.kind = :kind"
            " AND h.account_id = d.{account} AND h.collected_at = d.{key})"
        )
    conn.execute(
        _sql(template, default=default_partition(table.name), key=table.key, account=table.head_account),
        {"cutoff": bounds(cutoff)[0], "kind": table.head_kind},
    )


def stray_rows(conn: Connection, table: HistoryTable, cutoff: date) -> int:
    """Rows in the default partition inside the retention window or in the future: they are there only
    because their day's partition was missing when they were written."""
    count = conn.scalar(
        _sql(
            "SELECT count(*) FROM {default} WHERE {key} >= CAST(:cutoff AS timestamptz)",
            default=default_partition(table.name),
            key=table.key,
        ),
        {"cutoff": bounds(cutoff)[0]},
    )
    return int(count or 0)
