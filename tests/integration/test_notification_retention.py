"""Delivered notifications: every delivery is recorded for good, and retention purges only delivered rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from jobs.maintain_partitions import MaintainPartitions
from services import database
from services.notifications.channels import HttpJsonPoster, WebhookChannel
from services.notifications.dispatcher import Dispatcher
from services.notifications.retention import purge_delivered
from services.partitions import RetentionPolicy
from tests.ecosystem_fixtures import Receiver
from tests.integration.outbox_rows import add_event, attempts, insert_alert

pytestmark = pytest.mark.integration

OLD = timedelta(days=40)  # beyond the default 30 days


def _purged() -> float:
    return REGISTRY.get_sample_value("risk_monitor_notifications_purged_total") or 0.0


def _deliver(engine: Engine, port: int, name: str, count: int) -> list[str]:
    """``count`` events delivered to the receiver through the real dispatcher; returns their keys."""
    keys = [f"{name}:{add_event(engine, insert_alert(engine), 'opened', [name])}" for _ in range(count)]
    channel = WebhookChannel(f"http://127.0.0.1:{port}/hooks", HttpJsonPoster(timeout_s=2.0), secret="s", name=name)
    dispatch = Dispatcher(database.session_factory(engine), {name: channel}, retry_base_s=0.05, retry_max_s=0.2)
    assert dispatch() == count
    return keys


def _outbox_ids(engine: Engine, keys: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT idempotency_key, id FROM notification_outbox WHERE idempotency_key = ANY(:k)"), {"k": keys}
        ).all()
    return {str(k): int(i) for k, i in rows}


def _deliveries(engine: Engine, keys: list[str]) -> dict[str, tuple[int, int | None, str]]:
    """key -> (attempts, status_code, event type in the recorded payload)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT idempotency_key, attempts, status_code, payload FROM notification_deliveries"
                " WHERE idempotency_key = ANY(:k)"
            ),
            {"k": keys},
        ).all()
    return {str(k): (int(n), s, str(p["event_type"])) for k, n, s, p in rows}


def _backdate(engine: Engine, keys: list[str], by: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE notification_outbox SET created_at = created_at - :by,"
                " delivered_at = delivered_at - :by WHERE idempotency_key = ANY(:k)"
            ),
            {"by": by, "k": keys},
        )


def test_a_delivery_is_recorded_in_the_same_transaction(engine: Engine, receiver: Receiver) -> None:
    name = f"webhook-{uuid.uuid4().hex[:8]}"
    [key] = _deliver(engine, receiver.start(), name, 1)
    assert _deliveries(engine, [key]) == {key: (1, 200, "opened")}


def test_retention_purges_old_delivered_rows_only_and_keeps_every_delivery_record(
    engine: Engine, receiver: Receiver
) -> None:
    name = f"webhook-{uuid.uuid4().hex[:8]}"
    port = receiver.start()
    delivered_old = _deliver(engine, port, name, 2)
    recent = _deliver(engine, port, name, 1)
    # Delivered by a replica from before notification_deliveries existed: marked delivered, no record.
    legacy = f"{name}:{add_event(engine, insert_alert(engine), 'opened', [name])}"
    # Never delivered: one whose every attempt failed, one never tried. Both are old.
    failing = f"{name}:{add_event(engine, insert_alert(engine), 'opened', [name])}"
    untried = f"{name}:{add_event(engine, insert_alert(engine), 'opened', [name])}"
    by_key = _outbox_ids(engine, [legacy, failing])
    ids = {"legacy": by_key[legacy], "failing": by_key[failing]}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notification_attempts (outbox_id, attempted_at, ok, status_code, error)"
                " VALUES (:legacy, now(), true, 202, NULL), (:failing, now(), false, 503, 'down'),"
                " (:failing, now(), false, 503, 'down')"
            ),
            ids,
        )
        conn.execute(text("UPDATE notification_outbox SET delivered_at = now(), attempts = 1 WHERE id = :legacy"), ids)
        conn.execute(text("UPDATE notification_outbox SET attempts = 2, last_error = 'down' WHERE id = :failing"), ids)
    _backdate(engine, [*delivered_old, legacy, failing, untried], OLD)
    before = _purged()

    job = MaintainPartitions(engine, RetentionPolicy(), clock=lambda: datetime.now(UTC), tables=())
    job()

    kept = _outbox_ids(engine, [*delivered_old, legacy, *recent, failing, untried])
    assert set(kept) == {*recent, failing, untried}
    assert _purged() - before == 3
    assert len(attempts(engine, failing)) == 2  # a pending row keeps its failed attempts
    with engine.connect() as conn:
        orphans = conn.scalar(
            text("SELECT count(*) FROM notification_attempts WHERE outbox_id = ANY(:ids)"),
            {"ids": list(ids.values())},
        )
    assert orphans == 2  # the legacy row's attempt went with it; the failing row's two stay
    assert _deliveries(engine, [*delivered_old, legacy, *recent, failing, untried]) == {
        **dict.fromkeys([*delivered_old, *recent], (1, 200, "opened")),
        legacy: (1, 202, "opened"),  # recorded by the purge, from the row and its successful attempt
    }


def test_the_purge_runs_in_batches_until_nothing_is_left(engine: Engine, receiver: Receiver) -> None:
    name = f"webhook-{uuid.uuid4().hex[:8]}"
    keys = _deliver(engine, receiver.start(), name, 5)
    _backdate(engine, keys, OLD)

    assert purge_delivered(engine, now=datetime.now(UTC), days=30, batch_rows=2) == 5

    assert _outbox_ids(engine, keys) == {}
    assert set(_deliveries(engine, keys)) == set(keys)
    assert purge_delivered(engine, now=datetime.now(UTC), days=30, batch_rows=2) == 0


def test_delivery_records_are_append_only(engine: Engine, receiver: Receiver) -> None:
    name = f"webhook-{uuid.uuid4().hex[:8]}"
    [key] = _deliver(engine, receiver.start(), name, 1)
    for statement in (
        "UPDATE notification_deliveries SET channel = 'x' WHERE idempotency_key = :k",
        "DELETE FROM notification_deliveries WHERE idempotency_key = :k",
        "TRUNCATE notification_deliveries",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement), {"k": key})
    assert json.dumps(_deliveries(engine, [key])[key]) == json.dumps([1, 200, "opened"])
