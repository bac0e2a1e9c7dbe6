"""Compliance signals: publish_evaluation sets whole label sets, and the exposition is promtool-clean."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from services import metrics
from services.http_api import HttpApi
from services.risk_signals import (
    AccountExposure,
    EvaluationSignals,
    FirmFigures,
    observe_detection_latency,
    publish_evaluation,
    record_alerts_generated,
)

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _signals(**changes: object) -> EvaluationSignals:
    values: dict[str, object] = {
        "evaluated_at": AT,
        "duration_s": 0.2,
        "firm": FirmFigures(
            Decimal("-1250.50"),
            Decimal("0.042"),
            Decimal("2500000"),
            {"BTC": Decimal("150000"), "ETH": Decimal("-20000")},
        ),
        "utilization": {("btc-gross", "gross_notional"): Decimal("0.8"), ("dd", "drawdown"): Decimal("1.1")},
        "compliance": {"binance:main": "compliant", "okx:hedge": "breach"},
        "open_alerts": {("critical", "drawdown"): 1},
        "detection_latencies": (("scheduled", 0.4),),
        "accounts": {"binance:main": AccountExposure(Decimal(10), Decimal(20), {"BTC": Decimal(5)})},
    }
    values.update(changes)
    return EvaluationSignals(**values)  # type: ignore[arg-type]


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_publish_sets_firm_figures_utilization_and_compliance() -> None:
    publish_evaluation(_signals())
    assert _value("risk_portfolio_pnl") == -1250.5
    assert _value("risk_gross_notional") == 2_500_000
    assert _value("risk_delta_exposure", asset="ETH") == -20_000
    assert _value("risk_limit_utilization_ratio", limit="dd", limit_type="drawdown") == 1.1
    assert _value("risk_compliance_status", account="okx:hedge") == 2
    assert _value("risk_compliance_status", account="binance:main") == 0
    assert _value("risk_open_alerts", severity="critical", breach_type="drawdown") == 1
    assert _value("risk_monitor_evaluation_last_success_timestamp_seconds") == AT.timestamp()
    assert _value("risk_account_pnl", account="binance:main") is None  # per-account is off by default


def test_vanished_label_sets_are_removed_not_left_at_their_last_value() -> None:
    publish_evaluation(_signals())
    publish_evaluation(
        _signals(
            firm=FirmFigures(Decimal(0), Decimal(0), Decimal(0), {"BTC": Decimal(1)}),
            open_alerts={},
            compliance={"okx:hedge": "warning"},
        )
    )
    assert _value("risk_delta_exposure", asset="ETH") is None
    assert _value("risk_open_alerts", severity="critical", breach_type="drawdown") is None
    assert _value("risk_compliance_status", account="binance:main") is None
    assert _value("risk_compliance_status", account="okx:hedge") == 1


def test_per_account_exposure_only_with_the_switch() -> None:
    publish_evaluation(_signals(), per_account=True)
    assert _value("risk_account_delta_exposure", account="binance:main", asset="BTC") == 5
    publish_evaluation(_signals(), per_account=False)
    assert _value("risk_account_delta_exposure", account="binance:main", asset="BTC") is None


def test_detection_latency_and_alert_counts() -> None:
    before = _value("risk_detection_latency_seconds_count", path="tick") or 0
    observe_detection_latency("tick", 0.03)
    assert _value("risk_detection_latency_seconds_count", path="tick") == before + 1
    with pytest.raises(ValueError, match="detection path"):
        observe_detection_latency("per-alert-42", 1.0)
    generated = _value("risk_alert_generated_total", severity="warning", breach_type="delta", symbol="") or 0
    record_alerts_generated([("warning", "delta", None), ("critical", "delta", "BTC-USDT")])
    assert _value("risk_alert_generated_total", severity="warning", breach_type="delta", symbol="") == generated + 1


def test_staleness_is_computed_when_scraped_and_a_failing_source_does_not_break_the_scrape() -> None:
    ages = iter([5.0, 7.5])
    metrics.DATA_STALENESS.bind(lambda: {("binance", "positions"): next(ages)})
    try:
        assert _value("risk_data_staleness_seconds", venue="binance", kind="positions") == 5.0
        assert _value("risk_data_staleness_seconds", venue="binance", kind="positions") == 7.5

        def broken() -> dict[tuple[str, ...], float]:
            raise ConnectionError("database down")

        metrics.DATA_STALENESS.bind(broken)
        assert _value("risk_data_staleness_seconds", venue="binance", kind="positions") is None
        assert _value("risk_portfolio_pnl") is not None  # the rest of the scrape still works
    finally:
        metrics.DATA_STALENESS.bind(None)


@pytest.fixture
def api() -> Iterator[HttpApi]:
    server = HttpApi(
        "127.0.0.1", 0, service="risk-monitor", instance="t", version="0", environment="test", readiness={}
    )
    server.start()
    yield server
    server.stop()


def test_live_scrape_passes_promtool_check_metrics(api: HttpApi) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "install the Debian package prometheus (scripts/test does)"
    publish_evaluation(_signals(), per_account=True)
    record_alerts_generated([("critical", "drawdown", "BTC-USDT")])
    metrics.OUTBOX_BACKLOG.bind(lambda: {("webhook",): 3.0})
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api.port}/metrics", timeout=5) as resp:
            exposition = resp.read()
    finally:
        metrics.OUTBOX_BACKLOG.bind(None)
    assert b'risk_monitor_outbox_backlog{channel="webhook"} 3.0' in exposition
    assert b"risk_alert_generated_total{" in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "", result.stdout.decode()  # no lint warnings at all
