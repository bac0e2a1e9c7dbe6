"""Retention of delivered notifications: outbox rows and their attempts go, their delivery record stays.

Run by the partition maintenance job (jobs/maintain_partitions.py). Only rows with ``delivered_at`` set
and older than the horizon are touched; pending rows (never delivered, however many attempts failed) are
never purged. Each batch is its own short transaction, so a catch-up of months never holds locks on the
outbox for long, and rows a dispatcher holds are skipped, not waited for.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, text

from services import metrics

BATCH_ROWS = 1000

# One statement per batch: record any delivered row that has no delivery record yet (delivered by a
# replica older than the notification_deliveries table, after its backfill), then delete the rows'
# attempts and the rows. Data-modifying CTEs share one snapshot, so the record is read from the rows
# as they were; the attempts' foreign key is checked at the end of the statement, when both are gone.
_PURGE_BATCH = text(
    """
    WITH batch AS (
        SELECT id FROM notification_outbox
        WHERE delivered_at IS NOT NULL AND delivered_at < :horizon
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    recorded AS (
        INSERT INTO notification_deliveries
            (outbox_id, event_id, channel, idempotency_key, payload, created_at, delivered_at, attempts,
             status_code)
        SELECT o.id, o.event_id, o.channel, o.idempotency_key, o.payload, o.created_at, o.delivered_at,
               o.attempts,
               (SELECT a.status_code FROM notification_attempts a
                WHERE a.outbox_id = o.id AND a.ok ORDER BY a.id DESC LIMIT 1)
        FROM notification_outbox o JOIN batch b ON b.id = o.id
        ON CONFLICT (outbox_id) DO NOTHING
    ),
    attempts AS (
        DELETE FROM notification_attempts a USING batch b WHERE a.outbox_id = b.id
    )
    DELETE FROM notification_outbox o USING batch b WHERE o.id = b.id
    """
)


def horizon(now: datetime, days: int) -> datetime:
    """Rows delivered before this are purged."""
    return now - timedelta(days=days)


def purge_delivered(engine: Engine, *, now: datetime, days: int, batch_rows: int = BATCH_ROWS) -> int:
    """Delete delivered outbox rows (and their attempts) delivered more than ``days`` before ``now``, one
    transaction per ``batch_rows``; returns how many outbox rows were deleted."""
    cutoff = horizon(now, days)
    purged = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(_PURGE_BATCH, {"horizon": cutoff, "limit": batch_rows}).rowcount or 0
        purged += deleted
        metrics.NOTIFICATIONS_PURGED.inc(deleted)  # per committed batch: a later failure keeps the count right
        if deleted < batch_rows:
            return purged
