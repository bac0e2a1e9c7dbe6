"""The Dockerfile and docker-compose.yml cannot be built here (no Docker engine), so their agreement with
the documented configuration is checked by reading them."""

import re
from pathlib import Path
from typing import Any

import yaml

from services.config import Settings, reference

ROOT = Path(__file__).resolve().parents[2]
KNOWN_ENV = {env for _key, env, _default, _doc in reference()}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_every_compose_service_has_an_image_or_a_build() -> None:
    services = _compose()["services"]
    assert {"postgres", "migrate", "risk-monitor"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_compose_sets_only_documented_configuration_variables() -> None:
    for name, service in _compose()["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("RISK_MONITOR_"):
                assert var in KNOWN_ENV, f"{name}: {var} is not a configuration key"


def test_compose_publishes_the_configured_ports_on_loopback_only() -> None:
    monitor = _compose()["services"]["risk-monitor"]
    env = monitor["environment"]
    http = int(env.get("RISK_MONITOR_HTTP_PORT", Settings().http_port))
    grpc = int(env.get("RISK_MONITOR_GRPC_PORT", Settings().grpc_port))
    published = {tuple(p.split(":")) for p in monitor["ports"]}
    assert published == {("127.0.0.1", str(http), str(http)), ("127.0.0.1", str(grpc), str(grpc))}


def test_compose_migrates_before_the_monitor_starts() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["risk-monitor"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    urls = {s["environment"]["RISK_MONITOR_DATABASE_URL"] for s in (services["migrate"], services["risk-monitor"])}
    assert len(urls) == 1
    assert next(iter(urls)).startswith("postgresql://")


def test_dockerfile_runs_as_non_root_with_a_readiness_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users
    assert users[-1] not in {"root", "0"}
    assert "/api/v1/ready" in text.split("HEALTHCHECK", 1)[1]
    exposed = set(re.findall(r"^EXPOSE (.+)$", text, flags=re.M)[0].split())
    assert exposed == {str(Settings().http_port), str(Settings().grpc_port)}
    for var in re.findall(r"(RISK_MONITOR_[A-Z_]+)=", text):
        assert var in KNOWN_ENV, var


# --- observability services (issue 6) ------------------------------------------------------------------


def test_every_published_port_is_on_loopback() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_observability_services_mount_the_deploy_files() -> None:
    services = _compose()["services"]
    assert {"prometheus", "alertmanager", "grafana"} <= set(services)
    mounts = {
        name: [v.split(":")[0] for v in services[name]["volumes"]] for name in ("prometheus", "alertmanager", "grafana")
    }
    for name, sources in mounts.items():
        for source in sources:
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [scrape] = prometheus["scrape_configs"]
    http_port = services["risk-monitor"]["environment"]["RISK_MONITOR_HTTP_PORT"]
    assert scrape["static_configs"][0]["targets"] == [f"risk-monitor:{http_port}"]
    am_url = services["risk-monitor"]["environment"]["RISK_MONITOR_NOTIFICATIONS_ALERTMANAGER_URL"]
    am_target = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert am_url == f"http://{am_target}"
