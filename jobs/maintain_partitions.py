"""Partition maintenance job: daily partitions ahead, retention by dropping whole days, strays reported,
and delivered notifications purged (their delivery records kept)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from services import metrics, partitions
from services.notifications import retention

log = logging.getLogger(__name__)

JOB_ID = "maintain_partitions"


@dataclass(frozen=True)
class MaintainPartitions:
    engine: Engine
    policy: partitions.RetentionPolicy
    clock: Callable[[], datetime]
    tables: Sequence[partitions.HistoryTable] = partitions.HISTORY_TABLES

    def __call__(self) -> None:
        now = self.clock()
        today = now.date()
        for table in self.tables:
            try:
                report = partitions.maintain(self.engine, table, self.policy, today=today)
            except Exception:
                # One table's lock timeout must not stop the others' partitions being created.
                metrics.PARTITION_MAINTENANCE_FAILURES.labels(table.name).inc()
                log.exception("partition maintenance of %s failed", table.name)
                continue
            metrics.PARTITIONS_CREATED.labels(table.name).inc(len(report.created))
            metrics.PARTITIONS_DROPPED.labels(table.name).inc(len(report.dropped))
            metrics.PARTITION_STRAY_ROWS.labels(table.name).set(report.stray_rows)
            if report.created or report.dropped:
                log.info(
                    "partitions of %s: created %s, dropped %s (%d rows kept for snapshot heads)",
                    table.name,
                    report.created,
                    report.dropped,
                    report.kept_for_heads,
                )
        self._purge_notifications(now)

    def _purge_notifications(self, now: datetime) -> None:
        try:
            purged = retention.purge_delivered(self.engine, now=now, days=self.policy.delivered_notifications_days)
        except Exception:
            # Batches already committed stay purged; the rest is retried next run.
            metrics.PARTITION_MAINTENANCE_FAILURES.labels("notification_outbox").inc()
            log.exception("purging delivered notifications failed")
            return
        if purged:
            log.info("purged %d delivered notification outbox rows (delivery records kept)", purged)
