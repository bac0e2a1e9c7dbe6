"""One positions collection run over N accounts: sequential requests (the baseline) vs concurrent, same run.

    .venv/bin/python benchmarks/collect.py [--accounts 500] [--concurrency 16] [--repeats 3] [--latency-ms 0 20]

The sandbox runs in a child process (ten traded symbols, every account traded into about ten positions),
so this process's CPU time is the collector's alone. Each repeat runs ``collect.positions.exchange-a``
once with one request thread (what every run did before concurrent requests) and once with
``--concurrency`` threads, interleaved so load hits both alike, once per venue latency in
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
            results: dict[float, dict[int, list[tuple[float, float]]]] = {}
            for latency in args.latency_ms:
                _control(str(where["control"]), "clear", {})
                if latency:
                    _control(str(where["control"]), "delay", {"venue": venue, "seconds": latency / 1000})
                results[latency] = _measure(store, venue, str(exchanges[venue]), args.concurrency, args.repeats)
        finally:
            engine.dispose()
            sandbox.terminate()
            sandbox.wait(30)

    print(f"accounts: {args.accounts} (about 10 positions each), repeats: {args.repeats}")
    for latency, timings in results.items():
        medians = {
            w: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            for w, runs in timings.items()
        }
        for workers, (wall, cpu) in medians.items():
            label = "sequential (baseline)" if workers == 1 else f"concurrent ({workers})"
            per = cpu / args.accounts * 1000
            print(
                f"venue latency {latency:4.0f} ms  {label:<22} run {wall:6.2f} s wall  {cpu:5.2f} s CPU"
                f"  ({per:.2f} ms CPU per account)"
            )
        ratio = medians[args.concurrency][0] / medians[1][0]
        print(f"venue latency {latency:4.0f} ms  ratio: concurrent / sequential wall time = {ratio:.2f}x")


def _control(base: str, action: str, params: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"{base}/control/{action}", data=json.dumps(params).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def _measure(
    store: SnapshotStore, venue: str, url: str, concurrency: int, repeats: int
) -> dict[int, list[tuple[float, float]]]:
    timings: dict[int, list[tuple[float, float]]] = {1: [], concurrency: []}
    for workers in timings:  # warm-up: accounts known, connections open
        _run(store, venue, url, workers)
    for _ in range(repeats):
        for workers, runs in timings.items():
            runs.append(_run(store, venue, url, workers))
    return timings


def _run(store: SnapshotStore, venue: str, url: str, workers: int) -> tuple[float, float]:
    with ExchangeClient(url, name=venue, policy=HttpPolicy(connections=workers)) as client:
        pool = FanOut(venue, workers)
        job = CollectPositions(venue, client, store, StalenessTracker(), fan_out=pool.map)
        cpu, wall = time.process_time(), time.perf_counter()
        outcome = job()
        taken = (time.perf_counter() - wall, time.process_time() - cpu)
        pool.close()
    assert outcome.status == "succeeded", outcome
    return taken


if __name__ == "__main__":
    main()
