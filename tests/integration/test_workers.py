"""A real Monitor with ``runtime.workers``: collection, evaluation and the tick path in three child processes,
the scheduler and the public listeners in this one, against the sandbox venues."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine, text

from sandbox import RunningSandbox, start
from services.app import Monitor
from services.config import Settings
from services.rpc.relay import SECRET_HEADER
from services.venue_settings import VenueSettings
from tests.integration.collection_runs import SANDBOX_JOBS, succeeded
from tests.processes import ALWAYS_BREACHING_LIMITS, start_replica, wait_for, write_config

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and all((k, val) in lab for k, val in labels.items()))


def tick_batch(batch_id: int, price: str) -> pb.TickBatch:
    return pb.TickBatch(
        batch_id=batch_id, ticks=[pb.Tick(price=pb.PriceUpdate(symbol="BTC-USDT", price=price, source="ticks"))]
    )


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=9, step_interval=0.2) as running:
        running.world.step(20)  # trades: every account holds positions
        yield running


@pytest.fixture
def monitor(sandbox: RunningSandbox, fresh_database_url: str, tmp_path: Path) -> Iterator[Monitor]:
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS)
    venues = (
        *(VenueSettings(v, "exchange", url=url, batch=50) for v, url in sandbox.exchange_urls.items()),
        VenueSettings("custodian-a", "custodian", url=sandbox.custodian_urls["custodian-a"]),
        VenueSettings("market-data", "market_data", target=sandbox.market_data_target),
    )
    settings = Settings(
        database_url=fresh_database_url,
        embedded_data_dir=str(tmp_path / "unused"),
        http_port=0,
        grpc_port=0,
        venues=venues,
        limits_file=str(limits),
        evaluation_interval_s=0.5,
        collection_prices_interval_s=0.3,
        collection_positions_interval_s=0.3,
        collection_balances_interval_s=0.3,
        collection_settlements_interval_s=0.5,
        collection_read_timeout_s=5.0,
        grpc_tick_state_resync_s=1.0,
        runtime_workers=True,
    )
    running = Monitor(settings)
    running.start()
    try:
        yield running
    finally:
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 30, "stopping the monitor and its workers took too long"
        assert not any(w.alive for w in running.workers.values())


def test_the_work_runs_in_three_worker_processes_and_is_served_as_before(
    monitor: Monitor, fresh_engine: Engine
) -> None:
    pids = {name: w.pid for name, w in monitor.workers.items()}
    assert set(pids) == {"collection", "evaluation", "ticks"}
    assert os.getpid() not in pids.values()
    assert len(set(pids.values())) == 3

    began = datetime.now(UTC)
    wait_for(lambda: set(succeeded(fresh_engine, began)) == SANDBOX_JOBS, 30, "every collection job succeeded")
    with fresh_engine.connect() as conn:
        wait_for(lambda: conn.scalar(text("SELECT count(*) FROM alerts WHERE state = 'open'")), 30, "alerts opened")
        conn.rollback()

    # One /metrics with the workers' samples merged in: venue calls (collection), alert events (evaluation),
    # job runs (this process's scheduler); every family once.
    samples = scrape(monitor.http.port if monitor.http else 0)
    assert total(samples, "risk_monitor_venue_requests_total", venue="exchange-a", outcome="ok") > 0
    assert total(samples, "risk_monitor_alert_events_total", event_type="opened") > 0
    assert total(samples, "risk_monitor_job_duration_seconds_count", job="evaluate") > 0
    assert total(samples, "risk_monitor_up") == 1
    assert total(samples, "risk_data_staleness_seconds", venue="exchange-b", kind="positions") < 10

    # The tick path answers through this process's port (relayed to its worker).
    with grpc.insecure_channel(f"127.0.0.1:{monitor.grpc_port}") as channel:
        stub = pb_grpc.RiskMonitorServiceStub(channel)

        def streamed() -> list[pb.TickBatchResult]:
            return list(stub.StreamTicks(iter([tick_batch(1, "61000"), tick_batch(2, "61500")]), timeout=20))

        # The tick path seeded itself before the first collection; its resync (every 1 s) brings the accounts.
        wait_for(lambda: sum(r.accounts_evaluated for r in streamed()) > 0, 30, "ticks re-value accounts")
        results = streamed()
        assert [r.batch_id for r in results] == [1, 2]
        assert sum(r.ticks_applied for r in results) == 2
        bad = list(stub.StreamTicks(iter([tick_batch(3, "-1")]), timeout=20))
        assert bad[0].errors[0].field  # the worker's validation, relayed
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetRiskSummary(pb.GetRiskSummaryRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # the worker's status, relayed

    # The worker's own port takes nothing without the parent's secret.
    port = int(monitor.workers["ticks"].info["port"])  # type: ignore[call-overload]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RiskMonitorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.StreamTicks(iter([tick_batch(1, "61000")]), timeout=10))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as wrong:
            stub.CheckOrder(pb.CheckOrderRequest(), timeout=10, metadata=((SECRET_HEADER, "guess"),))
        assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_killed_worker_fails_its_runs_and_is_started_again(
    monitor: Monitor, fresh_engine: Engine, sandbox: RunningSandbox
) -> None:
    collection = monitor.workers["collection"]
    first = collection.pid
    assert first is not None
    wait_for(lambda: succeeded(fresh_engine, datetime(2000, 1, 1, tzinfo=UTC)), 30, "a first collection")
    port = monitor.http.port if monitor.http else 0
    records_before = total(scrape(port), "risk_monitor_collection_records_total")  # counted in the worker
    assert records_before > 0

    sandbox.slow("exchange-a", 3.0)  # so a run is in flight when the worker dies
    time.sleep(1.0)
    os.kill(first, signal.SIGKILL)
    sandbox.clear_faults()
    wait_for(lambda: collection.pid not in (None, first), 30, "a new collection worker")
    after = datetime.now(UTC)
    wait_for(lambda: set(succeeded(fresh_engine, after)) == SANDBOX_JOBS, 30, "collection resumed")
    report = collection.families(timeout_s=10)  # the new worker's own count, from zero
    assert report is not None
    assert report.pid != first
    own = sum(s.value for f in report.families for s in f.samples if s.name == "risk_monitor_collection_records_total")
    samples = scrape(port)
    assert total(samples, "risk_monitor_worker_restarts_total", worker="collection") == 1
    # the merged counter goes on from what the dead worker last reported instead of dropping to the new one's
    assert total(samples, "risk_monitor_collection_records_total") >= records_before + own
    assert total(samples, "risk_monitor_job_failures_total") >= 1  # the runs in flight at the kill
    with fresh_engine.connect() as conn:  # nothing half-written by the killed runs
        open_runs = conn.scalar(
            text(
                "SELECT count(*) FROM collection_runs"
                " WHERE finished_at IS NULL AND started_at < now() - '5 s'::interval"
            )
        )
    assert open_runs == 0

    ticks = monitor.workers["ticks"]
    old = ticks.pid
    assert old is not None
    killed = threading.Event()

    def batches() -> Iterator[pb.TickBatch]:
        yield tick_batch(1, "62000")
        killed.wait(30)
        yield tick_batch(2, "62100")

    with grpc.insecure_channel(f"127.0.0.1:{monitor.grpc_port}") as channel:
        stub = pb_grpc.RiskMonitorServiceStub(channel)
        open_stream = stub.StreamTicks(batches(), timeout=60)
        assert next(open_stream).batch_id == 1  # answered by the worker about to die
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not ticks.alive, 30, "the tick worker gone")
        killed.set()
        with pytest.raises(grpc.RpcError) as ended:
            list(open_stream)
        assert ended.value.code() is grpc.StatusCode.UNAVAILABLE  # the client reconnects
        results = list(stub.StreamTicks(iter([tick_batch(3, "62000")]), timeout=60))  # starts a new worker
    assert results[0].ticks_applied == 1
    assert ticks.pid not in (None, old)


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def _policy(tid: int) -> int | None:
    try:
        return os.sched_getscheduler(tid)
    except ProcessLookupError:  # the thread ended meanwhile
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def test_serve_runs_its_scheduler_in_real_time_and_the_rest_in_the_normal_class(
    sandbox: RunningSandbox, fresh_database_url: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": fresh_database_url},
        runtime={"scheduler_realtime_priority": 5},
    )
    replica = start_replica("realtime", config, tmp_path)
    try:
        pid = replica.proc.pid

        def rr_threads() -> set[int]:
            return {t for t in _threads(pid) if _policy(t) == os.SCHED_RR}

        wait_for(rr_threads, 30, "the scheduler's threads in SCHED_RR")  # its loop and the job pools' threads
        assert {os.sched_getparam(t).sched_priority for t in rr_threads()} == {5}
        normal = set(_threads(pid)) - rr_threads()
        assert pid in normal  # the main thread left the class after starting the scheduler
        assert len(normal) > 1  # so did the gRPC and HTTP threads, started before it
        children = _children(pid)  # the three workers and multiprocessing's resource tracker
        workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 3
        assert {_policy(t) for c in children for t in _threads(c)} <= {os.SCHED_OTHER, None}
        assert replica.get("/api/v1/ready")[0] == 200
    finally:
        assert replica.stop() == 0
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "workers outlived serve"
