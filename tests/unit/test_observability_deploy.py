"""Prometheus rules, Alertmanager config and the Grafana dashboard: checked by the real promtool/amtool,
and every metric they query must be one the monitor exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import services.metrics  # noqa: F401 - registers every metric family

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# PromQL words that look like metric names but are not.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "le",
}
# Series Prometheus itself produces for every target.
_PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install the Debian package {package} (scripts/test does)"
    return path


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (a small tokenizer, not a full parser)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(name)
    return names


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():  # every family, incl. empty labelled ones and callback gauges
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/production-risk.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_the_metric_name_extractor() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (path, le) (rate(risk_detection_latency_seconds_bucket{path="tick"}'
        "[$__rate_interval]))) > on (job) group_left (instance) up unless risk:alert_generated:rate5m offset 5m"
    )
    assert metric_names(expr) == {"risk_detection_latency_seconds_bucket", "up", "risk:alert_generated:rate5m"}
    assert metric_names("time() - risk_monitor_evaluation_last_success_timestamp_seconds > 120") == {
        "risk_monitor_evaluation_last_success_timestamp_seconds"
    }


def test_every_metric_the_rules_and_dashboard_query_is_exported() -> None:
    exported = exported_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    exprs = [rule["expr"] for rule in _rules()] + _dashboard_exprs()
    referenced = set().union(*(metric_names(e) for e in exprs))
    unknown = referenced - exported - recorded - _PROMETHEUS_SERIES
    assert not unknown, f"queried but not exported: {sorted(unknown)}"
    # The compliance signals the issue names are all on the dashboard.
    for name in (
        "risk_portfolio_pnl",
        "risk_gross_notional",
        "risk_delta_exposure",
        "risk_limit_utilization_ratio",
        "risk_compliance_status",
        "risk_data_staleness_seconds",
        "risk_detection_latency_seconds_bucket",
    ):
        assert name in referenced, name


def test_dashboard_is_the_production_risk_dashboard() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/production-risk.json").read_text())
    assert dashboard["title"] == "Production Risk"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    provisioning = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {ds["uid"] for ds in provisioning["datasources"]}
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} <= uids


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _tool("promtool", "prometheus")
    assert "SUCCESS" in _run(promtool, "check", "rules", "rules.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in _run(promtool, "test", "rules", "rules.test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in _run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")


def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    broken = (
        (DEPLOY / "prometheus/rules.yml")
        .read_text()
        .replace("risk_compliance_status == 2", "risk_compliance_status == 3")
    )
    (tmp_path / "rules.yml").write_text(broken)
    (tmp_path / "rules.test.yml").write_text((DEPLOY / "prometheus/rules.test.yml").read_text())
    result = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "RiskCriticalComplianceBreach" in result.stdout + result.stderr


def test_alertmanager_config_is_valid() -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    assert "SUCCESS" in _run(amtool, "check-config", "alertmanager.yml", cwd=DEPLOY / "alertmanager")


@pytest.mark.parametrize(
    "alert", ["RiskDataStale", "RiskCollectionFailing", "RiskEvaluationNotRunning", "RiskCriticalComplianceBreach"]
)
def test_the_failure_modes_have_alerts(alert: str) -> None:
    assert alert in {rule.get("alert") for rule in _rules()}


def test_every_exported_metric_is_documented() -> None:
    documented = (ROOT / "docs/metrics.md").read_text()
    suffix = {"counter": "_total", "info": "_info"}
    names = {family.name + suffix.get(family.type, "") for family in REGISTRY.collect()}
    missing = sorted(
        name for name in names if not name.startswith(("python_", "process_")) and f"`{name}`" not in documented
    )
    assert not missing, f"add to docs/metrics.md: {missing}"
