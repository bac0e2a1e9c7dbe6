"""Full evaluation pass against a real database: read + compute + write, vs the pure compute and vs merely
reading the same latest snapshots, all measured in the same run (interleaved, median of N).

    .venv/bin/python benchmarks/evaluate.py [--accounts 10000] [--positions 10] [--repeats 5]

Data: 10k accounts × 10 positions (half perpetual, longs and shorts) on 4 exchanges, 2 balances each, a
custodian for a third of them, a few overdue settlements, 14 prices; the 20 limits of
benchmarks/evaluate_compute.py (stored as versioned rows). The first pass opens every alert and writes
every mark and compliance row; it is reported on its own. Steady-state passes then see unchanged data:
that is the every-second cost. Targets (issue 4): full pass <= 1 s and <= 3x the read-only floor.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TypeVar

from _support import benchmark_database, median
from evaluate_compute import BASES, LIMITS, VENUES
from sqlalchemy import Engine, text

from models.risk import evaluate
from services import database
from services.book_loader import BOOK_QUERIES, BookCache, load_book
from services.evaluation import FirmSignalsState, HistoryState, firm_figures, run_evaluation
from services.limits_store import current_limits, sync_limits
from services.raw_rows import fetch_all
from services.snapshot_store import AccountSnapshot, RunRecord, SnapshotStore

T = TypeVar("T")

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def d(x: float) -> Decimal:
    return Decimal(str(x))


def populate(engine: Engine, accounts: int, positions: int, rng: random.Random) -> dict[str, tuple[str, ...]]:
    store = SnapshotStore(engine)
    for venue in VENUES:
        store.ensure_venue(venue, "exchange")
    store.ensure_venue("copper", "custodian")
    store.ensure_venue("md", "market_data")
    at = NOW - timedelta(seconds=1)

    def run(venue: str, kind: str) -> RunRecord:
        return RunRecord(f"collect_{kind}", venue, kind, at, at)

    store.write_prices(
        run("md", "prices"),
        at,
        [(f"{b}-USDT", d(round(rng.uniform(1, 60000), 2)), None, at) for b in BASES]
        + [("USDT-USD", Decimal("0.9998"), None, at), ("USDC-USD", Decimal("1.0001"), None, at)],
    )
    groups: dict[str, list[str]] = {}
    copper = store.account_ids("copper", ["omnibus"])["omnibus"]
    custody_rows = []
    settlements = []
    for v, venue in enumerate(VENUES):
        names = [f"acct-{i}" for i in range(v, accounts, len(VENUES))]
        ids = store.account_ids(venue, names)
        position_batch, balance_batch = [], []
        for name in names:
            i = int(name.split("-")[1])
            rows = []
            for base in rng.sample(BASES, positions):
                perp = rng.random() < 0.5
                qty = d(round(rng.uniform(-50, 50) if perp else rng.uniform(0, 50), 3))
                symbol = f"{base}-USDT-SWAP" if perp else f"{base}-USDT"
                rows.append((symbol, qty, d(round(rng.uniform(1, 60000), 2)), None, None, at))
            position_batch.append(AccountSnapshot(ids[name], at, rows))
            usdt, btc = Decimal(1_000_000), Decimal(2)
            balance_batch.append(
                AccountSnapshot(
                    ids[name], at, [("USDT", usdt, Decimal(0), usdt, at), ("BTC", btc, Decimal(0), btc, at)]
                )
            )
            groups.setdefault(f"desk-{i % 20}", []).append(f"{venue}:{name}")
            if i % 3 == 0:
                custody_rows.append((ids[name], "USDT", usdt, at))
            if i % 50 == 0:
                settlements.append((f"s{i}", ids[name]))
        store.write_snapshots(run(venue, "positions"), at, position_batch)
        store.write_snapshots(run(venue, "balances"), at, balance_batch)
    store.write_snapshots(run("copper", "custody_balances"), at, [AccountSnapshot(copper, at, custody_rows)])
    with engine.begin() as conn:
        for settlement_id, account_id in settlements:
            conn.execute(
                text(
                    "INSERT INTO settlements (custodian_id, settlement_id, account_id, asset, quantity, status,"
                    " initiated_at, expected_settlement_at, first_seen_at, last_seen_at, run_id)"
                    " VALUES ('copper', :s, :a, 'USDT', 1000, 'PENDING', :t, :due, :t, :t, 0)"
                ),
                {"s": settlement_id, "a": account_id, "t": at, "due": NOW - timedelta(days=2)},
            )
    return {group: tuple(members) for group, members in groups.items()}


def read_floor(engine: Engine) -> int:
    """Only fetch the rows the book is built from (the loader's own queries, same transaction kind and the same
    plain-tuple fetch): the I/O floor, without building a single domain value."""
    count = 0
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            for query in BOOK_QUERIES:
                count += len(fetch_all(conn, query))
    return count


def timed(func: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with benchmark_database() as url:
        engine = database.make_engine(url)
        started = time.perf_counter()
        groups = populate(engine, args.accounts, args.positions, random.Random(7))
        print(f"populated in {time.perf_counter() - started:.1f} s")
        with engine.begin() as conn:
            sync_limits(conn, LIMITS, now=NOW - timedelta(days=1), changed_by="benchmark")
            limits = current_limits(conn)
        history = HistoryState(every_s=60)
        first = run_evaluation(engine, limits, NOW, groups=groups, history=history, channels=("ops",))
        rows = read_floor(engine)

        cache = BookCache()
        load_book(engine, groups=groups, cache=cache)
        floor_t: list[float] = []
        cached_t: list[float] = []
        cold_t: list[float] = []
        load_t: list[float] = []
        compute_t: list[float] = []
        full_t: list[float] = []
        write_t: list[float] = []
        firm_t: list[float] = []
        # The job refreshes the exact firm-wide gauges every 10 s, not every pass: steady passes skip them.
        firm_signals = FirmSignalsState(every_s=3600, last_at=NOW)
        for n in range(args.repeats):  # interleaved: every figure sees the same machine load
            floor_t.append(timed(partial(read_floor, engine))[0])
            seconds, loaded = timed(partial(load_book, engine, groups=groups))
            load_t.append(seconds)
            cached_t.append(timed(partial(load_book, engine, groups=groups, cache=cache))[0])
            compute_t.append(timed(partial(evaluate, loaded.book, limits, NOW))[0])
            now = NOW + timedelta(seconds=n + 1)
            seconds, result = timed(
                partial(
                    run_evaluation,
                    engine,
                    limits,
                    now,
                    groups=groups,
                    history=history,
                    cache=cache,
                    firm_signals=firm_signals,
                )
            )
            full_t.append(seconds)
            firm_t.append(timed(partial(firm_figures, result.evaluation))[0])
            # every head moved (no cache): what a pass costs right after every venue's batch landed
            cold_t.append(
                timed(
                    partial(
                        run_evaluation, engine, limits, now, groups=groups, history=history, firm_signals=firm_signals
                    )
                )[0]
            )
            write_t.append(result.timings["write"])
            assert result.events == [], "steady state must not change alerts"
        engine.dispose()

    print(
        f"book: {args.accounts} accounts x {args.positions} positions, {len(limits)} limits, {rows} rows read;"
        f" {len(first.evaluation.checks)} checks, {len(first.events)} alerts opened in the first pass"
    )
    t = first.timings
    print(
        f"first pass (opens every alert, writes every mark/compliance/history row): {t['total']:.3f} s"
        f" (read {t['read']:.3f}, compute {t['compute']:.3f}, write {t['write']:.3f})"
    )
    floor, load, compute, full, write = (median(x) for x in (floor_t, load_t, compute_t, full_t, write_t))
    cached, cold = median(cached_t), median(cold_t)
    rest = full - compute
    print(f"steady state, median of {args.repeats}:")
    print(f"  read-only floor (fetch the same rows):   {floor:.3f} s")
    print(f"  book load (read + build domain values):  {load:.3f} s   {load / floor:.2f}x floor")
    print(f"  book load, heads unchanged (BookCache):  {cached:.3f} s   {cached / floor:.2f}x floor")
    print(f"  pure compute (models.risk.evaluate):     {compute:.3f} s")
    print(f"  write transaction (no alert changes):    {write:.3f} s")
    print(f"  full pass (read + compute + write):      {full:.3f} s   {full / floor:.2f}x floor   (cached read)")
    print(f"  full pass, every head moved (no cache):  {cold:.3f} s   {cold / floor:.2f}x floor")
    print(f"  full pass without compute:               {rest:.3f} s   {rest / floor:.2f}x floor")
    print(f"  exact firm-wide gauges (every 10 s):     {median(firm_t):.3f} s   (not part of a steady pass)")


if __name__ == "__main__":
    main()
