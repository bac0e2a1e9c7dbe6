"""Scrape-time gauges during a source outage: no samples, one warning, one recovery line, every failure counted."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from services import metrics


def _failures(name: str) -> float:
    return REGISTRY.get_sample_value("risk_monitor_metric_source_failures_total", {"metric": name}) or 0.0


def test_an_outage_is_logged_once_and_every_failed_scrape_counted(caplog: pytest.LogCaptureFixture) -> None:
    # A real connection refusal: nothing listens on port 1 of the loopback.
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/postgres?connect_timeout=1")
    up = False

    def source() -> Mapping[tuple[str, ...], float]:
        if up:
            return {("webhook",): 3.0}
        with dead.connect() as conn:
            return {("webhook",): float(conn.scalar(text("SELECT 1")) or 0)}

    gauge = metrics.CallbackGauge("risk_monitor_test_source_gauge", "A test gauge.", ["channel"])
    gauge.bind(source)
    before = _failures(gauge.name)
    caplog.set_level(logging.INFO, logger="services.metrics")
    try:
        for _ in range(3):
            (family,) = gauge.collect()
            assert family.samples == []
        up = True
        (family,) = gauge.collect()
        assert [s.value for s in family.samples] == [3.0]
        gauge.collect()
        up = False
        gauge.collect()  # a second outage is a new warning
    finally:
        dead.dispose()

    assert _failures(gauge.name) - before == 4
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "services.metrics"]
    assert [level for level, _ in records] == ["WARNING", "INFO", "WARNING"]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback per scrape
    assert "OperationalError" in records[0][1]
