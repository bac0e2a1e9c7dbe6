"""Garbage venue, long form: a real `serve` process fuzzed for N minutes (the issue's 10), RSS and rejections.

    .venv/bin/python benchmarks/garbage_venue.py [--minutes 10] [--interval-s 0.2] [--sample-s 30]

The same loop as tests/faults/test_garbage_venue.py (tests/faults/fuzz_venue.py): a fuzzing exchange on
loopback whose every record has one invalid field or whose whole answer is broken, plus the sandbox's
malform modes on exchange-a, while exchange-b and the other sandbox venues stay healthy. Printed: RSS of
the monitor process after warm-up, every ``--sample-s`` and at the end (with the slope of a least-squares
line over the samples, so "flat" is a number), the collection runs and rejected records of the fuzzing
venue, and the invariants the CI test asserts (no record accepted, every rejection stored with a reason,
every failed run with its error). Exits 1 when an invariant fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _support import benchmark_database
from sqlalchemy import create_engine

from sandbox import start
from services import database
from tests.faults import fuzz_venue as fv

MB = 2**20


def _slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    xs = [t / 60 for t, _ in samples]
    ys = [rss / MB for _, rss in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval-s", type=float, default=0.2, help="collection interval of every exchange")
    parser.add_argument("--sample-s", type=float, default=30.0, help="RSS sampling period")
    args = parser.parse_args()

    with benchmark_database() as url, tempfile.TemporaryDirectory(prefix="rm-garbage-") as tmp:
        db = create_engine(database.normalize_url(url))
        with start(seed=5, step_interval=0.2) as sandbox, fv.fuzz_venue() as venue_url:
            replica = fv.start_fuzzed_monitor(sandbox, venue_url, url, Path(tmp), interval_s=args.interval_s)
            try:
                print(f"fuzzing for {args.minutes:g} min (collection every {args.interval_s:g} s) ...", flush=True)
                run = fv.fuzz(
                    replica,
                    sandbox,
                    db,
                    args.minutes * 60,
                    sample_every_s=args.sample_s,
                    on_sample=lambda t, rss: print(f"  {t:6.0f} s  RSS {rss / MB:7.1f} MB", flush=True),
                )
                ready = replica.get("/api/v1/ready")[0]
            finally:
                code = replica.stop()
        counts = fv.garbage_counts(db)
        db.dispose()

    samples = run.rss_samples
    print(f"\nRSS after warm-up {run.rss_start / MB:.1f} MB -> end {run.rss_end / MB:.1f} MB"
          f" ({(run.rss_end - run.rss_start) / MB:+.1f} MB)")  # fmt: skip
    if samples:
        low, high = min(r for _, r in samples), max(r for _, r in samples)
        print(f"RSS samples: {len(samples)}, range {low / MB:.1f}-{high / MB:.1f} MB,"
              f" least-squares slope {_slope_mb_per_min(samples):+.3f} MB/min")  # fmt: skip
    print(f"fuzzing venue: {counts.runs:,} collection runs ({counts.failed_runs:,} failed as a whole, each with its"
          f" error: {counts.failed_without_error == 0}), {counts.rejected_counted:,} records rejected by runs,"
          f" {counts.stored:,} stored in rejected_records ({counts.without_reason} without a reason),"
          f" {counts.accepted} accepted")  # fmt: skip
    print(f"sandbox exchange-a malformed answers: {counts.sandbox_rejections:,} rejected records stored")
    print(f"healthy exchange-b: {run.healthy_runs:,} succeeded position runs during the fuzzing;"
          f" readiness at the end {ready}; exit code on SIGTERM {code}")  # fmt: skip
    ok = (
        counts.accepted == 0
        and counts.without_reason == 0
        and counts.failed_without_error == 0
        and counts.stored == counts.rejected_counted
        and ready == 200
        and code == 0
    )
    print("invariants:", "all held" if ok else "VIOLATED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
