"""Every Prometheus metric the service exports, defined once (docs/metrics.md lists them).

Labels stay low-cardinality: job, path, method, status; never an account, alert or tick id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
JOB_MISSED = Counter(
    "risk_monitor_job_missed_total", "Scheduled runs skipped (misfired or still running).", ["job", "reason"]
)


# --- collection (issue 3) -------------------------------------------------------------------------
# Labels: venue id (from the config), data kind, endpoint name, outcome: never an account id.


class ScrapeTimeGauge(Collector):
    """A gauge whose samples are computed when Prometheus scrapes (ages grow between runs; breakers
    half-open by time), from a source the composition root attaches with ``attach``."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self._source: Callable[[], Iterable[tuple[Sequence[str], float]]] | None = None
        REGISTRY.register(self)

    def attach(self, source: Callable[[], Iterable[tuple[Sequence[str], float]]] | None) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        source = self._source
        if source is not None:
            for label_values, value in source():
                family.add_metric(list(label_values), value)
        yield family


DATA_STALENESS = ScrapeTimeGauge(
    "risk_data_staleness_seconds",
    "Seconds since the newest accepted data per venue and kind (+Inf: never collected).",
    ["venue", "kind"],
)
CIRCUIT_BREAKER_STATE = ScrapeTimeGauge(
    "risk_monitor_circuit_breaker_state",
    "Venue endpoint circuit breaker: 0 closed, 1 half-open, 2 open.",
    ["venue", "endpoint"],
)
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
