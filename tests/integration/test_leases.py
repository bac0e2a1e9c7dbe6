"""Job leases on a real PostgreSQL: one holder per job, takeover after expiry, release, and the scheduler wrapper."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from jobs import schedule
from services.leases import JobLeases, holder_id

pytestmark = pytest.mark.integration


def _holder(engine: Engine, job: str) -> str | None:
    with engine.connect() as conn:
        found = conn.scalar(text("SELECT holder FROM job_leases WHERE job_id = :job"), {"job": job})
        return None if found is None else str(found)


def test_one_holder_per_job_until_its_lease_expires(fresh_engine: Engine) -> None:
    a = JobLeases(fresh_engine, holder_id("a"), ttl_s=1.0)
    b = JobLeases(fresh_engine, holder_id("b"), ttl_s=1.0)
    assert a.claim("evaluate")
    assert not b.claim("evaluate")
    assert a.claim("evaluate")  # renewing its own lease
    assert b.claim("collect")  # other jobs are independent
    assert a.held() == {"evaluate"}
    assert b.held() == {"collect"}
    time.sleep(1.3)  # a stops renewing: its lease expires on the database clock
    assert b.claim("evaluate")
    assert _holder(fresh_engine, "evaluate") == b.holder
    assert not a.claim("evaluate")
    assert a.renew() == frozenset()  # the lost lease is not renewed and no longer advertised
    assert a.held() == frozenset()


def test_concurrent_first_claims_elect_exactly_one(fresh_engine: Engine) -> None:
    replicas = [JobLeases(fresh_engine, holder_id(f"r{i}"), ttl_s=30.0) for i in range(5)]
    results: list[bool] = []
    barrier = threading.Barrier(len(replicas))

    def race(leases: JobLeases) -> None:
        barrier.wait()
        results.append(leases.claim("race"))

    threads = [threading.Thread(target=race, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False, False, False, False, True]


def test_release_hands_the_jobs_over_at_once(fresh_engine: Engine) -> None:
    a = JobLeases(fresh_engine, holder_id("a"), ttl_s=60.0)
    b = JobLeases(fresh_engine, holder_id("b"), ttl_s=60.0)
    assert a.claim("evaluate")
    assert a.claim("reload_limits")
    assert a.renew() == {"evaluate", "reload_limits"}
    a.release()
    assert a.held() == frozenset()
    assert b.claim("evaluate")


def _sample(name: str, job: str) -> float:
    return REGISTRY.get_sample_value(name, {"job": job}) or 0.0


def test_a_job_runs_only_where_its_lease_is_held(fresh_engine: Engine) -> None:
    a = JobLeases(fresh_engine, holder_id("a"), ttl_s=60.0)
    b = JobLeases(fresh_engine, holder_id("b"), ttl_s=60.0)
    runs: list[str] = []
    job = "lease_wrapper_probe"
    on_a = schedule.instrumented(job, lambda: runs.append("a"), a.claim)
    on_b = schedule.instrumented(job, lambda: runs.append("b"), b.claim)
    skipped_before = _sample("risk_monitor_job_not_leader_total", job)
    for _ in range(3):
        on_a()
        on_b()
    assert runs == ["a", "a", "a"]
    assert _sample("risk_monitor_job_not_leader_total", job) == skipped_before + 3


def test_a_claim_that_cannot_reach_the_database_is_a_failed_run() -> None:
    from services import database

    engine = database.make_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1)
    try:
        leases = JobLeases(engine, holder_id("a"), ttl_s=5.0)
        runs: list[int] = []
        job = "lease_down_probe"
        failures = _sample("risk_monitor_job_failures_total", job)
        schedule.instrumented(job, lambda: runs.append(1), leases.claim)()
        assert runs == []
        assert _sample("risk_monitor_job_failures_total", job) == failures + 1
    finally:
        engine.dispose()
