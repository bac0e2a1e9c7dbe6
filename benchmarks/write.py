"""Write benchmark: the monitor's CPU per snapshot write, text COPY (now) vs binary COPY (before), same run.

    .venv/bin/python benchmarks/write.py [--accounts 10000] [--positions 10] [--symbols 1000]
                                         [--price-history 2000] [--repeats 5]

The baseline is the previous implementation, kept below (``BinaryStore``): psycopg binary COPY with a
dumper per value, the heads' arrays as Python lists, and price_latest filled by re-reading the run's rows
with ``venue_id = .. AND collected_at = ..``. Both stores write into the same tables, interleaved, so
they see the same table size and cache state. Prints, per part, rows/s (wall), the monitor process's
CPU seconds per 10k rows (``time.process_time``: the client only, not the server) and the ratio:
- ``write_snapshots``: 10k accounts x 10 positions, run row + COPY + heads, one transaction;
- ``_move_heads`` alone (10k accounts), in a rolled-back transaction;
- ``write_prices`` on a day that already holds ``--price-history`` runs of every symbol, and the
  price_latest statement alone (EXPLAIN ANALYZE of both versions; the old one reads the whole day).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from _support import benchmark_database, median
from sqlalchemy import Connection, Engine, text

from services import database, partitions
from services.copy_text import array_literal
from services.snapshot_store import (
    PRICE_LATEST_UPSERT,
    SNAPSHOT_TABLES,
    AccountSnapshot,
    Rejection,
    RunRecord,
    SnapshotStore,
    WriteResult,
    _driver,
    _status,
)

DAY = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOLS = [f"SYM{i}-USDT" for i in range(50)]
OLD_LATEST = (
    "INSERT INTO price_latest (venue_id, symbol, price, volume, observed_at, collected_at, run_id)"
    " SELECT venue_id, symbol, price, volume, observed_at, collected_at, run_id"
    " FROM price_snapshots WHERE run_id = :run AND venue_id = :venue"
    " AND collected_at = :at"
    " ON CONFLICT (venue_id, symbol) DO UPDATE SET price = excluded.price,"
    " volume = excluded.volume, observed_at = excluded.observed_at,"
    " collected_at = excluded.collected_at, run_id = excluded.run_id"
    " WHERE price_latest.observed_at <= excluded.observed_at"
)


class BinaryStore(SnapshotStore):
    """The write path before the text COPY (the baseline), as it was in services/snapshot_store.py."""

    def write_snapshots(
        self,
        run: RunRecord,
        collected_at: datetime,
        accounts: Sequence[AccountSnapshot],
        rejected: Sequence[Rejection] = (),
    ) -> WriteResult:
        table, columns, types = SNAPSHOT_TABLES[run.kind]
        accepted = sum(len(a.rows) for a in accounts)
        status = _status(run, rejected)
        with self.engine.begin() as conn:
            run_id = self._insert_run(conn, run, status, accepted, len(rejected))
            cursor = _driver(conn).cursor()
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                write = copy.write_row
                for account in accounts:
                    head = (account.account_id, collected_at)
                    for row in account.rows:
                        write((*head, *row, run_id))
            self._move_heads(conn, run.kind, collected_at, accounts, run_id)
            self._insert_rejections(conn, run, run_id, rejected)
        return WriteResult(run_id, accepted, len(rejected), status)

    def write_prices(
        self,
        run: RunRecord,
        collected_at: datetime,
        prices: Sequence[tuple[str, Any, Any, datetime]],
        rejected: Sequence[Rejection] = (),
    ) -> WriteResult:
        status = _status(run, rejected)
        with self.engine.begin() as conn:
            run_id = self._insert_run(conn, run, status, len(prices), len(rejected))
            cursor = _driver(conn).cursor()
            columns = "venue_id, symbol, collected_at, price, volume, observed_at, run_id"
            with cursor.copy(f"COPY price_snapshots ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(("text", "text", "timestamptz", "numeric", "numeric", "timestamptz", "int8"))
                for symbol, price, volume, observed_at in prices:
                    copy.write_row((run.venue_id, symbol, collected_at, price, volume, observed_at, run_id))
            if prices:
                conn.execute(text(OLD_LATEST), {"run": run_id, "venue": run.venue_id, "at": collected_at})
            self._insert_rejections(conn, run, run_id, rejected)
        return WriteResult(run_id, len(prices), len(rejected), status)

    @staticmethod
    def _move_heads(
        conn: Connection, kind: str, collected_at: datetime, accounts: Sequence[AccountSnapshot], run_id: int
    ) -> None:
        if not accounts:
            return
        conn.execute(
            text(
                "INSERT INTO snapshot_heads (account_id, kind, collected_at, observed_at, run_id)"
                " SELECT a, :kind, :at, o, :run"
                " FROM unnest(CAST(:accounts AS int[]), CAST(:observed AS timestamptz[])) AS t(a, o)"
                " ON CONFLICT (account_id, kind) DO UPDATE SET collected_at = excluded.collected_at,"
                " observed_at = excluded.observed_at, run_id = excluded.run_id"
                " WHERE snapshot_heads.collected_at < excluded.collected_at"
            ),
            {
                "kind": kind,
                "at": collected_at,
                "run": run_id,
                "accounts": [a.account_id for a in accounts],
                "observed": [a.observed_at for a in accounts],
            },
        )


def position_batch(account_ids: list[int], positions: int, observed_at: datetime) -> list[AccountSnapshot]:
    """Rows shaped like a venue's: per-position update times (a few distinct ones), decimals, a NULL."""
    batch = []
    for n, account_id in enumerate(account_ids):
        rows = [
            (
                SYMBOLS[(n + k) % len(SYMBOLS)],
                Decimal(f"{(n * 7 + k) % 1000 - 500}.125"),
                Decimal(f"{100 + k}.50"),
                Decimal(f"{101 + k}.25"),
                None,
                observed_at - timedelta(milliseconds=k % 3),
            )
            for k in range(positions)
        ]
        batch.append(AccountSnapshot(account_id, observed_at, rows))
    return batch


class ServerCpu:
    """CPU seconds of the database's server backends (utime + stime from /proc), when the server runs
    on this machine: the text COPY moves parsing from the monitor to the server, so both are shown."""

    def __init__(self, url: str) -> None:
        self._probe = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float | None:
        pids = self._probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        total = 0
        for (pid,) in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None  # not on this machine (or not readable): no server figure
            total += int(fields[11]) + int(fields[12])
        return total / self._tick

    def close(self) -> None:
        self._probe.close()


Timing = tuple[float, float, float | None]  # wall, monitor CPU, server CPU (None: unknown)


def measured(func: Callable[[], object], server: ServerCpu) -> Timing:
    """(wall seconds, this process's CPU seconds, the server backends' CPU seconds) of one call."""
    before = server.seconds()
    wall, cpu = time.perf_counter(), time.process_time()
    func()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = server.seconds()
    return wall, cpu, None if before is None or after is None else after - before


def interleaved(
    repeats: int, old: Callable[[], object], new: Callable[[], object], server: ServerCpu
) -> dict[str, list[Timing]]:
    old()
    new()  # warm-up: plans, caches, the first partition lookups
    times: dict[str, list[Timing]] = {"old": [], "new": []}
    for _ in range(repeats):
        times["old"].append(measured(old, server))
        times["new"].append(measured(new, server))
    return times


def report(title: str, rows: int, times: dict[str, list[Timing]], unit: str = "10k rows") -> None:
    per = rows / 10_000 if unit == "10k rows" else 1 / 1000  # CPU seconds per 10k rows, or ms per call
    label = "s / 10k rows" if unit == "10k rows" else "ms / call"
    wall = {k: median([t[0] for t in v]) for k, v in times.items()}
    cpu = {k: median([t[1] for t in v]) / per for k, v in times.items()}
    known = all(t[2] is not None for v in times.values() for t in v)
    server = {k: median([t[2] or 0.0 for t in v]) / per for k, v in times.items()}
    print(f"{title} ({rows:,} rows, {len(times['old'])} runs each, medians)")
    for key, name in (("old", "before: binary COPY"), ("new", "now: text COPY")):
        line = f"  {name:<20} {rows / wall[key]:>9,.0f} rows/s   monitor CPU {label}: {cpu[key]:.4f}"
        print(line + (f"   server CPU: {server[key]:.4f}" if known else "") + f"   wall {wall[key]:.3f} s")
    line = f"  ratio before / now: monitor CPU {cpu['old'] / cpu['new']:.2f}x"
    if known:
        both = (cpu["old"] + server["old"]) / (cpu["new"] + server["new"])
        line += f", server CPU {server['old'] / server['new']:.2f}x, both {both:.2f}x"
    print(line + f", wall {wall['old'] / wall['new']:.2f}x")


def latest_plan(engine: Engine, sql: str, params: dict[str, Any]) -> tuple[float, str]:
    """(execution ms, the plan's lines) of a price_latest statement, rolled back."""
    with engine.connect() as conn, conn.begin() as tx:
        lines = [str(r[0]) for r in conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"), params)]
        tx.rollback()
    ms = next(float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time"))
    return ms, "\n".join(f"    {line}" for line in lines if not line.startswith(("Planning", "Execution")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--price-history", type=int, default=2_000, help="earlier runs of every symbol that day")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tick = iter(range(1, 1_000_000))

    def next_at() -> datetime:
        return DAY + timedelta(hours=1, seconds=next(tick))

    with benchmark_database() as url:
        engine = database.make_engine(url)
        new, old = SnapshotStore(engine), BinaryStore(engine)
        server = ServerCpu(url)
        with engine.begin() as conn:
            for table in partitions.HISTORY_TABLES:  # the day's own partitions, as in production
                partitions.create_partition(conn, table, DAY.date())
        new.ensure_venue("bench-exchange", "exchange")
        ids = list(new.account_ids("bench-exchange", [f"acct-{i}" for i in range(args.accounts)]).values())
        old.account_ids("bench-exchange", [f"acct-{i}" for i in range(args.accounts)])

        # --- write_snapshots --------------------------------------------------------------------------
        batch = position_batch(ids, args.positions, DAY)
        rows = args.accounts * args.positions

        def snapshots(store: SnapshotStore) -> Callable[[], object]:
            def write() -> None:
                at = next_at()
                store.write_snapshots(RunRecord("collect_positions", "bench-exchange", "positions", at, at), at, batch)

            return write

        report("write_snapshots", rows, interleaved(args.repeats, snapshots(old), snapshots(new), server))

        # --- _move_heads alone ------------------------------------------------------------------------
        def heads(store: SnapshotStore) -> Callable[[], object]:
            def move() -> None:
                with engine.connect() as conn, conn.begin() as tx:
                    store._move_heads(conn, "positions", next_at(), batch, 0)
                    tx.rollback()

            return move

        heads_times = interleaved(args.repeats * 2, heads(old), heads(new), server)
        report(f"_move_heads ({args.accounts:,} accounts)", args.accounts, heads_times, unit="call")

        # --- write_prices on a day with history --------------------------------------------------------
        new.ensure_venue("bench-md", "market_data")
        names = [f"P{i}-USDT" for i in range(args.symbols)]
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO price_snapshots (venue_id, symbol, collected_at, price, volume, observed_at, run_id)"
                    " SELECT 'bench-md', 'P' || s || '-USDT', ts, 100 + s, NULL, ts, 0"
                    " FROM generate_series(1, :runs) AS r,"
                    " LATERAL (SELECT CAST(:day AS timestamptz) + r * interval '1 second' AS ts) AS t,"
                    " generate_series(0, :symbols - 1) AS s"
                ),
                {"runs": args.price_history, "symbols": args.symbols, "day": DAY},
            )
            conn.execute(text("ANALYZE price_snapshots"))
        print(f"\nprice_snapshots on {DAY.date()}: {args.price_history * args.symbols:,} rows of earlier runs")

        def prices(store: SnapshotStore) -> Callable[[], object]:
            def write() -> None:
                at = next_at()
                data = [(s, Decimal(f"{100 + i}.25"), Decimal("3.5"), at) for i, s in enumerate(names)]
                store.write_prices(RunRecord("collect_prices", "bench-md", "prices", at, at), at, data)

            return write

        report("write_prices", args.symbols, interleaved(args.repeats * 2, prices(old), prices(new), server))

        # The statement alone: the last run's rows, read back the old way and by primary key.
        with engine.connect() as conn:
            run_id, at = conn.execute(
                text("SELECT id, finished_at FROM collection_runs WHERE venue_id = 'bench-md' ORDER BY id DESC LIMIT 1")
            ).one()

        old_ms, old_plan = latest_plan(engine, OLD_LATEST, {"run": run_id, "venue": "bench-md", "at": at})
        new_params = {"symbols": array_literal(names), "venue": "bench-md", "at": at}
        new_ms, new_plan = latest_plan(engine, PRICE_LATEST_UPSERT, new_params)
        print(f"price_latest statement ({args.symbols:,} symbols): before {old_ms:.1f} ms, now {new_ms:.1f} ms")
        print(f"  before:\n{old_plan}\n  now:\n{new_plan}")
        server.close()
        engine.dispose()


if __name__ == "__main__":
    main()
