"""Ecosystem integration against real parts: a real Redis registry, a real HTTP configuration service."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from services.ecosystem import registry
from services.ecosystem.config_client import ConfigServiceClient
from tests.ecosystem_fixtures import wait_until


def _registration(
    redis_url: str, name: str, *, ttl_s: int = 90, heartbeat_s: float = 30.0
) -> registry.ServiceRegistration:
    document = registry.registration_document(
        name=name,
        instance_id="risk-monitor-1",
        host=registry.advertised_host("0.0.0.0", "", redis_url),
        http_port=8080,
        grpc_port=50051,
        version="1.2.3",
        started_at=datetime(2026, 11, 22, tzinfo=UTC),
    )
    return registry.ServiceRegistration(
        registry.connect(redis_url), name, document, ttl_s=ttl_s, heartbeat_s=heartbeat_s
    )


@pytest.fixture
def probe(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_registration_is_visible_with_a_ttl_and_removed_on_shutdown(redis_url: str, probe: redis.Redis) -> None:
    name = f"risk-monitor-test-{uuid.uuid4().hex[:8]}"
    reg = _registration(redis_url, name)
    reg.start()
    try:
        stored = json.loads(probe.get(f"registry:services:{name}") or b"null")
        assert stored["name"] == name
        assert stored["instance_id"] == "risk-monitor-1"
        assert (stored["http_port"], stored["grpc_port"], stored["version"]) == (8080, 50051, "1.2.3")
        assert stored["host"] not in {"0.0.0.0", ""}
        assert stored["started_at"] == "2026-11-22T00:00:00+00:00"
        assert 80 < probe.ttl(f"registry:services:{name}") <= 90
    finally:
        reg.stop()
    assert probe.exists(f"registry:services:{name}") == 0


def test_heartbeat_refreshes_the_ttl(redis_url: str, probe: redis.Redis) -> None:
    name = f"risk-monitor-test-{uuid.uuid4().hex[:8]}"
    key = f"registry:services:{name}"
    reg = _registration(redis_url, name, ttl_s=90, heartbeat_s=0.2)
    reg.start()
    try:
        probe.expire(key, 5)  # as if most of the TTL had run out
        wait_until(lambda: probe.ttl(key) > 60, timeout_s=10)
    finally:
        reg.stop()


def test_stopping_never_removes_a_sibling_that_registered_later(redis_url: str, probe: redis.Redis) -> None:
    name = f"risk-monitor-test-{uuid.uuid4().hex[:8]}"
    key = f"registry:services:{name}"
    reg = _registration(redis_url, name)
    reg.start()
    probe.set(key, json.dumps({"name": name, "instance_id": "risk-monitor-2"}), ex=90)
    reg.stop()
    assert json.loads(probe.get(key) or b"null")["instance_id"] == "risk-monitor-2"
    probe.delete(key)


def test_an_unreachable_registry_is_not_fatal() -> None:
    reg = _registration("redis://127.0.0.1:1/0", "nowhere", heartbeat_s=60)
    assert reg.refresh() is False
    reg.stop()  # logs and returns


# --- configuration service -----------------------------------------------------------------------------


class ConfigService:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {("notifications.batch_size", "production"): "250"}
        self.requests: list[dict[str, list[str]]] = []
        self.status = 200
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                service.requests.append(query)
                key, env = query.get("key", [""])[0], query.get("environment", [""])[0]
                body: dict[str, Any]
                if service.status != 200:
                    status, body = service.status, {"error": "unavailable"}
                elif url.path != "/api/v1/configuration" or (key, env) not in service.values:
                    status, body = 404, {"error": "not_found"}
                else:
                    status, body = 200, {"key": key, "environment": env, "value": service.values[(key, env)]}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def config_service() -> Iterator[ConfigService]:
    service = ConfigService()
    yield service
    service.stop()


def test_config_values_come_from_the_service_and_are_cached(config_service: ConfigService) -> None:
    now = [0.0]
    client = ConfigServiceClient(
        config_service.url, "production", {"notifications.batch_size": "100"}, cache_ttl_s=60, clock=lambda: now[0]
    )
    assert client.get("notifications.batch_size") == "250"
    assert config_service.requests == [{"key": ["notifications.batch_size"], "environment": ["production"]}]
    now[0] = 30.0
    config_service.values[("notifications.batch_size", "production")] = "300"
    assert client.get("notifications.batch_size") == "250"  # cached
    now[0] = 61.0
    assert client.get("notifications.batch_size") == "300"
    assert len(config_service.requests) == 2
    client.close()


def test_config_falls_back_when_the_service_is_down(config_service: ConfigService) -> None:
    now = [0.0]
    local = {"notifications.batch_size": "100", "http.port": "8080"}
    client = ConfigServiceClient(config_service.url, "production", local, cache_ttl_s=10, clock=lambda: now[0])
    assert client.get("notifications.batch_size") == "250"
    assert client.get("http.port") == "8080"  # unknown to the service (404): local value
    config_service.status = 503
    now[0] = 100.0
    assert client.get("notifications.batch_size") == "250"  # stale cache beats nothing
    config_service.stop()
    fresh = ConfigServiceClient(config_service.url, "production", local, timeout_s=1)
    assert fresh.get("notifications.batch_size") == "100"  # unreachable, nothing cached: local
    fresh.close()
    client.close()
