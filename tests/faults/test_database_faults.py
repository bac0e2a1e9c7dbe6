"""PostgreSQL going away and PostgreSQL hanging under a running monitor (a private server per test).

The timings asserted are the issue's functional bounds (readiness 503 within 2 s of the stop, back to normal
within 5 s of the database returning), measured from the fault's own moment; they are not benchmarks. The
hanging server gets the same bounds (its readiness ping gives up after the 1 s connect timeout). Measured
here under a load average of ~12: 503 after ~1.2 s, back to normal ~1.2-1.4 s after the server returns.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from riskmonitor.v1 import risk_monitor_pb2 as pb
from riskmonitor.v1 import risk_monitor_pb2_grpc as pb_grpc
from sqlalchemy import Engine, create_engine, text

from sandbox import RunningSandbox
from services import database
from tests.ecosystem_fixtures import Receiver
from tests.faults.conftest import PrivatePostgres, thread_count
from tests.processes import ALWAYS_BREACHING_LIMITS, Replica, audit_verify, start_replica, wait_for, write_config

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
DOWN_S = 30.0  # the outage, for real: the suite's budget allows it (see the test's docstring)
READY_503_S = 2.0  # issue: readiness goes 503 within 2 s
RECOVERY_S = 5.0  # issue: back to normal within 5 s of the database returning
TICK_ANSWER_S = 2.0  # a tick batch answered from memory; generous for a loaded 2-core CI machine
TICK_ACCOUNT = "exchange-a:exchange-a-acc-3"
# A limit nothing in the sandbox's trading reaches (a few BTC per account); the tick's 45 BTC does.
BTC_LIMIT = """
[[limit]]
name = "btc-position-quantity"
type = "position_quantity"
per_account = true
symbol = "BTC-USDT"
side = "long"
warn = "15"
critical = "25"
"""


def _config(tmp_path: Path, sandbox: RunningSandbox, url: str, **sections: dict[str, object]) -> Path:
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS + BTC_LIMIT)
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
        **sections,
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


def _assert_back_to_normal(replica: Replica, since: float) -> None:
    """Ready again and jobs succeeding again within RECOVERY_S of ``since``, without a restart."""
    deadline = since + RECOVERY_S
    wait_for(lambda: _ready(replica) == 200, deadline - time.monotonic(), "ready again")
    failed = _failures(replica, "evaluate")
    runs = _runs(replica)
    wait_for(lambda: _runs(replica) >= runs + 2, deadline - time.monotonic(), "evaluations again")
    assert _failures(replica, "evaluate") == failed  # the runs since are successes, not failures


class TickStream:
    """One open StreamTicks call: ``send`` a batch and wait (bounded) for its answer."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self._requests: queue.Queue[pb.TickBatch | None] = queue.Queue()
        self._answers: queue.Queue[pb.TickBatchResult | BaseException] = queue.Queue()
        self._call = pb_grpc.RiskMonitorServiceStub(self.channel).StreamTicks(self._batches())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0

    def _batches(self) -> Iterator[pb.TickBatch]:
        while (batch := self._requests.get()) is not None:
            yield batch

    def _read(self) -> None:
        try:
            for answer in self._call:
                self._answers.put(answer)
        except BaseException as exc:  # handed to the test thread, which fails on it
            self._answers.put(exc)

    def send(self, *ticks: pb.Tick, timeout: float) -> tuple[pb.TickBatchResult, float]:
        self._next_id += 1
        started = time.monotonic()
        self._requests.put(pb.TickBatch(batch_id=self._next_id, ticks=ticks))
        answer = self._answers.get(timeout=timeout)
        if isinstance(answer, BaseException):
            raise answer
        assert answer.batch_id == self._next_id
        return answer, time.monotonic() - started

    def knows(self, account: str) -> bool:
        """True once the in-memory state has the account (seeded from the snapshots)."""
        try:
            pb_grpc.RiskMonitorServiceStub(self.channel).GetRiskSummary(
                pb.GetRiskSummaryRequest(account=account), timeout=5
            )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    def close(self) -> None:
        self._requests.put(None)
        self._reader.join(10)
        self.channel.close()


def _price_tick(price: str) -> pb.Tick:
    return pb.Tick(price=pb.PriceUpdate(symbol="ETH-USDT", price=price, source="fault-test"))


def _position_tick(quantity: str) -> pb.Tick:
    update = pb.PositionUpdate(account=TICK_ACCOUNT, symbol="BTC-USDT", quantity=quantity, avg_price="60000")
    return pb.Tick(position=update)


def _undelivered(db: Engine) -> set[str]:
    with db.connect() as conn:
        query = text("SELECT idempotency_key FROM notification_outbox WHERE delivered_at IS NULL")
        return {str(key) for (key,) in conn.execute(query)}


def _tick_alerts(db: Engine) -> list[tuple[int, str, list[str]]]:
    """The btc-position-quantity alerts of the tick account: (id, opening actor, outbox keys)."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.id, (SELECT e.actor FROM alert_events e WHERE e.alert_id = a.id"
                "              AND e.event_type = 'opened'),"
                " ARRAY(SELECT o.idempotency_key FROM alert_events e JOIN notification_outbox o ON o.event_id = e.id"
                "       WHERE e.alert_id = a.id ORDER BY o.id)"
                " FROM alerts a JOIN accounts ac ON ac.id = a.account_id"
                " WHERE a.limit_name = 'btc-position-quantity' AND ac.venue_id || ':' || ac.external_id = :account"
            ),
            {"account": TICK_ACCOUNT},
        )
        return [(int(i), str(actor), list(keys)) for i, actor, keys in rows]


def test_database_down_then_back_is_survived_without_a_restart_and_loses_nothing(
    sandbox: RunningSandbox, private_pg: PrivatePostgres, receiver: Receiver, tmp_path: Path
) -> None:
    """PostgreSQL stopped for the issue's full 30 s under a running monitor with an open tick stream.

    30 s for real rather than a shortened window: the outage itself is the only waiting this test adds over
    its shortened form (about 27 s), which keeps the whole suite within its ~10 minute budget; a shorter
    window would not show that nothing in the process (pool, leases, the tick writer's retry loop, the
    outbox's backoff) degrades with the outage's length at the scale the issue names.
    """
    receiver.status = 503  # the webhook refuses everything until the database is back: notifications pend
    port = receiver.start()
    notifications = {
        "channels": "webhook",
        "webhook_url": f"http://127.0.0.1:{port}/hook",
        "dispatch_interval_s": INTERVAL_S,
        "retry_base_s": 0.1,
        "retry_max_s": 0.5,
    }
    # Re-seeded every second, so the state learns the sandbox's accounts soon after the first collection
    # (and keeps trying, and failing, through the outage: the state it has stays).
    grpc_keys = {"tick_state_resync_s": 1.0}
    config = _config(tmp_path, sandbox, private_pg.url, notifications=notifications, grpc=grpc_keys)
    replica = start_replica("db-down", config, tmp_path)
    db = create_engine(database.normalize_url(private_pg.url), pool_pre_ping=True)
    ticks: TickStream | None = None
    try:
        _wait_serving(replica)
        ticks = TickStream(f"127.0.0.1:{replica.grpc_port}")
        ticks.send(_price_tick("3000"), timeout=10)  # the stream works before the fault
        wait_for(lambda: ticks is not None and ticks.knows(TICK_ACCOUNT), 30, "tick state seeded")
        failures = {job: _failures(replica, job) for job in ("evaluate", "collect.positions.exchange-a")}
        pending = _undelivered(db)
        assert pending, "the webhook refused everything: notifications must be pending at the stop"
        db.dispose()  # the test's own connections go with the server
        threads_before = thread_count(replica.proc.pid)

        stopped = time.monotonic()
        private_pg.down()
        wait_for(lambda: _ready(replica) == 503, stopped + READY_503_S - time.monotonic(), "readiness 503")
        _status, body = replica.get("/api/v1/ready")
        assert body["checks"]["database"] != "ok"
        assert body["checks"]["scheduler"] == "ok"

        # The tick path answers from memory, breach included, while the database is away.
        breach, took = ticks.send(_position_tick("45"), timeout=TICK_ANSWER_S)
        assert {(c.limit_name, c.account, c.level) for c in breach.changes} >= {
            ("btc-position-quantity", TICK_ACCOUNT, pb.LEVEL_CRITICAL)
        }, breach
        answered = [took]
        price = 3000
        while time.monotonic() < stopped + DOWN_S:
            price += 1
            answered.append(ticks.send(_price_tick(str(price)), timeout=TICK_ANSWER_S)[1])
            assert _ready(replica) == 503
            assert replica.get("/api/v1/health")[0] == 200
            assert replica.proc.poll() is None
            time.sleep(0.5)
        # Jobs failed cleanly all along, and were counted.
        for job, before in failures.items():
            assert _failures(replica, job) >= before + 10, job
        assert len(answered) >= DOWN_S / 2
        # Bounded: failing jobs and probes leave no threads behind (the stream's and pools' are reused).
        assert thread_count(replica.proc.pid) <= threads_before + 10

        private_pg.up()  # returns once the server accepts connections
        receiver.status = 200
        _assert_back_to_normal(replica, since=time.monotonic())

        # Nothing buffered is lost: the breach raised while the database was away is exactly one alert,
        # opened by the tick path's writer, with its event and outbox row...
        wait_for(lambda: _tick_alerts(db), RECOVERY_S, "the tick-path alert stored")  # the writer retries every 1 s
        [(_alert_id, actor, keys)] = _tick_alerts(db)
        assert actor == "system:ticks"
        assert keys
        # ... and every notification pending at the stop, and the new alert's, reaches the webhook.
        wait_for(lambda: (pending | set(keys)) <= set(receiver.accepted), 30, "pending notifications delivered")
        ticks.send(_position_tick("0"), timeout=TICK_ANSWER_S)  # the stream survived the whole outage
        assert len(_tick_alerts(db)) == 1
    finally:
        if ticks is not None:
            ticks.close()
        db.dispose()
        assert replica.stop() == 0
    verified = audit_verify(private_pg.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_hanging_database_bounds_every_call_and_piles_nothing_up(
    sandbox: RunningSandbox, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    replica = start_replica("db-hang", _config(tmp_path, sandbox, private_pg.url), tmp_path)
    try:
        _wait_serving(replica)
        baseline = thread_count(replica.proc.pid)
        still_running = replica.metric("risk_monitor_job_missed_total", job="evaluate", reason="still_running")

        frozen = time.monotonic()
        private_pg.freeze()
        try:
            # A scrape right away, while the pool still holds idle connections to the frozen server: the
            # scrape-time outbox gauges read the database, and must give up after the connect timeout.
            started = time.monotonic()
            assert replica.get("/metrics", timeout=10)[0] == 200
            assert time.monotonic() - started < 4, "a scrape waited on the hung database"
            # The readiness ping has a deadline (the connect timeout, 1 s): it answers instead of hanging.
            wait_for(lambda: _ready(replica) == 503, frozen + READY_503_S - time.monotonic(), "readiness 503")
            peak = baseline
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:  # probes and scrapes keep coming, as a balancer's and Prometheus'
                started = time.monotonic()
                assert _ready(replica) == 503
                assert time.monotonic() - started < 4, "a readiness probe waited on the hung database"
                started = time.monotonic()
                status, _body = replica.get("/metrics", timeout=10)
                assert status == 200
                # Scrape-time database reads (the outbox gauges) give up after the connect timeout.
                assert time.monotonic() - started < 4, "a scrape waited on the hung database"
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
        # A query frozen in flight resumes (or meets its statement timeout) once the server runs again.
        _assert_back_to_normal(replica, since=time.monotonic())
    finally:
        assert replica.stop() == 0
