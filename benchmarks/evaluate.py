"""Full evaluation pass against a real database: read + compute + write, vs the pure compute and vs merely
reading the same latest snapshots, all measured in the same run (interleaved, median of N).

    .venv/bin/python benchmarks/evaluate.py [--accounts 10000] [--positions 10] [--repeats 5]

Data: 10k accounts × 10 positions (half perpetual, longs and shorts) on 4 exchanges, 2 balances each, a
custodian for a third of them, a few overdue settlements, 14 prices; the 20 limits of
benchmarks/evaluate_compute.py (stored as versioned rows). The first pass opens every alert and writes
every mark and compliance row; it is reported on its own. Then, per repeat, interleaved:

- full passes with the job's state kept between passes (as EvaluateJob keeps it: the previous book with its
  fast-path index and exact figures, and the alerts/statuses its last pass committed), once right after a
  new positions and balances batch for *every* account landed (same contents, as most polls bring) and
  once with no head moved;
- a cold-start pass (empty state: a replica that just took over the job);
- the in-run baseline of the every-head-moved pass: the same, with the loader made to rebuild every fetched
  account's rows (as it did before it compared a moved account's fetched content with the kept one);
- a pass right after a batch where every head moved *and* every position's venue mark moved (the soak's
  case: venues report marks that move every second, so no account's content repeats), with this process's
  CPU seconds for it and for the read-only floor (PostgreSQL's own CPU is not counted);
- the read-only floor, a book load from scratch and one with the previous book kept, and the pure compute
  on a fresh book (builds the index) and on the kept book.

Targets (issue 4): full pass <= 1 s and <= 3x the read-only floor.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from _support import benchmark_database, median
from evaluate_compute import BASES, LIMITS, VENUES
from sqlalchemy import Engine, text

from models.risk import evaluate
from services import database
from services.book_loader import BOOK_QUERIES, BookCache, Kept, load_book
from services.evaluation import (
    EvaluationResult,
    FirmSignalsState,
    HistoryState,
    WrittenState,
    firm_figures,
    run_evaluation,
)
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


def move_every_head(engine: Engine, at: datetime, marks: dict[str, Decimal] | None = None) -> None:
    """A new positions and balances batch for every account, collected at ``at``, with the same contents: what
    the evaluation sees after every venue's poll landed (heads move on every poll, even when nothing traded).
    ``marks``: each position's mark price becomes its symbol's (every position's content then differs, as in
    the soak, where the venues report marks that move every second)."""
    store = SnapshotStore(engine)
    with engine.connect() as conn:
        positions = fetch_all(
            conn,
            "SELECT a.venue_id, p.account_id, p.symbol, p.quantity, p.avg_price, p.mark_price, p.realized_pnl"
            " FROM position_latest p JOIN accounts a ON a.id = p.account_id ORDER BY p.account_id, p.symbol",
        )
        balances = fetch_all(
            conn,
            "SELECT a.venue_id, b.account_id, b.asset, b.available, b.locked, b.total"
            " FROM balance_latest b JOIN accounts a ON a.id = b.account_id ORDER BY b.account_id, b.asset",
        )
    for kind, rows in (("positions", positions), ("balances", balances)):
        by_venue: dict[str, dict[int, list[tuple[object, ...]]]] = {}
        for venue, account_id, *values in rows:
            if kind == "positions" and marks is not None:
                values[3] = marks[values[0]]  # (symbol, quantity, avg_price, mark_price, realized_pnl)
            by_venue.setdefault(venue, {}).setdefault(account_id, []).append((*values, at))
        for venue, accounts in by_venue.items():
            batch = [AccountSnapshot(account_id, at, items) for account_id, items in accounts.items()]
            store.write_snapshots(RunRecord(f"collect_{kind}", venue, kind, at, at), at, batch)


def forget_contents(cache: BookCache) -> None:
    """Make the loader rebuild every fetched account's rows, as it did before it compared contents: the in-run
    baseline of the every-head-moved pass (the built rows stay, so `update_book` still finds them equal)."""
    unknown = ((None,),)  # no fetched content equals this
    cache.positions = {a: Kept(e.head, unknown, e.items, e.newest, e.skipped) for a, e in cache.positions.items()}
    cache.balances = {a: Kept(e.head, unknown, e.items, e.newest, e.skipped) for a, e in cache.balances.items()}


class GcClock:
    """Seconds spent in the cyclic garbage collector (any generation), via gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


GC = GcClock()


def timed(func: Callable[[], T]) -> tuple[float, T]:
    started, in_gc, cpu = time.perf_counter(), GC.seconds, time.process_time()
    result = func()
    CPU_SPENT.append(time.process_time() - cpu)
    GC_SPENT.append(GC.seconds - in_gc)
    return time.perf_counter() - started, result


GC_SPENT: list[float] = []  # cyclic GC seconds inside each timed call
CPU_SPENT: list[float] = []  # this process's CPU seconds inside each timed call (PostgreSQL's are not counted)


def walked_marks(engine: Engine, step: int) -> dict[str, Decimal]:
    """A mark per symbol, a little higher at every step (1 bp): what venues report when prices move every
    second, without opening or resolving alerts from one pass to the next."""
    with engine.connect() as conn:
        prices = dict(fetch_all(conn, "SELECT symbol, price FROM price_latest"))
    factor = 1 + Decimal(step) / 10_000
    marks = {f"{b}-USDT": (prices[f"{b}-USDT"] * factor).quantize(Decimal("0.01")) for b in BASES}
    return {**marks, **{f"{symbol}-SWAP": mark for symbol, mark in marks.items()}}


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

        # The job's state across passes, as EvaluateJob keeps it: the previous book (rows, fast-path index,
        # exact figures) and what the last pass committed (alerts, compliance statuses).
        job_cache = BookCache()
        job = {"cache": job_cache, "written": WrittenState()}
        load_cache = BookCache()
        # The job refreshes the exact firm-wide gauges every 10 s, not every pass: steady passes skip them.
        firm_signals = FirmSignalsState(every_s=3600, last_at=NOW)
        now = NOW

        def job_pass(at: datetime, **state: object) -> EvaluationResult:
            kwargs: dict[str, Any] = {"groups": groups, "history": history, "firm_signals": firm_signals, **state}
            return run_evaluation(engine, limits, at, **kwargs)

        def settle() -> None:
            """Collect the garbage of this script's own measurements (fresh books, a cold pass) before a timed
            pass, so a full collection they made due is not charged to it; the pass still pays for every
            collection its own allocations trigger (reported as "of which cyclic GC")."""
            gc.collect()

        job_pass(now, **job)  # the job's first pass with state: builds the book, index and caches
        load_book(engine, groups=groups, cache=load_cache)
        t: dict[str, list[float]] = {}
        hits: list[tuple[bool, bool]] = []

        def record(name: str, seconds: float) -> None:
            t.setdefault(name, []).append(seconds)

        for _ in range(args.repeats):  # interleaved: every figure sees the same machine load
            now += timedelta(seconds=1)
            move_every_head(engine, now - timedelta(milliseconds=500))  # not timed
            settle()
            seconds, moved = timed(partial(job_pass, now, **job))
            record("moved", seconds)
            record("moved_gc", GC_SPENT[-1])
            record("moved_read", moved.timings["read"])
            record("moved_compute", moved.timings["compute"])
            record("floor", timed(partial(read_floor, engine))[0])
            seconds, loaded = timed(partial(load_book, engine, groups=groups))
            record("load", seconds)
            load_book(engine, groups=groups, cache=load_cache)  # catches up with the moved heads
            record("cached_load", timed(partial(load_book, engine, groups=groups, cache=load_cache))[0])
            record("compute_cold", timed(partial(evaluate, loaded.book, limits, now))[0])
            now += timedelta(seconds=1)
            settle()
            seconds, result = timed(partial(job_pass, now, **job))
            record("full", seconds)
            record("full_gc", GC_SPENT[-1])
            record("compute_warm", result.timings["compute"])
            record("write", result.timings["write"])
            hits.append(result.cache_hits)
            record("firm", timed(partial(firm_figures, result.evaluation))[0])
            # a replica that just took over the job: no book, no index, no cached alerts (empty state)
            settle()
            seconds, cold = timed(partial(job_pass, now, cache=BookCache(), written=WrittenState()))
            record("cold", seconds)
            # the in-run baseline: the same every-head-moved pass with the loader rebuilding every fetched row
            now += timedelta(seconds=1)
            move_every_head(engine, now - timedelta(milliseconds=500))  # not timed
            forget_contents(job_cache)
            settle()
            seconds, rebuilt = timed(partial(job_pass, now, **job))
            record("rebuilt", seconds)
            record("rebuilt_read", rebuilt.timings["read"])
            # every head moved and every position's mark with it (the soak's case: nothing is kept)
            now += timedelta(seconds=1)
            move_every_head(
                engine, now - timedelta(milliseconds=500), walked_marks(engine, len(t.get("marked", ())) + 1)
            )  # not timed
            settle()
            seconds, marked = timed(partial(job_pass, now, **job))
            record("marked", seconds)
            record("marked_cpu", CPU_SPENT[-1])
            record("marked_gc", GC_SPENT[-1])
            record("marked_read", marked.timings["read"])
            record("marked_compute", marked.timings["compute"])
            record("marked_write", marked.timings["write"])
            timed(partial(read_floor, engine))
            record("floor_cpu", CPU_SPENT[-1])
            events = (moved.events, result.events, cold.events, rebuilt.events)
            assert events == ([], [], [], []), "steady state must not change alerts"
        engine.dispose()

    print(
        f"book: {args.accounts} accounts x {args.positions} positions, {len(limits)} limits, {rows} rows read;"
        f" {len(first.evaluation.checks)} checks, {len(first.events)} alerts opened in the first pass"
    )
    f = first.timings
    print(
        f"first pass (opens every alert, writes every mark/compliance/history row): {f['total']:.3f} s"
        f" (read {f['read']:.3f}, compute {f['compute']:.3f}, write {f['write']:.3f})"
    )
    m = {name: median(values) for name, values in t.items()}
    floor = m["floor"]

    def line(label: str, name: str, ratio: bool = False) -> None:
        tail = f"   {m[name] / floor:.2f}x floor" if ratio else ""
        print(f"  {label:<58}{m[name]:.3f} s{tail}")

    print(f"steady state, median of {args.repeats} (cache hits, alerts/compliance: {hits}):")
    line("read-only floor (fetch the same rows):", "floor")
    line("book load from scratch (read + build domain values):", "load", True)
    line("book load, heads unchanged (previous book kept):", "cached_load", True)
    line("pure compute, fresh book (builds the fast-path index):", "compute_cold")
    line("pure compute, kept book (index and exact figures reused):", "compute_warm")
    line("write transaction (no alert changes):", "write")
    line("full pass, heads unchanged (read + compute + write):", "full", True)
    line("  of which cyclic GC (collections triggered inside the pass):", "full_gc")
    line("full pass, every head moved (same contents):", "moved", True)
    line("  of which read / compute / cyclic GC:", "moved_read")
    line("", "moved_compute")
    line("", "moved_gc")
    line("  baseline: the same, every fetched row rebuilt (no content reuse):", "rebuilt", True)
    line("    of which read:", "rebuilt_read")
    print(f"  every head moved, content reuse vs rebuilt: {m['moved'] / m['rebuilt']:.2f}x")
    line("full pass, every head moved and every mark moved:", "marked", True)
    line("  its CPU in this process (read-only floor's CPU below):", "marked_cpu")
    line("", "floor_cpu")
    line("  of which read / compute / write / cyclic GC:", "marked_read")
    line("", "marked_compute")
    line("", "marked_write")
    line("", "marked_gc")
    line("full pass, cold start (no state: a replica taking over):", "cold", True)
    line("exact firm-wide gauges (every 10 s, not part of a pass):", "firm")


if __name__ == "__main__":
    main()
