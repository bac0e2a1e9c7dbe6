"""Partition planning: names, the window created ahead, what retention may drop."""

from __future__ import annotations

from datetime import date

import pytest

from models.orm import Base
from services import partitions
from services.partitions import (
    HISTORY_TABLES,
    RetentionPolicy,
    bounds,
    days_to_ensure,
    expired,
    is_partition,
    partition_day,
    partition_name,
    retention_cutoff,
)

TODAY = date(2026, 11, 22)


def test_history_tables_are_exactly_the_tables_the_models_partition() -> None:
    declared = {
        name: table.dialect_options["postgresql"]["partition_by"]
        for name, table in Base.metadata.tables.items()
        if table.dialect_options["postgresql"]["partition_by"]
    }
    assert declared == {t.name: f"RANGE ({t.key})" for t in HISTORY_TABLES}


def test_partition_names_round_trip_to_their_day() -> None:
    name = partition_name("position_snapshots", TODAY)
    assert name == "position_snapshots_p20261122"
    assert partition_day("position_snapshots", name) == TODAY
    assert partition_day("position_snapshots", "position_snapshots_default") is None
    assert partition_day("position_snapshots", "balance_snapshots_p20261122") is None


def test_only_daily_and_default_partitions_of_known_parents_count_as_partitions() -> None:
    parents = {"position_snapshots", "rejected_records"}
    assert is_partition("position_snapshots_p20261122", parents)
    assert is_partition("rejected_records_default", parents)
    assert not is_partition("position_snapshots", parents)
    assert not is_partition("alerts_default", parents)  # not a partitioned table
    assert not is_partition("position_snapshots_p2026112", parents)  # not a day


def test_window_runs_from_yesterday_to_precreate_days_ahead() -> None:
    days = days_to_ensure(TODAY, 3)
    assert days == [date(2026, 11, 21), TODAY, date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)]


def test_a_day_expires_only_when_all_of_it_is_older_than_the_retention() -> None:
    cutoff = retention_cutoff(TODAY, 30)
    assert cutoff == date(2026, 10, 23)
    days = [date(2026, 10, 21), date(2026, 10, 22), date(2026, 10, 23), TODAY]
    assert expired(days, cutoff) == [date(2026, 10, 21), date(2026, 10, 22)]


def test_retention_never_reaches_the_partitions_the_job_keeps() -> None:
    assert retention_cutoff(TODAY, 1) == date(2026, 11, 21)
    assert expired(days_to_ensure(TODAY, 7), retention_cutoff(TODAY, 1)) == []


def test_a_retention_longer_than_the_calendar_keeps_everything() -> None:
    assert retention_cutoff(TODAY, 10**9) == date.min
    assert expired([date(1, 1, 2), TODAY], retention_cutoff(TODAY, 10**9)) == []


def test_each_table_class_has_its_own_retention() -> None:
    policy = RetentionPolicy(
        snapshots_days=30,
        collection_runs_days=60,
        rejected_records_days=90,
        evaluations_days=45,
        account_risk_history_days=400,
    )
    by_table = {t.name: policy.days_for(t) for t in HISTORY_TABLES}
    assert by_table["custody_balance_snapshots"] == 30
    assert by_table["collection_runs"] == 60
    assert by_table["rejected_records"] == 90
    assert by_table["evaluations"] == 45
    assert by_table["account_risk_history"] == 400


def test_bounds_are_utc_midnights() -> None:
    assert bounds(TODAY) == ("2026-11-22 00:00:00+00", "2026-11-23 00:00:00+00")


def test_sql_names_must_be_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        partitions._sql("DROP TABLE {child}", child="x; DROP TABLE alerts")
