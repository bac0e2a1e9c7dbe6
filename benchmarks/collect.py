"""One positions collection run over N accounts: sequential requests (the baseline) vs concurrent, same run.

    .venv/bin/python benchmarks/collect.py [--accounts 500] [--concurrency 16] [--repeats 3] [--latency-ms 0 20]
                                           [--batch 100]

The sandbox runs in a child process (ten traded symbols, every account traded into about ten positions),
so this process's CPU time is the collector's alone. Each repeat runs ``collect.positions.exchange-a``
once with one request thread (what every run did before concurrent requests) and once with
``--concurrency`` threads, and once through the venue's batched endpoint (``--batch`` accounts per request,
0 to skip), interleaved so load hits all alike, once per venue latency in
``--latency-ms`` (the sandbox's delay fault on every positions request: 0 is loopback, 20 ms is a venue
across a network). Printed per latency and variant: median wall time of a run, median process CPU time
of a run, CPU per account; and the wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from _support import benchmark_database
from soak import start_sandbox

from jobs.collect import CollectPositions
from services import database
from services.snapshot_store import SnapshotStore
from services.staleness import StalenessTracker
from services.venues.fan_out import FanOut
from services.venues.http import ExchangeClient, HttpPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=500, help="accounts of the collected exchange")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--batch", type=int, default=100, help="accounts per batched request (0: no batched variant)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rm-collect-") as tmp, benchmark_database() as url:
        sandbox, where = start_sandbox(args.accounts * 2, Path(tmp))  # two exchanges; one is collected
        engine = database.make_engine(url, pool_size=4)
        try:
            venue = "exchange-a"
            exchanges = where["exchanges"]
            assert isinstance(exchanges, dict)
            store = SnapshotStore(engine)
            store.ensure_venue(venue, "exchange", exchanges[venue])
            results: dict[float, dict[tuple[int, int], list[tuple[float, float]]]] = {}
            for latency in args.latency_ms:
                _control(str(where["control"]), "clear", {})
                if latency:
                    _control(str(where["control"]), "delay", {"venue": venue, "seconds": latency / 1000})
                variants = [(1, 0), (args.concurrency, 0)] + ([(args.concurrency, args.batch)] if args.batch else [])
                results[latency] = _measure(store, venue, str(exchanges[venue]), variants, args.repeats)
        finally:
            engine.dispose()
            sandbox.terminate()
            sandbox.wait(30)

    print(f"accounts: {args.accounts} (about 10 positions each), repeats: {args.repeats}")
    for latency, timings in results.items():
        medians = {
            v: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            for v, runs in timings.items()
        }
        for (workers, batch), (wall, cpu) in medians.items():
            label = "sequential (baseline)" if workers == 1 else f"concurrent ({workers})"
            label += f", {batch} per request" if batch else ""
            per = cpu / args.accounts * 1000
            print(
                f"venue latency {latency:4.0f} ms  {label:<38} run {wall:6.2f} s wall  {cpu:5.2f} s CPU"
                f"  ({per:.2f} ms CPU per account)"
            )
        base_wall, base_cpu = medians[(1, 0)]
        ratio = medians[(args.concurrency, 0)][0] / base_wall
        print(f"venue latency {latency:4.0f} ms  ratio: concurrent / sequential wall time = {ratio:.2f}x")
        if args.batch:
            wall, cpu = medians[(args.concurrency, args.batch)]
            print(
                f"venue latency {latency:4.0f} ms  ratio: batched / sequential wall time = {wall / base_wall:.2f}x,"
                f" CPU = {cpu / base_cpu:.2f}x"
            )


def _control(base: str, action: str, params: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"{base}/control/{action}", data=json.dumps(params).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def _measure(
    store: SnapshotStore, venue: str, url: str, variants: list[tuple[int, int]], repeats: int
) -> dict[tuple[int, int], list[tuple[float, float]]]:
    timings: dict[tuple[int, int], list[tuple[float, float]]] = {v: [] for v in variants}
    for workers, batch in timings:  # warm-up: accounts known, connections open
        _run(store, venue, url, workers, batch)
    for _ in range(repeats):
        for (workers, batch), runs in timings.items():
            runs.append(_run(store, venue, url, workers, batch))
    return timings


def _run(store: SnapshotStore, venue: str, url: str, workers: int, batch: int) -> tuple[float, float]:
    with ExchangeClient(url, name=venue, policy=HttpPolicy(connections=workers)) as client:
        pool = FanOut(venue, workers)
        job = CollectPositions(venue, client, store, StalenessTracker(), fan_out=pool.map, batch=batch)
        cpu, wall = time.process_time(), time.perf_counter()
        outcome = job()
        taken = (time.perf_counter() - wall, time.process_time() - cpu)
        pool.close()
    assert outcome.status == "succeeded", outcome
    return taken


if __name__ == "__main__":
    main()
