"""Ingest benchmark: the real snapshot write path vs a bare binary COPY of the same rows, same run.

    .venv/bin/python benchmarks/ingest.py [--accounts 10000] [--positions 10] [--repeats 5]

Prints rows/s for both and their ratio. Target (issue 3): >= 100k rows/s and >= 0.6x the bare COPY.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from _support import benchmark_database, best_of, median

from services import database
from services.snapshot_store import SNAPSHOT_TABLES, AccountSnapshot, RunRecord, SnapshotStore

SYMBOLS = [f"SYM{i}-USDT" for i in range(50)]


def build_batch(account_ids: list[int], positions: int, observed_at: datetime) -> list[AccountSnapshot]:
    batch = []
    for n, account_id in enumerate(account_ids):
        rows = [
            (
                SYMBOLS[(n + k) % len(SYMBOLS)],
                Decimal(f"{(n * 7 + k) % 1000 - 500}.125"),  # longs and shorts
                Decimal(f"{100 + k}.50"),
                Decimal(f"{101 + k}.25"),
                None,
                observed_at,
            )
            for k in range(positions)
        ]
        batch.append(AccountSnapshot(account_id, observed_at, rows))
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with benchmark_database() as url:
        engine = database.make_engine(url)
        store = SnapshotStore(engine)
        store.ensure_venue("bench-exchange", "exchange")
        ids = store.account_ids("bench-exchange", [f"acct-{i}" for i in range(args.accounts)])
        account_ids = list(ids.values())
        rows = args.accounts * args.positions
        base = datetime(2026, 1, 1, tzinfo=UTC)
        batch = build_batch(account_ids, args.positions, base)
        tick = iter(range(1, 10_000))

        def write_path() -> None:
            at = base + timedelta(seconds=next(tick))
            run = RunRecord("collect_positions", "bench-exchange", "positions", at, at)
            store.write_snapshots(run, at, batch)

        def bare_copy() -> None:
            # Baseline: the same rows, binary COPY into the same table, nothing else.
            at = base + timedelta(seconds=next(tick))
            with engine.begin() as conn:
                cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                table, columns, types = SNAPSHOT_TABLES["positions"]
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for account in batch:
                        for row in account.rows:
                            copy.write_row((account.account_id, at, *row, 0))

        # Interleave so both see the same table size and cache state.
        write_path()
        bare_copy()  # warm-up
        path_times: list[float] = []
        copy_times: list[float] = []
        for _ in range(args.repeats):
            path_times.append(best_of(1, write_path)[0])
            copy_times.append(best_of(1, bare_copy)[0])
        engine.dispose()

    path_rate = rows / median(path_times)
    copy_rate = rows / median(copy_times)
    print(f"batch: {args.accounts} accounts x {args.positions} positions = {rows} rows, {args.repeats} runs each")
    print(f"write path (run row + COPY + heads):  {path_rate:>10,.0f} rows/s  (median {median(path_times):.3f} s)")
    print(f"baseline bare binary COPY:            {copy_rate:>10,.0f} rows/s  (median {median(copy_times):.3f} s)")
    print(f"ratio write path / bare COPY:         {path_rate / copy_rate:.2f}x")


if __name__ == "__main__":
    main()
