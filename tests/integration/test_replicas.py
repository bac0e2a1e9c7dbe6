"""Three real `serve` processes on one database: one runner per job, failover after SIGKILL, no duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from sandbox import RunningSandbox, start
from services import database
from tests.processes import ALWAYS_BREACHING_LIMITS, Replica, audit_verify, start_replica, wait_for, write_config

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
TTL_S = 2.0
# Jobs every replica schedules at INTERVAL_S; partition maintenance (hourly) moves at its next hourly run.
FAST_JOBS = {
    "collect.positions.exchange-a",
    "collect.balances.exchange-a",
    "collect.positions.exchange-b",
    "collect.balances.exchange-b",
    "collect.custody.custodian-a",
    "collect.settlements.custodian-a",
    "collect.prices.market-data",
    "evaluate",
    "reload_limits",
}


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=11, step_interval=0.2) as running:
        yield running


@pytest.fixture
def db(fresh_database_url: str) -> Iterator[Engine]:
    engine = create_engine(database.normalize_url(fresh_database_url))
    yield engine
    engine.dispose()


def _leases(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(j): str(h) for j, h in conn.execute(text("SELECT job_id, holder FROM job_leases"))}


def _runs(engine: Engine, since: datetime, until: datetime) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT job, count(*) FROM collection_runs WHERE started_at BETWEEN :a AND :b GROUP BY job"),
            {"a": since, "b": until},
        )
        found = {str(job): int(n) for job, n in rows}
        found["evaluate"] = int(
            conn.scalar(
                text("SELECT count(*) FROM evaluations WHERE path = 'scheduled' AND started_at BETWEEN :a AND :b"),
                {"a": since, "b": until},
            )
            or 0
        )
    return found


def _assert_one_runner_per_interval(engine: Engine, since: datetime, until: datetime) -> None:
    """Three replicas each running every job would write ~3 runs per interval; one runner writes <= 1."""
    allowed = (until - since).total_seconds() / INTERVAL_S + 2
    runs = _runs(engine, since, until)
    for job in ("collect.positions.exchange-a", "collect.balances.exchange-b", "evaluate"):
        assert 0 < runs.get(job, 0) <= allowed, (job, runs, allowed)


def test_three_replicas_run_each_job_once_and_fail_over_after_sigkill(
    sandbox: RunningSandbox, fresh_database_url: str, db: Engine, tmp_path: Path
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS)
    config = write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": fresh_database_url, "pool_size": 3},
        leases={"ttl_s": TTL_S},
        limits={"file": str(limits), "reload_interval_s": INTERVAL_S},
        evaluation={"interval_s": INTERVAL_S},
        collection={
            "positions_interval_s": INTERVAL_S,
            "balances_interval_s": INTERVAL_S,
            "prices_interval_s": INTERVAL_S,
            "settlements_interval_s": INTERVAL_S,
        },
    )
    replicas: list[Replica] = []
    try:
        for name in ("replica-a", "replica-b", "replica-c"):
            replicas.append(start_replica(name, config, tmp_path))

        # Every job gets exactly one leader, and the replicas' own view agrees with the lease table.
        wait_for(lambda: set(_leases(db)) >= FAST_JOBS, 30, "every job leased")
        wait_for(lambda: set().union(*(r.leads() for r in replicas)) >= FAST_JOBS, 10, "leaders advertised")
        led = [r.leads() for r in replicas]
        for i in range(len(led)):
            for j in range(i + 1, len(led)):
                assert not led[i] & led[j], "two replicas claim the same job"
        # Non-leaders skip and count it; the leader runs.
        leader = next(r for r in replicas if "evaluate" in r.leads())
        others = [r for r in replicas if r is not leader]
        wait_for(
            lambda: all(r.metric("risk_monitor_job_not_leader_total", job="evaluate") > 0 for r in others), 15, "skips"
        )
        assert all(r.metric("risk_monitor_job_duration_seconds_count", job="evaluate") == 0 for r in others)
        assert leader.metric("risk_monitor_job_leader", job="evaluate") == 1

        since = datetime.now(UTC)
        wait_for(lambda: _runs(db, since, datetime.now(UTC)).get("evaluate", 0) >= 6, 30, "evaluations")
        _assert_one_runner_per_interval(db, since, datetime.now(UTC))

        # SIGKILL the leader: no release, so the survivors wait for the lease to expire, then take over.
        leader.kill()
        survivors = others
        killed_at = datetime.now(UTC)
        wait_for(
            lambda: set().union(*(r.leads() for r in survivors)) >= FAST_JOBS, 5 * TTL_S + 5, "failover of every job"
        )
        held = _leases(db)
        assert not any(held[job].startswith(f"{leader.name}#") for job in FAST_JOBS)
        wait_for(lambda: _runs(db, killed_at, datetime.now(UTC)).get("evaluate", 0) >= 4, 30, "evaluation resumed")
        resumed = datetime.now(UTC)
        wait_for(lambda: _runs(db, resumed, datetime.now(UTC)).get("evaluate", 0) >= 6, 30, "evaluations")
        _assert_one_runner_per_interval(db, resumed, datetime.now(UTC))
        a, b = (r.leads() for r in survivors)
        assert not a & b
    finally:
        codes = {r.name: r.stop() for r in replicas}

    assert {n: c for n, c in codes.items() if n != leader.name} == {n: 0 for n in codes if n != leader.name}
    with db.connect() as conn:
        duplicates = conn.execute(
            text("SELECT fingerprint FROM alerts WHERE state <> 'resolved' GROUP BY fingerprint HAVING count(*) > 1")
        ).all()
        alerts = int(conn.scalar(text("SELECT count(*) FROM alerts")) or 0)
        opened = int(conn.scalar(text("SELECT count(*) FROM alert_events WHERE event_type = 'opened'")) or 0)
        leftover = int(conn.scalar(text("SELECT count(*) FROM job_leases")) or 0)
    assert alerts > 0  # the limits breach, so there is something that could have been duplicated
    assert duplicates == []
    assert opened == alerts  # one 'opened' event per alert: no replica re-opened what another opened
    # Clean stops released their leases; only the killed replica's remain until they expire.
    assert leftover == 0 or all(h.startswith(f"{leader.name}#") for h in _leases(db).values())
    verified = audit_verify(fresh_database_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
