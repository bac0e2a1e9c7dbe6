"""PostgreSQL going away and PostgreSQL hanging under a running monitor (a private server per test).

Not covered here: the gRPC tick stream answering from memory while the database is away (StreamTicks is
not on this branch).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sandbox import RunningSandbox
from tests.faults.conftest import PrivatePostgres, thread_count
from tests.processes import ALWAYS_BREACHING_LIMITS, Replica, start_replica, wait_for, write_config

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5


def _config(tmp_path: Path, sandbox: RunningSandbox, url: str) -> Path:
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS)
    return write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": url, "pool_size": 3, "connect_timeout_s": 1.0, "statement_timeout_s": 2.0},
        limits={"file": str(limits)},
        evaluation={"interval_s": INTERVAL_S},
        collection={
            "positions_interval_s": INTERVAL_S,
            "balances_interval_s": INTERVAL_S,
            "prices_interval_s": INTERVAL_S,
            "settlements_interval_s": INTERVAL_S,
        },
        leases={"ttl_s": 2.0},
    )


def _ready(replica: Replica) -> int:
    return replica.get("/api/v1/ready")[0]


def _runs(replica: Replica, job: str = "evaluate") -> float:
    return replica.metric("risk_monitor_job_duration_seconds_count", job=job)


def _failures(replica: Replica, job: str) -> float:
    return replica.metric("risk_monitor_job_failures_total", job=job)


def _wait_serving(replica: Replica) -> None:
    wait_for(lambda: _ready(replica) == 200, 30, "ready")
    runs = _runs(replica)
    wait_for(lambda: _runs(replica) >= runs + 2, 30, "evaluations running")


def _assert_back_to_normal(replica: Replica, timeout: float) -> None:
    """Ready again and jobs succeeding again, without a restart of the process."""
    wait_for(lambda: _ready(replica) == 200, timeout, "ready again")
    failed = _failures(replica, "evaluate")
    runs = _runs(replica)
    wait_for(lambda: _runs(replica) >= runs + 2, timeout, "evaluations again")
    assert _failures(replica, "evaluate") == failed  # the runs since are successes, not failures


def test_database_down_then_back_is_survived_without_a_restart(
    sandbox: RunningSandbox, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    replica = start_replica("db-down", _config(tmp_path, sandbox, private_pg.url), tmp_path)
    try:
        _wait_serving(replica)
        failures = {job: _failures(replica, job) for job in ("evaluate", "collect.positions.exchange-a")}

        private_pg.down()
        wait_for(lambda: _ready(replica) == 503, 3, "readiness 503 after the database went away")
        _status, body = replica.get("/api/v1/ready")
        assert body["checks"]["database"] != "ok"
        assert body["checks"]["scheduler"] == "ok"
        # Jobs fail cleanly, and are counted.
        for job, before in failures.items():
            wait_for(lambda j=job, b=before: _failures(replica, j) >= b + 2, 15, f"{job} failing")
        assert replica.proc.poll() is None
        assert replica.get("/api/v1/health")[0] == 200

        private_pg.up()
        _assert_back_to_normal(replica, timeout=10)
    finally:
        assert replica.stop() == 0


def test_a_hanging_database_bounds_every_call_and_piles_nothing_up(
    sandbox: RunningSandbox, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    replica = start_replica("db-hang", _config(tmp_path, sandbox, private_pg.url), tmp_path)
    try:
        _wait_serving(replica)
        baseline = thread_count(replica.proc.pid)
        still_running = replica.metric("risk_monitor_job_missed_total", job="evaluate", reason="still_running")

        private_pg.freeze()
        try:
            # The readiness ping has a deadline (the connect timeout): it answers instead of hanging.
            wait_for(lambda: _ready(replica) == 503, 6, "readiness 503 while the database hangs")
            peak = baseline
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:  # probes keep coming, as a load balancer's would
                started = time.monotonic()
                assert _ready(replica) == 503
                assert time.monotonic() - started < 4, "a readiness probe waited on the hung database"
                peak = max(peak, thread_count(replica.proc.pid))
                time.sleep(0.2)
            # Stuck runs are not stacked: the scheduler skips a job's run while its previous run is stuck.
            assert replica.metric("risk_monitor_job_missed_total", job="evaluate", reason="still_running") > (
                still_running
            )
            # Bounded pools: one stuck thread per job at most, one stuck ping; not one per probe or per run.
            assert peak <= baseline + 20, (baseline, peak)
        finally:
            private_pg.thaw()

        _assert_back_to_normal(replica, timeout=15)
    finally:
        assert replica.stop() == 0
