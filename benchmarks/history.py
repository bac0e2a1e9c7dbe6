"""History benchmark: a year of hourly position snapshots in daily partitions, measured in one run.

    .venv/bin/python benchmarks/history.py [--rows 5000000] [--days 365] [--positions 5] [--queries 200]

Builds the history server-side (INSERT ... SELECT generate_series, one day per statement), then prints:
- ingest with the production indexes (PK + BRIN) vs the same table shape without indexes: the real write
  path (SnapshotStore.write_snapshots) and bare binary COPY, plus server-side INSERT ... SELECT;
- a one-account, one-hour query: p50/p99 over random picks, with partition pruning vs without;
- retention of one day: detach + drop of its partition vs DELETE of the same rows (and the VACUUM after);
- the EXPLAIN of one pick (docs/schema.md quotes it);
- the evaluation history (``account_risk_history`` hourly per account, ``evaluations`` one row a minute, a
  year of each in daily partitions): the same one-account one-hour query with pruning vs without, one hour
  of ``evaluations``, and both plans. ``--only-evaluation-history`` runs just this part.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from _support import benchmark_database
from sqlalchemy import Engine, text

from services import database, partitions
from services.snapshot_store import SNAPSHOT_TABLES, AccountSnapshot, RunRecord, SnapshotStore

POSITIONS = next(t for t in partitions.HISTORY_TABLES if t.name == "position_snapshots")
NOINDEX = "bench_position_snapshots_noindex"
GENERATE = """
    INSERT INTO {table} (account_id, collected_at, symbol, quantity, avg_price, mark_price, realized_pnl,
                         observed_at, run_id)
    SELECT a, ts, 'SYM' || p || '-USDT', ((a * 7 + p) % 1000 - 500) + 0.125, 100 + p, 101.25 + p, NULL, ts, 0
    FROM generate_series(CAST(:low AS timestamptz), CAST(:high AS timestamptz) - interval '1 hour',
                         interval '1 hour') AS ts,
         generate_series(1, :accounts) AS a,
         generate_series(0, :positions - 1) AS p
"""
ONE_HOUR = (
    "SELECT symbol, quantity, mark_price, collected_at FROM position_snapshots"
    " WHERE account_id = %s AND collected_at >= %s AND collected_at < %s"
)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def generate_day(engine: Engine, table: str, day: date, accounts: int, positions: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(GENERATE.format(table=table)),
            {
                "low": midnight(day),
                "high": midnight(day + timedelta(days=1)),
                "accounts": accounts,
                "positions": positions,
            },
        )


def build_history(engine: Engine, first: date, last: date, accounts: int, positions: int) -> int:
    """Partitions for every day, then one INSERT ... SELECT per day; returns the rows written."""
    with engine.begin() as conn:
        existing = partitions.partitions_of(conn, POSITIONS.name)
        day = first
        while day <= last:
            if partitions.partition_name(POSITIONS.name, day) not in existing:
                partitions.create_partition(conn, POSITIONS, day)
            day += timedelta(days=1)
    day, rows, started = first, 0, time.perf_counter()
    while day <= last:
        generate_day(engine, POSITIONS.name, day, accounts, positions)
        rows += 24 * accounts * positions
        day += timedelta(days=1)
    elapsed = time.perf_counter() - started
    days = (last - first).days + 1
    print(f"built {rows:,} rows over {days} days in {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s, INSERT ... SELECT)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ANALYZE {POSITIONS.name}"))
    return rows


def create_noindex_twin(engine: Engine, days: list[date]) -> None:
    """Same columns, same daily partitions, no primary key and no BRIN: the "without indexes" baseline."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {NOINDEX} (LIKE {POSITIONS.name}) PARTITION BY RANGE (collected_at)"))
        for day in days:
            low, high = partitions.bounds(day)
            conn.execute(
                text(
                    f"CREATE TABLE {NOINDEX}_p{day:%Y%m%d} PARTITION OF {NOINDEX}"
                    f" FOR VALUES FROM ('{low}') TO ('{high}')"
                )
            )
        conn.execute(text(f"CREATE TABLE {NOINDEX}_default PARTITION OF {NOINDEX} DEFAULT"))


def build_batch(accounts: int, positions: int, observed_at: datetime) -> list[AccountSnapshot]:
    return [
        AccountSnapshot(
            account_id,
            observed_at,
            [
                (f"SYM{k}-USDT", Decimal(f"{(account_id * 7 + k) % 1000 - 500}.125"), Decimal(f"{100 + k}"),
                 Decimal(f"{101 + k}.25"), None, observed_at)
                for k in range(positions)
            ],
        )
        for account_id in range(1, accounts + 1)
    ]  # fmt: skip


def copy_batch(engine: Engine, table: str, batch: list[AccountSnapshot], at: datetime) -> None:
    _, columns, types = SNAPSHOT_TABLES["positions"]
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for account in batch:
                for row in account.rows:
                    copy.write_row((account.account_id, at, *row, 0))


def measure_ingest(engine: Engine, today: date, accounts: int, positions: int, repeats: int) -> None:
    store = SnapshotStore(engine)
    store.ensure_venue("bench-exchange", "exchange")
    batch = build_batch(accounts, positions, midnight(today))
    rows = accounts * positions
    second = iter(range(1, 80_000))

    def at() -> datetime:
        return midnight(today) + timedelta(seconds=next(second))

    def write_path() -> None:
        when = at()
        store.write_snapshots(RunRecord("collect_positions", "bench-exchange", "positions", when, when), when, batch)

    samples: dict[str, list[float]] = {"path": [], "copy": [], "noindex": []}
    copy_batch(engine, POSITIONS.name, batch, at())  # warm-up
    copy_batch(engine, NOINDEX, batch, at())
    for _ in range(repeats):  # interleaved: all three see the same machine load
        samples["path"].append(timed(write_path))
        samples["copy"].append(timed(lambda: copy_batch(engine, POSITIONS.name, batch, at())))
        samples["noindex"].append(timed(lambda: copy_batch(engine, NOINDEX, batch, at())))
    rate = {k: rows / statistics.median(v) for k, v in samples.items()}
    print(f"\ningest, batch of {rows:,} rows ({accounts:,} accounts x {positions}), median of {repeats}:")
    print(f"  write path, production indexes:    {rate['path']:>10,.0f} rows/s")
    print(f"  bare COPY, production indexes:     {rate['copy']:>10,.0f} rows/s")
    print(f"  bare COPY, no indexes:             {rate['noindex']:>10,.0f} rows/s")
    print(f"  ratio COPY indexed / no indexes:   {rate['copy'] / rate['noindex']:.2f}x")
    print(f"  ratio write path / no-index COPY:  {rate['path'] / rate['noindex']:.2f}x")


def measure_bulk_insert(engine: Engine, days: list[date], accounts: int, positions: int) -> None:
    rows = 24 * accounts * positions
    indexed, bare = [], []
    for day in days:  # fresh days of the precreated window, interleaved
        indexed.append(timed(lambda d=day: generate_day(engine, POSITIONS.name, d, accounts, positions)))
        bare.append(timed(lambda d=day: generate_day(engine, NOINDEX, d, accounts, positions)))
    rate_indexed, rate_bare = rows / statistics.median(indexed), rows / statistics.median(bare)
    print(f"\nserver-side INSERT ... SELECT, {rows:,} rows per day, median of {len(days)} days:")
    print(f"  production indexes: {rate_indexed:>10,.0f} rows/s")
    print(f"  no indexes:         {rate_bare:>10,.0f} rows/s")
    print(f"  ratio:              {rate_indexed / rate_bare:.2f}x")


def measure_query(engine: Engine, first: date, days: int, accounts: int, picks: int) -> tuple[int, datetime]:
    rng = random.Random(8)
    start = midnight(first)
    chosen = [(rng.randint(1, accounts), start + timedelta(hours=rng.randrange(days * 24))) for _ in range(picks)]
    results: dict[str, list[float]] = {"pruned": [], "unpruned": []}
    returned = 0
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for mode, setting in (("pruned", "on"), ("unpruned", "off")):
            cursor.execute(f"SET enable_partition_pruning = {setting}")
            cursor.execute(ONE_HOUR, (chosen[0][0], chosen[0][1], chosen[0][1] + timedelta(hours=1)))  # warm
            cursor.fetchall()
            for account, hour in chosen:
                started = time.perf_counter()
                cursor.execute(ONE_HOUR, (account, hour, hour + timedelta(hours=1)))
                got = cursor.fetchall()
                results[mode].append((time.perf_counter() - started) * 1000)
                returned += len(got) if mode == "pruned" else 0
        cursor.execute("SET enable_partition_pruning = on")
        conn.rollback()
    p = {mode: (percentile(v, 0.5), percentile(v, 0.99)) for mode, v in results.items()}
    print(f"\none account, one hour, {picks} random picks ({returned / picks:.1f} rows each):")
    print(f"  with partition pruning:    p50 {p['pruned'][0]:7.2f} ms   p99 {p['pruned'][1]:7.2f} ms")
    print(f"  pruning off (baseline):    p50 {p['unpruned'][0]:7.2f} ms   p99 {p['unpruned'][1]:7.2f} ms")
    print(f"  ratio p50 pruned / off:    {p['pruned'][0] / p['unpruned'][0]:.3f}x")
    return chosen[0]


def explain(engine: Engine, account: int, hour: datetime) -> None:
    """The plan of one pick as the driver sends it (custom plan: pruned while planning), and as a prepared
    statement's generic plan (pruned when it runs: "Subplans Removed")."""
    params = (account, hour, hour + timedelta(hours=1))
    with engine.connect() as conn:
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + ONE_HOUR, params)
        custom = [row[0] for row in cursor.fetchall()]
        cursor.execute("PREPARE one_hour(int, timestamptz, timestamptz) AS " + ONE_HOUR % ("$1", "$2", "$3"))
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        # EXECUTE takes no bind parameters; these are the benchmark's own values.
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE one_hour({account}, '{params[1]}', '{params[2]}')")
        generic = [row[0] for row in cursor.fetchall()]
        conn.rollback()
    for title, plan in (("custom plan", custom), ("generic plan (prepared statement)", generic)):
        print(f"\nEXPLAIN ANALYZE of one pick, {title}:")
        for line in plan:
            print("  " + line)


def measure_retention(engine: Engine, drop_day: date, delete_day: date) -> None:
    with engine.connect() as conn:
        counts = [
            conn.scalar(text(f"SELECT count(*) FROM {partitions.partition_name(POSITIONS.name, d)}"))
            for d in (drop_day, delete_day)
        ]

    def drop() -> None:
        with engine.begin() as conn:
            partitions.drop_partition(conn, POSITIONS, drop_day)

    def delete() -> None:
        low, high = partitions.bounds(delete_day)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM position_snapshots"
                    " WHERE collected_at >= CAST(:low AS timestamptz) AND collected_at < CAST(:high AS timestamptz)"
                ),
                {"low": low, "high": high},
            )

    def vacuum() -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM {partitions.partition_name(POSITIONS.name, delete_day)}"))

    dropped, deleted, vacuumed = timed(drop), timed(delete), timed(vacuum)
    print(f"\nretention of one day ({counts[0]:,} rows dropped / {counts[1]:,} rows deleted, same size):")
    print(f"  detach + drop partition:   {dropped * 1000:9.1f} ms")
    print(f"  DELETE (baseline):         {deleted * 1000:9.1f} ms   (+ VACUUM {vacuumed * 1000:.1f} ms)")
    print(f"  ratio drop / DELETE:       {dropped / deleted:.4f}x")


def measure_full_retention(engine: Engine, today: date) -> None:
    policy = partitions.RetentionPolicy()
    started = time.perf_counter()
    report = partitions.maintain(engine, POSITIONS, policy, today=today)
    elapsed = time.perf_counter() - started
    print(f"\nmaintenance run at default retention ({policy.snapshots_days} days): dropped {len(report.dropped)}"
          f" partitions, created {len(report.created)}, in {elapsed:.2f} s")  # fmt: skip


RISK_GENERATE = """
    INSERT INTO account_risk_history (account_id, recorded_at, evaluation_id, gross, net, equity, leverage,
                                      unrealized_pnl, daily_pnl, drawdown)
    SELECT a, ts, 0, 1000 + a, a - 50, 500 + a, (1000 + a) / (500.0 + a), 1.5, -2.25, 0.01
    FROM generate_series(CAST(:low AS timestamptz), CAST(:high AS timestamptz) - interval '1 hour',
                         interval '1 hour') AS ts,
         generate_series(1, :accounts) AS a
"""
EVALUATIONS_GENERATE = """
    INSERT INTO evaluations (path, started_at, finished_at, data_as_of, accounts_evaluated, checks, breaches, status)
    SELECT 'scheduled', ts, ts + interval '400 ms', ts - interval '1 s', 10000, 12859, 12, 'succeeded'
    FROM generate_series(CAST(:low AS timestamptz), CAST(:high AS timestamptz) - interval '1 minute',
                         interval '1 minute') AS ts
"""
RISK_ONE_HOUR = (
    "SELECT recorded_at, gross, equity, leverage, drawdown FROM account_risk_history"
    " WHERE account_id = %s AND recorded_at >= %s AND recorded_at < %s"
)
EVALUATIONS_ONE_HOUR = (
    "SELECT id, started_at, finished_at, checks, breaches FROM evaluations WHERE started_at >= %s AND started_at < %s"
)


def build_evaluation_history(engine: Engine, first: date, last: date, accounts: int) -> None:
    tables = [t for t in partitions.HISTORY_TABLES if t.name in ("account_risk_history", "evaluations")]
    with engine.begin() as conn:
        for table in tables:
            existing = partitions.partitions_of(conn, table.name)
            day = first
            while day <= last:
                if partitions.partition_name(table.name, day) not in existing:
                    partitions.create_partition(conn, table, day)
                day += timedelta(days=1)
    started, day = time.perf_counter(), first
    while day <= last:
        bounds = {"low": midnight(day), "high": midnight(day + timedelta(days=1)), "accounts": accounts}
        with engine.begin() as conn:
            conn.execute(text(RISK_GENERATE), bounds)
            conn.execute(text(EVALUATIONS_GENERATE), bounds)
        day += timedelta(days=1)
    days, elapsed = (last - first).days + 1, time.perf_counter() - started
    print(f"\nevaluation history: {accounts * 24 * days:,} account_risk_history rows ({accounts} accounts, hourly)"
          f" and {days * 1440:,} evaluations (one a minute) over {days} days in {elapsed:.1f} s")  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE account_risk_history"))
        conn.execute(text("ANALYZE evaluations"))


def measure_evaluation_history(engine: Engine, first: date, days: int, accounts: int, picks: int) -> None:
    rng = random.Random(9)
    start = midnight(first)
    chosen = [(rng.randint(1, accounts), start + timedelta(hours=rng.randrange(days * 24))) for _ in range(picks)]
    results: dict[str, list[float]] = {"pruned": [], "unpruned": [], "evaluations": []}
    with engine.connect() as conn:
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for mode, setting in (("pruned", "on"), ("unpruned", "off")):
            cursor.execute(f"SET enable_partition_pruning = {setting}")
            for account, hour in [chosen[0], *chosen]:  # the first is a warm-up, timed again below
                began = time.perf_counter()
                cursor.execute(RISK_ONE_HOUR, (account, hour, hour + timedelta(hours=1)))
                cursor.fetchall()
                results[mode].append((time.perf_counter() - began) * 1000)
            results[mode].pop(0)
        cursor.execute("SET enable_partition_pruning = on")
        for _account, hour in chosen:
            began = time.perf_counter()
            cursor.execute(EVALUATIONS_ONE_HOUR, (hour, hour + timedelta(hours=1)))
            cursor.fetchall()
            results["evaluations"].append((time.perf_counter() - began) * 1000)
        account, hour = chosen[0]
        plans = {}
        for title, query, params in (
            ("account_risk_history, one account, one hour", RISK_ONE_HOUR, (account, hour, hour + timedelta(hours=1))),
            ("evaluations, one hour", EVALUATIONS_ONE_HOUR, (hour, hour + timedelta(hours=1))),
        ):
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query, params)
            plans[title] = [row[0] for row in cursor.fetchall()]
        conn.rollback()
    p = {mode: (percentile(v, 0.5), percentile(v, 0.99)) for mode, v in results.items()}
    print(f"account_risk_history, one account, one hour, {picks} random picks:")
    print(f"  with partition pruning:    p50 {p['pruned'][0]:7.2f} ms   p99 {p['pruned'][1]:7.2f} ms")
    print(f"  pruning off (baseline):    p50 {p['unpruned'][0]:7.2f} ms   p99 {p['unpruned'][1]:7.2f} ms")
    print(f"  ratio p50 pruned / off:    {p['pruned'][0] / p['unpruned'][0]:.3f}x")
    print(
        f"evaluations, one hour (60 rows), pruned: p50 {p['evaluations'][0]:.2f} ms   p99 {p['evaluations'][1]:.2f} ms"
    )
    for title, plan in plans.items():
        print(f"\nEXPLAIN ANALYZE, {title}:")
        for line in plan:
            print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="history rows to build (at least)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--positions", type=int, default=5, help="positions per account snapshot")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-accounts", type=int, default=10_000, help="accounts per ingest batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-rows", type=int, default=1_000_000, help="rows per day of the dense retention test")
    parser.add_argument("--risk-accounts", type=int, default=200, help="accounts in the evaluation history")
    parser.add_argument("--only-evaluation-history", action="store_true", help="skip the snapshot measurements")
    args = parser.parse_args()

    accounts = -(-args.rows // (args.days * 24 * args.positions))  # hourly snapshots, rounded up
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=args.days + 1), today - timedelta(days=2)
    print(f"history: {accounts} accounts x {args.positions} positions, hourly snapshots, {first} .. {last}")
    with benchmark_database() as url:
        engine = database.make_engine(url, statement_timeout_s=3600)
        build_evaluation_history(engine, first, last, args.risk_accounts)
        measure_evaluation_history(engine, first, args.days, args.risk_accounts, args.queries)
        if args.only_evaluation_history:
            engine.dispose()
            return
        build_history(engine, first, last, accounts, args.positions)
        # Two days at production-like density, before the history, for the retention comparison.
        dense = [first - timedelta(days=3), first - timedelta(days=2)]
        build_history(engine, dense[0], dense[1], -(-args.dense_rows // (24 * args.positions)), args.positions)
        window = partitions.days_to_ensure(today, 7)
        create_noindex_twin(engine, window)
        measure_ingest(engine, today, args.batch_accounts, args.positions, args.repeats)
        measure_bulk_insert(engine, window[2:7], accounts * 2, args.positions)
        account, hour = measure_query(engine, first, args.days, accounts, args.queries)
        explain(engine, account, hour)
        measure_retention(engine, first, first + timedelta(days=1))
        measure_retention(engine, dense[0], dense[1])
        measure_full_retention(engine, today)
        engine.dispose()


if __name__ == "__main__":
    main()
