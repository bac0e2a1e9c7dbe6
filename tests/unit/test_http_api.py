"""The HTTP listener on a real loopback socket, with readiness checks supplied by the test."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from services.http_api import HttpApi


@pytest.fixture
def api() -> Iterator[tuple[HttpApi, dict[str, str | None]]]:
    state: dict[str, str | None] = {"database": None}
    server = HttpApi(
        "127.0.0.1",
        0,
        service="risk-monitor",
        instance="test-1",
        version="1.2.3",
        environment="test",
        readiness={"database": lambda: state["database"], "scheduler": lambda: None},
    )
    server.start()
    yield server, state
    server.stop()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_health_has_the_ecosystem_shape(api: tuple[HttpApi, dict[str, str | None]]) -> None:
    status, body = _get(api[0].port, "/api/v1/health")
    data = json.loads(body)
    assert status == 200
    assert {k: data[k] for k in ("status", "service", "instance", "version", "environment")} == {
        "status": "healthy",
        "service": "risk-monitor",
        "instance": "test-1",
        "version": "1.2.3",
        "environment": "test",
    }
    assert data["timestamp"].endswith("+00:00")


def test_ready_is_503_with_the_failing_check_named(api: tuple[HttpApi, dict[str, str | None]]) -> None:
    server, state = api
    assert _get(server.port, "/api/v1/ready")[0] == 200
    state["database"] = "connection refused"
    status, body = _get(server.port, "/api/v1/ready")
    assert status == 503
    assert json.loads(body)["checks"] == {"database": "connection refused", "scheduler": "ok"}


def test_metrics_are_served_and_count_requests(api: tuple[HttpApi, dict[str, str | None]]) -> None:
    port = api[0].port
    _get(port, "/api/v1/health")
    status, body = _get(port, "/metrics")
    assert status == 200
    assert b'http_requests_total{method="GET",path="/api/v1/health",status="200"}' in body


def test_unknown_path_is_404_json(api: tuple[HttpApi, dict[str, str | None]]) -> None:
    status, body = _get(api[0].port, "/nope")
    assert status == 404
    assert json.loads(body)["error"] == "not_found"
