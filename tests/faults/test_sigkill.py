"""SIGKILL of the monitor inside a collection and inside an evaluation transaction, then a restart.

After it: every committed run has its whole batch, no alert is lost or duplicated, the audit chain verifies,
and every notification that was pending when the process died reaches the webhook receiver.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from sandbox import RunningSandbox
from tests.ecosystem_fixtures import Receiver
from tests.processes import ALWAYS_BREACHING_LIMITS, Replica, audit_verify, start_replica, wait_for, write_config

pytestmark = pytest.mark.integration

INTERVAL_S = 0.2
# Rows a run writes per kind: the batch must be all there or not there at all.
SNAPSHOT_TABLES = {
    "positions": "position_snapshots",
    "balances": "balance_snapshots",
    "custody": "custody_balance_snapshots",
    "prices": "price_snapshots",
}
# What a backend of the victim is doing when we kill it (pg_stat_activity.query of an open transaction).
COLLECTING = (
    r"^\s*(COPY (position|balance|custody_balance|price)_snapshots|INSERT INTO (collection_runs|snapshot_heads))"
)
EVALUATING = (
    r"^\s*(COPY (alerts|alert_events|notification_outbox)|SELECT hash FROM alert_events|UPDATE alerts"
    r"|INSERT INTO (evaluations|compliance_status|compliance_history|pnl_marks))"
)


def _kill_inside_transaction(replica: Replica, db: Engine, pattern: str) -> str:
    """SIGKILL the replica the moment one of its backends is inside a transaction matching ``pattern``."""
    query = text(
        "SELECT query FROM pg_stat_activity WHERE application_name LIKE :app AND xact_start IS NOT NULL"
        " AND state IN ('active', 'idle in transaction') AND query ~* :pattern AND pid <> pg_backend_pid() LIMIT 1"
    )
    deadline = time.monotonic() + 60
    with db.connect() as conn:
        while time.monotonic() < deadline:
            caught = conn.execute(query, {"app": f"%:{replica.name}", "pattern": pattern}).scalar()
            conn.rollback()
            if caught is not None:
                replica.kill()
                return str(caught)
    raise AssertionError(f"{replica.name} never opened a transaction matching {pattern!r}")


def _scalar(db: Engine, sql: str) -> int:
    with db.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def test_sigkill_mid_collection_and_mid_evaluation_loses_and_duplicates_nothing(
    sandbox: RunningSandbox, fresh_database_url: str, db: Engine, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 503  # deliveries fail while the victims run: notifications stay pending in the outbox
    port = receiver.start()
    limits = tmp_path / "limits.toml"
    limits.write_text(ALWAYS_BREACHING_LIMITS)
    config = write_config(
        tmp_path / "rm.toml",
        sandbox,
        database={"url": fresh_database_url, "pool_size": 4},
        limits={"file": str(limits)},
        evaluation={"interval_s": INTERVAL_S},
        collection={
            "positions_interval_s": INTERVAL_S,
            "balances_interval_s": INTERVAL_S,
            "prices_interval_s": INTERVAL_S,
            "settlements_interval_s": INTERVAL_S,
        },
        notifications={
            "channels": "webhook",
            "webhook_url": f"http://127.0.0.1:{port}/hook",
            "dispatch_interval_s": INTERVAL_S,
            "retry_base_s": 0.1,
            "retry_max_s": 0.5,
        },
        leases={"ttl_s": 1.0},  # a killed victim's leases expire quickly for the next one
    )

    caught: list[str] = []
    for n, pattern in enumerate((COLLECTING, EVALUATING, COLLECTING, EVALUATING)):
        victim = start_replica(f"victim-{n}", config, tmp_path)
        evaluated = _scalar(db, "SELECT count(*) FROM evaluations WHERE status = 'succeeded'")
        try:
            # Let it commit work first (alerts, pending notifications), then kill it mid-transaction.
            wait_for(
                lambda n=evaluated: _scalar(db, "SELECT count(*) FROM evaluations WHERE status = 'succeeded'") >= n + 2,
                60,
                "two evaluations",
            )
            caught.append(_kill_inside_transaction(victim, db, pattern))
        finally:
            victim.stop()
    assert _scalar(db, "SELECT count(*) FROM alerts") > 0

    with db.connect() as conn:
        query = text("SELECT idempotency_key FROM notification_outbox WHERE delivered_at IS NULL")
        pending = {str(key) for (key,) in conn.execute(query)}
    assert pending, "the webhook refused everything: some notification must have been pending at the kill"

    receiver.status = 200
    survivor = start_replica("survivor", config, tmp_path)
    try:
        wait_for(lambda: pending <= set(receiver.accepted), 60, "every pending notification delivered")
    finally:
        assert survivor.stop() == 0

    with db.connect() as conn:
        for kind, table in SNAPSHOT_TABLES.items():
            torn = conn.execute(
                text(
                    f"SELECT r.id, r.records_accepted, count(s.run_id) FROM collection_runs r"
                    f" LEFT JOIN {table} s ON s.run_id = r.id WHERE r.kind = :kind"
                    " AND r.status IN ('succeeded', 'partial') GROUP BY r.id, r.records_accepted"
                    " HAVING count(s.run_id) <> r.records_accepted"
                ),
                {"kind": kind},
            ).all()
            assert torn == [], f"{kind}: runs whose batch is not whole: {torn[:5]}"
        assert conn.scalar(text("SELECT count(*) FROM collection_runs WHERE status = 'running'")) == 0
        duplicates = conn.execute(
            text("SELECT fingerprint FROM alerts WHERE state <> 'resolved' GROUP BY fingerprint HAVING count(*) > 1")
        ).all()
        assert duplicates == []
        alerts = conn.scalar(text("SELECT count(*) FROM alerts"))
        opened = conn.scalar(text("SELECT count(*) FROM alert_events WHERE event_type = 'opened'"))
        assert opened == alerts  # every alert has its 'opened' event: no half-written alert survived a kill
        orphans = conn.scalar(
            text(
                "SELECT count(*) FROM alert_events e WHERE NOT EXISTS"
                " (SELECT 1 FROM notification_outbox o WHERE o.event_id = e.id)"
            )
        )
        assert orphans == 0  # every event has its outbox row (written in the same transaction)
        undelivered = conn.scalar(
            text("SELECT count(*) FROM notification_outbox WHERE delivered_at IS NULL AND idempotency_key = ANY(:k)"),
            {"k": list(pending)},
        )
        assert undelivered == 0
    verified = audit_verify(fresh_database_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert len(caught) == 4, caught
