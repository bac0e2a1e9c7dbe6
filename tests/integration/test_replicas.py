"""Real `serve` processes on one database: one runner per job, account shards split between replicas, failover
after SIGKILL, no duplicates."""

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
# Leased jobs every replica schedules at INTERVAL_S; partition maintenance (hourly) moves at its next hourly run.
# The per-account collection jobs (positions, balances, custody) are split by account shards instead.
FAST_JOBS = {
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
    for job in ("collect.settlements.custodian-a", "collect.prices.market-data", "evaluate"):
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


# --- account shards: per-account collection split across replicas ---------------------------------------

SHARDS = 8
ACCOUNTS_PER_EXCHANGE = 12
BALANCES_A = "collect.balances.exchange-a"


def _shards(replica: Replica, job: str = BALANCES_A) -> set[int]:
    return set(replica.get("/api/v1/health")[1].get("account_shards", {}).get(job, []))


def _split(replicas: list[Replica]) -> bool:
    """Every shard held by exactly one of the replicas, and each of them holds some."""
    held = [_shards(r) for r in replicas]
    return all(held) and sorted(s for h in held for s in h) == list(range(SHARDS))


def _account_sets(engine: Engine, since: datetime) -> dict[int, frozenset[str]]:
    """Per balances run of exchange-a since ``since``: the accounts it wrote a snapshot for."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT r.id, a.external_id FROM collection_runs r JOIN balance_snapshots b ON b.run_id = r.id"
                " JOIN accounts a ON a.id = b.account_id WHERE r.job = :job AND r.started_at >= :since"
            ),
            {"job": BALANCES_A, "since": since},
        )
        runs: dict[int, set[str]] = {}
        for run, account in rows:
            runs.setdefault(int(run), set()).add(str(account))
    return {run: frozenset(accounts) for run, accounts in runs.items()}


def _snapshots_per_account(engine: Engine, since: datetime, until: datetime) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.external_id, count(DISTINCT b.run_id) FROM balance_snapshots b"
                " JOIN collection_runs r ON r.id = b.run_id JOIN accounts a ON a.id = b.account_id"
                " WHERE r.job = :job AND r.started_at BETWEEN :a AND :b GROUP BY a.external_id"
            ),
            {"job": BALANCES_A, "a": since, "b": until},
        )
        return {str(account): int(n) for account, n in rows}


ALL_A = frozenset(f"exchange-a-acc-{n + 1}" for n in range(ACCOUNTS_PER_EXCHANGE))


def test_account_shards_split_collection_between_replicas_and_move_off_a_killed_one(
    fresh_database_url: str, db: Engine, tmp_path: Path
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS)
    with start(seed=11, step_interval=0.2, accounts_per_exchange=ACCOUNTS_PER_EXCHANGE) as sandbox:
        config = write_config(
            tmp_path / "rm.toml",
            sandbox,
            database={"url": fresh_database_url, "pool_size": 3},
            leases={"ttl_s": TTL_S, "account_shards": SHARDS},
            limits={"file": str(limits)},
            evaluation={"interval_s": INTERVAL_S},
            collection={"positions_interval_s": INTERVAL_S, "balances_interval_s": INTERVAL_S},
        )
        replicas: list[Replica] = []
        try:
            for name in ("replica-a", "replica-b"):
                replicas.append(start_replica(name, config, tmp_path))
            a, b = replicas
            wait_for(lambda: _split([a, b]), 20, "shards split between two replicas")

            # Steady state: each run covers one replica's accounts; together they cover every account once.
            since = datetime.now(UTC)
            wait_for(lambda: len(_account_sets(db, since)) >= 8, 30, "balances runs of both replicas")
            if not _split([a, b]):  # a heartbeat moved a shard meanwhile: measure a calm window
                wait_for(lambda: _split([a, b]), 20, "split again")
                since = datetime.now(UTC)
                wait_for(lambda: len(_account_sets(db, since)) >= 8, 30, "balances runs")
            sets = set(_account_sets(db, since).values())
            assert len(sets) == 2, sets  # two replicas, two fixed account sets
            first, second = sets
            assert not first & second
            assert first | second == ALL_A
            # Every account once per cadence, not once per replica.
            window_end = datetime.now(UTC)
            allowed = (window_end - since).total_seconds() / INTERVAL_S + 2
            counts = _snapshots_per_account(db, since, window_end)
            assert set(counts) == ALL_A
            assert all(1 <= n <= allowed for n in counts.values()), (counts, allowed)

            # Adding a replica adds capacity: it takes a share of the shards.
            replicas.append(start_replica("replica-c", config, tmp_path))
            c = replicas[2]
            wait_for(lambda: _split([a, b, c]), 20, "shards split between three replicas")

            # SIGKILL b: its shards expire after the TTL and the survivors claim them.
            b.kill()
            killed_at = datetime.now(UTC)
            wait_for(lambda: _split([a, c]), 3 * TTL_S + 5, "b's shards taken over")
            with db.connect() as conn:
                holders = {str(h) for (h,) in conn.execute(text("SELECT DISTINCT holder FROM collection_shards"))}
            assert not any(h.startswith("replica-b#") for h in holders)
            moved = datetime.now(UTC)
            # Every account of exchange-a collected again after the takeover, by a or c.
            wait_for(lambda: set(_snapshots_per_account(db, moved, datetime.now(UTC))) == ALL_A, 15, "recollected")
            assert (moved - killed_at).total_seconds() < 3 * TTL_S + 5
        finally:
            codes = {r.name: r.stop() for r in replicas}

    assert codes["replica-a"] == 0
    assert codes["replica-c"] == 0
    with db.connect() as conn:
        duplicates = conn.execute(
            text("SELECT fingerprint FROM alerts WHERE state <> 'resolved' GROUP BY fingerprint HAVING count(*) > 1")
        ).all()
        alerts = int(conn.scalar(text("SELECT count(*) FROM alerts")) or 0)
        opened = int(conn.scalar(text("SELECT count(*) FROM alert_events WHERE event_type = 'opened'")) or 0)
        left = {str(h) for (h,) in conn.execute(text("SELECT holder FROM collection_shards WHERE holder IS NOT NULL"))}
    assert alerts > 0
    assert duplicates == []
    assert opened == alerts
    assert left == set()  # clean stops gave their shards back; b's were taken over
    verified = audit_verify(fresh_database_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
