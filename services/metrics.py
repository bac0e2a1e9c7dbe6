"""Every Prometheus metric the service exports, defined once (docs/metrics.md lists them).

Labels stay low-cardinality: job, path, method, status; never an account, alert or tick id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

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

# --- evaluation (issue 4): limits, evaluation passes, alerts, compliance ----------------------------
# Alert labels are the limit type, severity and symbol (only when the limit names one, else ""): bounded by
# the limits file. Per-account compliance is exported as counts per status, not one series per account.

EVALUATION_DURATION = Histogram(
    "risk_monitor_evaluation_duration_seconds",
    "Evaluation pass time by phase: read (book), compute (pure evaluation), write (one transaction), total.",
    ["phase"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVALUATION_DATA_AGE = Gauge(
    "risk_monitor_evaluation_data_age_seconds", "Age of the newest input of the last evaluation at its start."
)
ALERTS_GENERATED = Counter(
    "risk_alert_generated_total",
    "Alerts opened, by severity, limit type and symbol.",
    ["severity", "breach_type", "symbol"],
)
ALERT_EVENTS = Counter("risk_monitor_alert_events_total", "Alert events appended, by event type.", ["event_type"])
COMPLIANCE_ACCOUNTS = Gauge(
    "risk_monitor_compliance_accounts", "Accounts per compliance status after the last evaluation.", ["status"]
)
LIMITS_RELOADS = Counter(
    "risk_monitor_limits_reloads_total", "Limits file checks that changed something, by result.", ["result"]
)
LIMITS_IN_FORCE = Gauge("risk_monitor_limits_in_force", "Limits in force (enabled or not) after the last reload.")
