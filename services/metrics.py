"""Every Prometheus metric the service exports, defined once (docs/metrics.md lists them).

Labels stay low-cardinality: job, path, method, status; never an account, alert or tick id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_log = logging.getLogger(__name__)

BUILD_INFO = Info("risk_monitor_build", "Version and environment of this instance.")
UP = Gauge("risk_monitor_up", "1 while the service is serving, 0 while it shuts down.")
READY = Gauge("risk_monitor_ready", "1 when the readiness checks pass (database reachable, scheduler running).")

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served, by method, route and status.", ["method", "path", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request handling time by route.",
    ["method", "path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
HTTP_REQUEST_ERRORS = Counter(
    "http_request_errors_total", "HTTP requests answered with a 5xx status.", ["method", "path"]
)

JOB_DURATION = Histogram(
    "risk_monitor_job_duration_seconds",
    "Scheduled job run time.",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOB_FAILURES = Counter("risk_monitor_job_failures_total", "Scheduled job runs that raised.", ["job"])
JOB_NOT_LEADER = Counter(
    "risk_monitor_job_not_leader_total",
    "Scheduled runs skipped because another replica holds the job's lease.",
    ["job"],
)
JOB_MISSED = Counter(
    "risk_monitor_job_missed_total", "Scheduled runs skipped (misfired or still running).", ["job", "reason"]
)


# === Compliance signals and observability (issue 6) ====================================================
# `risk_*` names are the ecosystem's compliance signals (its audit side and dashboards query them);
# `risk_monitor_*` names are this service's own health. Update functions live in services/risk_signals.py.
# Labels stay bounded: severity, breach type (limit type), limit name, account (a handful), asset, venue.

ALERT_GENERATED = Counter(
    "risk_alert_generated_total",
    "Alerts opened, by severity, breach type (limit type) and symbol ('' when not symbol-scoped).",
    ["severity", "breach_type", "symbol"],
)
OPEN_ALERTS = Gauge(
    "risk_open_alerts", "Alerts not yet resolved, by severity and breach type.", ["severity", "breach_type"]
)
LIMIT_UTILIZATION = Gauge(
    "risk_limit_utilization_ratio",
    "Observed value / threshold of a limit, worst case across the limit's scope (1 = at the limit).",
    ["limit", "limit_type"],
)
COMPLIANCE_STATUS = Gauge(
    "risk_compliance_status", "Compliance of an account: 0 compliant, 1 warning, 2 breach.", ["account"]
)
PORTFOLIO_PNL = Gauge("risk_portfolio_pnl", "Firm-wide P&L in the reporting currency.")
DRAWDOWN_RATIO = Gauge("risk_drawdown_ratio", "Firm-wide drawdown from the high-water mark (0.1 = 10%).")
GROSS_NOTIONAL = Gauge("risk_gross_notional", "Firm-wide gross notional in the reporting currency.")
DELTA_EXPOSURE = Gauge(
    "risk_delta_exposure", "Firm-wide net delta exposure per asset, in the reporting currency.", ["asset"]
)
# Per-account variants exist only when metrics.per_account is on (one series per account each).
ACCOUNT_PNL = Gauge("risk_account_pnl", "P&L per account (metrics.per_account).", ["account"])
ACCOUNT_GROSS_NOTIONAL = Gauge(
    "risk_account_gross_notional", "Gross notional per account (metrics.per_account).", ["account"]
)
ACCOUNT_DELTA_EXPOSURE = Gauge(
    "risk_account_delta_exposure",
    "Net delta exposure per account and asset (metrics.per_account).",
    ["account", "asset"],
)
DETECTION_LATENCY = Histogram(
    "risk_detection_latency_seconds",
    "Time from the data's timestamp to the breach being detected, by path (scheduled or tick).",
    ["path"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
EVALUATION_DURATION = Histogram(
    "risk_monitor_evaluation_duration_seconds",
    "Evaluation pass time by phase: read (book), compute (pure evaluation), write (one transaction), total.",
    ["phase"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVALUATION_LAST_SUCCESS = Gauge(
    "risk_monitor_evaluation_last_success_timestamp_seconds",
    "Unix time of the last completed evaluation pass (0 until the first one).",
)

# --- collection (issue 3) ---------------------------------------------------------------------------
# Labels: venue id (from the config), data kind, endpoint name, outcome: never an account id.
COLLECTION_RECORDS = Counter(
    "risk_monitor_collection_records_total",
    "Venue records collected, by outcome (accepted, or rejected by validation).",
    ["venue", "kind", "outcome"],
)
COLLECTION_RUNS = Counter(
    "risk_monitor_collection_runs_total",
    "Collection runs by status (succeeded, partial, failed).",
    ["venue", "kind", "status"],
)
VENUE_REQUESTS = Counter(
    "risk_monitor_venue_requests_total",
    "Calls to venue endpoints (after retries) by outcome: ok, client_error, server_error, timeout,"
    " unavailable, circuit_open.",
    ["venue", "endpoint", "outcome"],
)
VENUE_REQUEST_DURATION = Histogram(
    "risk_monitor_venue_request_duration_seconds",
    "Venue call time including retries.",
    ["venue", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# Notifications.
NOTIFICATION_ATTEMPTS = Counter(
    "risk_monitor_notification_attempts_total",
    "Delivery attempts of outbox rows, by channel and outcome (delivered or failed).",
    ["channel", "outcome"],
)
NOTIFICATION_DELIVERY_LATENCY = Histogram(
    "risk_monitor_notification_delivery_latency_seconds",
    "Time from an outbox row being written to its delivery, by channel (includes retries).",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
ALERTMANAGER_RESENDS = Counter(
    "risk_monitor_alertmanager_resends_total",
    "Re-posts of the active alerts to Alertmanager, by outcome (ok or failed).",
    ["outcome"],
)
NOTIFICATIONS_PURGED = Counter(
    "risk_monitor_notifications_purged_total",
    "Delivered outbox rows deleted by retention (with their attempts; the delivery record is kept).",
)
REGISTRY_HEARTBEATS = Counter(
    "risk_monitor_registry_heartbeats_total",
    "Service-registry writes (register and refresh), by outcome (ok or failed).",
    ["outcome"],
)
CONFIG_SERVICE_LOOKUPS = Counter(
    "risk_monitor_config_service_lookups_total",
    "Configuration-service lookups by source of the answer (remote, cache, stale_cache, local).",
    ["source"],
)


class CallbackGauge(Collector):
    """A labelled gauge whose values are read from a callable at scrape time, so a value such as data
    staleness keeps growing between job runs instead of freezing at the last one.

    Unbound, or when the source raises (database down), it exports no samples: a scrape never fails.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._source: Callable[[], Mapping[tuple[str, ...], float]] | None = None
        # Whether the last read failed: an outage is logged once when it starts and once when it ends,
        # not with a traceback per scrape (every 15 s per gauge for as long as the database is down).
        self._failing = False
        self._state_lock = threading.Lock()

    def bind(self, source: Callable[[], Mapping[tuple[str, ...], float]] | None) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        # Called at registration: the family without reading the source.
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        source = self._source
        if source is not None:
            try:
                values = source()
            except Exception as exc:  # noqa: BLE001 - the scrape must not fail because a source did
                self._failed(exc)
                values = {}
            else:
                self._recovered()
            for labels, value in sorted(values.items()):
                family.add_metric(list(labels), value)
        return [family]

    def _failed(self, exc: Exception) -> None:
        METRIC_SOURCE_FAILURES.labels(self.name).inc()
        with self._state_lock:
            first, self._failing = not self._failing, True
        if first:
            _log.warning(
                "metric %s: source failed, exporting no samples until it recovers: %s: %s",
                self.name,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                extra={"metric": self.name},
            )

    def _recovered(self) -> None:
        with self._state_lock:
            was_failing, self._failing = self._failing, False
        if was_failing:
            _log.info("metric %s: source recovered", self.name, extra={"metric": self.name})


METRIC_SOURCE_FAILURES = Counter(
    "risk_monitor_metric_source_failures_total",
    "Scrapes where a gauge computed at scrape time could not read its source (database down or slow).",
    ["metric"],
)
DATA_STALENESS = CallbackGauge(
    "risk_data_staleness_seconds",
    "Seconds since the newest accepted data per venue and kind (+Inf: never collected); computed at scrape time.",
    ["venue", "kind"],
)
CIRCUIT_BREAKER_STATE = CallbackGauge(
    "risk_monitor_circuit_breaker_state",
    "Venue endpoint circuit breaker: 0 closed, 1 half-open, 2 open (computed at scrape time).",
    ["venue", "endpoint"],
)
OUTBOX_BACKLOG = CallbackGauge(
    "risk_monitor_outbox_backlog", "Undelivered notification outbox rows, by channel.", ["channel"]
)
OUTBOX_OLDEST_PENDING_AGE = CallbackGauge(
    "risk_monitor_outbox_oldest_pending_age_seconds",
    "Age of the oldest undelivered outbox row, by channel (0 when none).",
    ["channel"],
)
JOB_LEADER = CallbackGauge(
    "risk_monitor_job_leader", "1 for each scheduled job whose lease this replica holds (replicas).", ["job"]
)
ACCOUNT_SHARDS_HELD = CallbackGauge(
    "risk_monitor_account_shards_held",
    "Account shards of each per-account collection job this replica holds (replicas).",
    ["job"],
)
for _collector in (
    DATA_STALENESS,
    CIRCUIT_BREAKER_STATE,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_PENDING_AGE,
    JOB_LEADER,
    ACCOUNT_SHARDS_HELD,
):
    REGISTRY.register(_collector)

# --- evaluation (issue 4): limits, evaluation passes, alerts, compliance ----------------------------
# Alert labels are the limit type, severity and symbol (only when the limit names one, else ""): bounded by
# the limits file. Per-account compliance is exported as counts per status, not one series per account.

EVALUATION_DATA_AGE = Gauge(
    "risk_monitor_evaluation_data_age_seconds", "Age of the newest input of the last evaluation at its start."
)
ALERT_EVENTS = Counter("risk_monitor_alert_events_total", "Alert events appended, by event type.", ["event_type"])
COMPLIANCE_ACCOUNTS = Gauge(
    "risk_monitor_compliance_accounts", "Accounts per compliance status after the last evaluation.", ["status"]
)
LIMITS_RELOADS = Counter(
    "risk_monitor_limits_reloads_total", "Limits file checks that changed something, by result.", ["result"]
)
LIMITS_IN_FORCE = Gauge("risk_monitor_limits_in_force", "Limits in force (enabled or not) after the last reload.")

WORKER_RESTARTS = Counter(
    "risk_monitor_worker_restarts_total",
    "Worker processes (runtime.workers) started again after they died or hung.",
    ["worker"],
)

TICK_ALERT_QUEUE = Gauge(
    "risk_monitor_tick_alert_queue",
    "Tick-path batches of level changes waiting for the alert writer (grows while the database is down).",
)

# === History partitions and retention (issue 8) =========================================================
# Published by jobs/maintain_partitions.py after each run; `table` is one of the six history tables.

PARTITIONS_CREATED = Counter(
    "risk_monitor_partitions_created_total", "Daily history partitions created ahead of time.", ["table"]
)
PARTITIONS_DROPPED = Counter(
    "risk_monitor_partitions_dropped_total", "Daily history partitions dropped by retention.", ["table"]
)
PARTITION_STRAY_ROWS = Gauge(
    "risk_monitor_partition_default_rows",
    "Rows in a history table's default partition that belong in a daily partition (a partition was missing).",
    ["table"],
)
PARTITION_MAINTENANCE_FAILURES = Counter(
    "risk_monitor_partition_maintenance_failures_total", "Partition maintenance runs that failed, per table.", ["table"]
)
