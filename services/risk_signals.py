"""Publishing compliance signals to Prometheus: one call per evaluation pass, with plain values.

The evaluation side builds an ``EvaluationSignals`` from its results and calls ``publish_evaluation``;
gauges whose label sets vanish (a limit removed, an asset closed) are removed rather than left at their
last value. Money arrives as ``Decimal`` and becomes a float only here, at the exposition edge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from prometheus_client import Gauge

from services import metrics

COMPLIANCE_LEVELS = {"compliant": 0, "warning": 1, "breach": 2}
DETECTION_PATHS = ("scheduled", "tick")


@dataclass(frozen=True)
class AccountExposure:
    """Per-account figures; exported only when ``metrics.per_account`` is on."""

    pnl: Decimal
    gross_notional: Decimal
    delta_by_asset: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class FirmFigures:
    """Firm-wide figures (exact Decimals from the evaluation)."""

    pnl: Decimal
    drawdown_ratio: Decimal
    gross_notional: Decimal
    delta_by_asset: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSignals:
    """What one evaluation pass found, as plain values. Keys are label values.

    ``utilization``: (limit name, limit type) -> worst observed/threshold across the limit's scope.
    ``compliance``: account ("venue:external") -> "compliant" | "warning" | "breach".
    ``open_alerts``: (severity, breach type) -> count of alerts not resolved.
    ``detection_latencies``: (path, seconds) for each alert opened in the pass; path is scheduled or tick.
    """

    evaluated_at: datetime
    duration_s: float
    firm: FirmFigures | None  # None: not recomputed this pass; the firm gauges keep their last values
    utilization: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    compliance: Mapping[str, str] = field(default_factory=dict)
    open_alerts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    detection_latencies: tuple[tuple[str, float], ...] = ()
    accounts: Mapping[str, AccountExposure] = field(default_factory=dict)


class _LabelledGaugeWriter:
    """Sets a whole labelled gauge at once, removing label sets that are no longer reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, dict[tuple[str, ...], float]] = {}

    def replace(self, gauge: Gauge, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        with self._lock:
            seen = self._seen.get(name, {})
            for labels, value in values.items():
                if seen.get(labels) != value:  # only what changed: per-account gauges are 10k series
                    gauge.labels(*labels).set(value)
            for gone in seen.keys() - values.keys():
                gauge.remove(*gone)
            self._seen[name] = dict(values)


_writer = _LabelledGaugeWriter()


def compliance_level(status: str) -> int:
    """0 compliant, 1 warning, 2 breach; an unknown status counts as a breach (fail loud)."""
    return COMPLIANCE_LEVELS.get(status, 2)


def publish_evaluation(signals: EvaluationSignals, *, per_account: bool = False) -> None:
    """Export one evaluation pass. Call it once per pass, after the transaction committed."""
    if signals.firm is not None:
        firm = signals.firm
        metrics.PORTFOLIO_PNL.set(float(firm.pnl))
        metrics.DRAWDOWN_RATIO.set(float(firm.drawdown_ratio))
        metrics.GROSS_NOTIONAL.set(float(firm.gross_notional))
        _writer.replace(metrics.DELTA_EXPOSURE, "delta", {(a,): float(v) for a, v in firm.delta_by_asset.items()})
    _writer.replace(metrics.LIMIT_UTILIZATION, "utilization", {k: float(v) for k, v in signals.utilization.items()})
    levels = {status: float(compliance_level(status)) for status in COMPLIANCE_LEVELS}  # per account: 10k series
    _writer.replace(
        metrics.COMPLIANCE_STATUS,
        "compliance",
        {(account,): levels.get(status, 2.0) for account, status in signals.compliance.items()},
    )
    _writer.replace(metrics.OPEN_ALERTS, "open_alerts", {k: float(v) for k, v in signals.open_alerts.items()})
    for path, seconds in signals.detection_latencies:
        observe_detection_latency(path, seconds)
    accounts = signals.accounts if per_account else {}
    _writer.replace(metrics.ACCOUNT_PNL, "account_pnl", {(a,): float(x.pnl) for a, x in accounts.items()})
    _writer.replace(
        metrics.ACCOUNT_GROSS_NOTIONAL, "account_gross", {(a,): float(x.gross_notional) for a, x in accounts.items()}
    )
    _writer.replace(
        metrics.ACCOUNT_DELTA_EXPOSURE,
        "account_delta",
        {(a, asset): float(v) for a, x in accounts.items() for asset, v in x.delta_by_asset.items()},
    )
    metrics.EVALUATION_DURATION.labels("total").observe(signals.duration_s)
    metrics.EVALUATION_LAST_SUCCESS.set(signals.evaluated_at.timestamp())


def observe_detection_latency(path: str, seconds: float) -> None:
    """For the tick path, which opens alerts outside a scheduled pass."""
    if path not in DETECTION_PATHS:
        raise ValueError(f"detection path must be one of {DETECTION_PATHS}, not {path!r}")
    metrics.DETECTION_LATENCY.labels(path).observe(max(seconds, 0.0))


def record_alerts_generated(alerts: Iterable[tuple[str, str, str | None]]) -> None:
    """Count newly opened alerts: (severity, breach type = limit type, symbol or None)."""
    for severity, breach_type, symbol in alerts:
        metrics.ALERT_GENERATED.labels(severity, breach_type, symbol or "").inc()
