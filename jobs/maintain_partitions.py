"""Partition maintenance job: daily partitions ahead, retention by dropping whole days, strays reported."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from services import metrics, partitions

log = logging.getLogger(__name__)

JOB_ID = "maintain_partitions"


@dataclass(frozen=True)
class MaintainPartitions:
    engine: Engine
    policy: partitions.RetentionPolicy
    clock: Callable[[], datetime]
    tables: Sequence[partitions.HistoryTable] = partitions.HISTORY_TABLES

    def __call__(self) -> None:
        today = self.clock().date()
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
