"""History partitions on the real schema: routing through the write path, the maintenance job, retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from jobs.maintain_partitions import MaintainPartitions
from services import database, metrics, partitions
from services.app import Monitor
from services.config import Settings
from services.partitions import HISTORY_TABLES, HistoryTable, RetentionPolicy, partition_name
from services.snapshot_store import AccountSnapshot, RunRecord, SnapshotStore
from tests.conftest import throwaway_database
from tests.ecosystem_fixtures import wait_until

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
POSITIONS = next(t for t in HISTORY_TABLES if t.name == "position_snapshots")
KEEP_ALL = RetentionPolicy(
    snapshots_days=100_000,
    collection_runs_days=100_000,
    rejected_records_days=100_000,
    evaluations_days=100_000,
    account_risk_history_days=100_000,
)


def at(day: date, hour: int = 12, second: float = 0) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture(scope="module")
def private_engine(pg_server_url: str) -> Iterator[Engine]:
    """A database of its own: retention drops partitions other tests' rows live in."""
    with throwaway_database(pg_server_url) as url:
        database.upgrade(url)
        eng = database.make_engine(url, pool_size=3)
        yield eng
        eng.dispose()


def _store(engine: Engine) -> tuple[SnapshotStore, str]:
    store = SnapshotStore(engine)
    venue = f"ex-{uuid.uuid4().hex[:8]}"
    store.ensure_venue(venue, "exchange")
    return store, venue


def _write(store: SnapshotStore, venue: str, account_id: int, when: datetime, qty: str = "1") -> None:
    row = ("BTC-USDT", Decimal(qty), Decimal("100"), Decimal("101"), None, when)
    run = RunRecord("collect_positions", venue, "positions", when - timedelta(milliseconds=5), when)
    store.write_snapshots(run, when, [AccountSnapshot(account_id, when, [row])])


def _partition_of(engine: Engine, account_id: int) -> dict[datetime, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT collected_at, tableoid::regclass::text FROM position_snapshots WHERE account_id = :a"),
            {"a": account_id},
        )
        return {when: str(table) for when, table in rows}


def _partitions(engine: Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return partitions.partitions_of(conn, table)


def test_history_tables_are_range_partitioned_by_their_time_column(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_partitioned_table p"
                " JOIN pg_class c ON c.oid = p.partrelid"
            )
        )
        found = {str(name): str(key) for name, key in rows}
    assert found == {t.name: f"RANGE ({t.key})" for t in HISTORY_TABLES}


def test_a_migrated_database_has_partitions_around_today_and_a_default(engine: Engine) -> None:
    for table in HISTORY_TABLES:
        names = _partitions(engine, table.name)
        for day in partitions.days_to_ensure(TODAY, 7):
            assert partition_name(table.name, day) in names
        assert partitions.default_partition(table.name) in names


def test_the_write_path_routes_rows_to_their_days_partition_across_midnight(engine: Engine) -> None:
    store, venue = _store(engine)
    [account] = store.account_ids(venue, ["a"]).values()
    tomorrow = TODAY + timedelta(days=1)
    before, after = at(tomorrow, 0) - timedelta(milliseconds=500), at(tomorrow, 0)
    _write(store, venue, account, before)
    _write(store, venue, account, after)
    assert _partition_of(engine, account) == {
        before: partition_name("position_snapshots", TODAY),
        after: partition_name("position_snapshots", tomorrow),
    }
    with engine.connect() as conn:
        runs = conn.execute(
            text("SELECT started_at, tableoid::regclass::text FROM collection_runs WHERE venue_id = :v"), {"v": venue}
        )
        assert {str(table) for _, table in runs} == {
            partition_name("collection_runs", TODAY),  # the second run started 5 ms before midnight
        }
        quantity = conn.scalar(text("SELECT quantity FROM position_latest WHERE account_id = :a"), {"a": account})
    assert quantity == Decimal("1")


def test_a_row_without_a_partition_lands_in_the_default_and_is_moved_when_its_day_is_created(
    private_engine: Engine,
) -> None:
    store, venue = _store(private_engine)
    [account] = store.account_ids(venue, ["stray"]).values()
    far = TODAY + timedelta(days=40)
    _write(store, venue, account, at(far))
    assert _partition_of(private_engine, account) == {at(far): "position_snapshots_default"}

    report = partitions.maintain(private_engine, POSITIONS, KEEP_ALL, today=TODAY)
    assert report.stray_rows == 1  # reported (and logged) while no partition covers it

    report = partitions.maintain(private_engine, POSITIONS, KEEP_ALL, today=far)
    assert report.moved_from_default == 1
    assert report.stray_rows == 0
    assert _partition_of(private_engine, account) == {at(far): partition_name("position_snapshots", far)}


def test_maintenance_creates_future_partitions_once_even_when_run_concurrently(engine: Engine) -> None:
    later = TODAY + timedelta(days=200)
    policy = RetentionPolicy(precreate_days=3, snapshots_days=100_000)
    expected = {partition_name("price_snapshots", d) for d in partitions.days_to_ensure(later, 3)}
    price = next(t for t in HISTORY_TABLES if t.name == "price_snapshots")

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: partitions.maintain(engine, price, policy, today=later), range(2)))

    first, second = sorted((r.created for r in reports), key=len, reverse=True)
    assert set(first) == expected
    assert second == []  # the advisory lock serialised them: the second found them made
    assert expected <= _partitions(engine, "price_snapshots")
    assert partitions.maintain(engine, price, policy, today=later).created == []


def test_retention_drops_old_days_keeps_newer_ones_and_the_rows_heads_point_at(private_engine: Engine) -> None:
    store, venue = _store(private_engine)
    ids = store.account_ids(venue, ["active", "silent"])
    active, silent = ids["active"], ids["silent"]
    # "silent"'s venue stopped reporting after today: its latest book must outlive the retention.
    _write(store, venue, silent, at(TODAY - timedelta(days=1)), qty="5")
    _write(store, venue, silent, at(TODAY), qty="7")
    _write(store, venue, active, at(TODAY), qty="1")
    _write(store, venue, active, at(TODAY + timedelta(days=6)), qty="2")
    later = TODAY + timedelta(days=35)  # retention 30 days: today + 5 is the oldest day kept
    policy = RetentionPolicy(snapshots_days=30, collection_runs_days=30, rejected_records_days=30)

    report = partitions.maintain(private_engine, POSITIONS, policy, today=later)

    names = _partitions(private_engine, "position_snapshots")
    dropped = {partition_name("position_snapshots", TODAY + timedelta(days=n)) for n in range(-1, 5)}
    kept = {partition_name("position_snapshots", TODAY + timedelta(days=n)) for n in range(5, 8)}
    assert dropped <= set(report.dropped)
    assert not dropped & names
    assert kept <= names
    assert report.kept_for_heads == 1
    assert _partition_of(private_engine, active) == {
        at(TODAY + timedelta(days=6)): partition_name("position_snapshots", TODAY + timedelta(days=6))
    }
    assert _partition_of(private_engine, silent) == {at(TODAY): "position_snapshots_default"}
    with private_engine.connect() as conn:
        latest = dict(
            conn.execute(
                text("SELECT account_id, quantity FROM position_latest WHERE account_id IN (:a, :s)"),
                {"a": active, "s": silent},
            ).all()
        )
    assert latest == {active: Decimal("2"), silent: Decimal("7")}
    assert report.stray_rows == 0  # a kept head row is not a stray

    # Once the silent account reports again, its old row is expired history and goes on the next run.
    _write(store, venue, silent, at(TODAY + timedelta(days=7)), qty="8")
    partitions.maintain(private_engine, POSITIONS, policy, today=later)
    assert set(_partition_of(private_engine, silent).values()) == {
        partition_name("position_snapshots", TODAY + timedelta(days=7))
    }


def test_the_job_maintains_every_table_and_isolates_a_failing_one(private_engine: Engine) -> None:
    broken = HistoryTable("no_such_table", "collected_at", "snapshots_days")
    later = TODAY + timedelta(days=400)
    job = MaintainPartitions(private_engine, KEEP_ALL, clock=lambda: at(later), tables=(broken, *HISTORY_TABLES))
    failures = metrics.REGISTRY.get_sample_value(
        "risk_monitor_partition_maintenance_failures_total", {"table": "no_such_table"}
    )

    job()

    assert (
        metrics.REGISTRY.get_sample_value(
            "risk_monitor_partition_maintenance_failures_total", {"table": "no_such_table"}
        )
        == (failures or 0) + 1
    )
    for table in HISTORY_TABLES:
        assert partition_name(table.name, later + timedelta(days=7)) in _partitions(private_engine, table.name)


def test_the_monitor_runs_partition_maintenance_at_start(private_engine: Engine) -> None:
    url = private_engine.url.render_as_string(hide_password=False)
    ahead = partition_name("rejected_records", TODAY + timedelta(days=12))
    monitor = Monitor(Settings(database_url=url, http_port=0, grpc_port=0, retention_precreate_days=12))
    monitor.start()
    try:
        assert monitor.scheduler is not None
        assert monitor.scheduler.get_job("maintain_partitions") is not None
        wait_until(lambda: ahead in _partitions(private_engine, "rejected_records"), timeout_s=20)
    finally:
        monitor.stop()


def test_evaluation_history_expires_by_whole_days_with_its_own_retention(private_engine: Engine) -> None:
    evaluations, risk = (
        next(t for t in HISTORY_TABLES if t.name == n) for n in ("evaluations", "account_risk_history")
    )
    later = TODAY + timedelta(days=60)
    with private_engine.begin() as conn:
        for day in (TODAY, later):
            evaluation_id = conn.scalar(
                text(
                    "INSERT INTO evaluations (path, started_at, status)"
                    " VALUES ('scheduled', :at, 'succeeded') RETURNING id"
                ),
                {"at": at(day)},
            )
            conn.execute(
                text(
                    "INSERT INTO account_risk_history (account_id, recorded_at, evaluation_id, gross, net, equity,"
                    " leverage, unrealized_pnl, daily_pnl, drawdown) VALUES (987654, :at, :e, 1, 1, 1, 1, 0, 0, 0)"
                ),
                {"at": at(day), "e": evaluation_id},
            )
    # 30 days of evaluations, 90 of risk history: at later + 1, TODAY has expired for the first only.
    policy = RetentionPolicy(precreate_days=1, evaluations_days=30, account_risk_history_days=90)
    dropped = {t.name: partitions.maintain(private_engine, t, policy, today=later + timedelta(days=1)).dropped
               for t in (evaluations, risk)}  # fmt: skip

    assert partition_name("evaluations", TODAY) in dropped["evaluations"]
    assert partition_name("account_risk_history", TODAY) not in dropped["account_risk_history"]
    with private_engine.connect() as conn:
        kept = conn.execute(text("SELECT started_at FROM evaluations WHERE started_at IN (:a, :b)"),
                            {"a": at(TODAY), "b": at(later)}).scalars().all()  # fmt: skip
        risk_rows = conn.scalar(text("SELECT count(*) FROM account_risk_history WHERE account_id = 987654"))
    assert kept == [at(later)]
    assert risk_rows == 2
