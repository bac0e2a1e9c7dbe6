"""Shared by the benchmark scripts: a throwaway migrated database and small timing helpers."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from services import database  # noqa: E402

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _local_server_answers() -> bool:
    import psycopg

    try:
        psycopg.connect(LOCAL_PG, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@contextmanager
def benchmark_database() -> Iterator[str]:
    """A migrated database on TEST_DATABASE_URL, else the local server, else the embedded PostgreSQL."""
    server = os.environ.get("TEST_DATABASE_URL") or os.environ.get("RISK_MONITOR_TEST_DATABASE_URL")
    if not server and _local_server_answers():
        server = LOCAL_PG
    if server:
        print(f"database: {database.safe_url(server)}")
        with database.temporary_database(server, prefix="risk_monitor_bench") as url:
            database.upgrade(url)
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="rm-bench-") as tmp:
        embedded = database.EmbeddedPostgres(Path(tmp) / "pgdata")
        embedded.start()
        print("database: embedded PostgreSQL")
        try:
            with database.temporary_database(embedded.admin_url, prefix="risk_monitor_bench") as url:
                database.upgrade(url)
                yield url
        finally:
            embedded.stop()


def best_of(repeats: int, func: Callable[[], object]) -> tuple[float, list[float]]:
    """Run ``func`` ``repeats`` times; return (best seconds, all timings)."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        timings.append(time.perf_counter() - started)
    return min(timings), timings


def median(values: list[float]) -> float:
    return statistics.median(values)
