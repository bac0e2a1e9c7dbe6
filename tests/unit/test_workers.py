"""services/workers.py with real child processes: answers, errors, deaths, hangs, restarts, metrics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from services.config import Settings
from services.workers import RemoteJob, WorkerError, WorkerProcess
from tests.unit import worker_jobs


def restarts(name: str) -> float:
    return REGISTRY.get_sample_value("risk_monitor_worker_restarts_total", {"worker": name}) or 0.0


@pytest.fixture
def worker(request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    name = f"test-{request.node.name}"[:60]
    running = WorkerProcess(name, worker_jobs.echo, Settings(log_level="WARNING"), ("hi",), call_timeout_s=20)
    running.start()
    yield running
    running.stop(timeout_s=10)
    assert not running.alive


def test_a_job_runs_in_the_child_with_the_builders_arguments(worker: WorkerProcess) -> None:
    answer = worker.call("say", "ann")
    assert answer == f"hi ann from {worker.pid}"
    assert worker.pid != os.getpid()
    assert worker.info["pid"] == worker.pid
    assert RemoteJob(worker, "say", lambda: ("bob",))() == f"hi bob from {worker.pid}"


def test_an_exception_in_the_child_is_a_worker_error_and_the_child_keeps_serving(worker: WorkerProcess) -> None:
    pid = worker.pid
    with pytest.raises(WorkerError, match="ValueError: bad input in the child"):
        worker.call("fail")
    assert worker.call("say", "again").startswith("hi again")
    assert worker.pid == pid


def test_requests_run_concurrently_in_the_child(worker: WorkerProcess) -> None:
    with ThreadPoolExecutor(2) as pool:
        arrivals = sorted(pool.map(lambda _: worker.call("meet", timeout_s=15), range(2)))
    assert arrivals == [0, 1]


def test_a_dead_child_fails_the_call_in_flight_and_the_next_call_starts_a_new_one(worker: WorkerProcess) -> None:
    before, pid = restarts(worker.name), worker.pid
    with pytest.raises(WorkerError, match="exited"):
        worker.call("die")
    assert worker.call("say", "ann").startswith("hi ann")
    assert worker.pid != pid
    assert restarts(worker.name) == before + 1


def test_a_call_past_its_timeout_kills_the_hung_child_and_the_next_call_gets_a_new_one(worker: WorkerProcess) -> None:
    pid = worker.pid
    with pytest.raises(WorkerError, match="ran past 1 s"):
        worker.call("hang", timeout_s=1)
    assert worker.call("say", "ann").startswith("hi ann")
    assert worker.pid != pid


def test_the_childs_metric_families_are_pulled_without_the_process_collectors(worker: WorkerProcess) -> None:
    worker.call("say", "a")
    worker.call("say", "b")
    report = worker.families(timeout_s=10)
    assert report is not None
    assert report.pid == worker.pid
    families = {f.name: f for f in report.families}
    calls = families["risk_monitor_test_worker_calls"]
    values = {s.name: s.value for s in calls.samples if s.labels == {"job": "say"}}
    assert values["risk_monitor_test_worker_calls_total"] == 2
    assert not [n for n in families if n.startswith(("process_", "python_"))]


def test_a_builder_that_fails_is_reported_with_its_reason() -> None:
    failing = WorkerProcess("test-broken", worker_jobs.broken, Settings(log_level="WARNING"))
    with pytest.raises(WorkerError, match="RuntimeError: cannot reach the venue list"):
        failing.start()
    failing.stop(timeout_s=5)


def test_a_stopped_worker_refuses_calls(worker: WorkerProcess) -> None:
    worker.stop(timeout_s=10)
    with pytest.raises(WorkerError, match="stopped"):
        worker.call("say", "ann")


def test_a_message_the_parent_cannot_read_restarts_the_worker_instead_of_stalling_it(worker: WorkerProcess) -> None:
    pid = worker.pid
    with pytest.raises(WorkerError) as failed:
        worker.call("unreadable", timeout_s=15)
    assert "ran past" not in str(failed.value)  # failed when the answer came, not at the call's timeout
    assert worker.call("say", "ann").startswith("hi ann")
    assert worker.pid != pid
