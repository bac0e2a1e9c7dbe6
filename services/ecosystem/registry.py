"""Service registration in the ecosystem's Redis registry: ``registry:services:{name}`` with a TTL,
refreshed by a heartbeat thread, deleted on shutdown.

The key expires by itself (TTL 90 s, heartbeat 30 s by default) if the process dies without
deregistering. Deregistration deletes the key only if it still holds this instance's registration, so
a replica stopping never removes a sibling that wrote the key after it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import redis

from services import metrics

log = logging.getLogger(__name__)

KEY_PREFIX = "registry:services:"
_WILDCARD = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - compared against, never bound

# Delete the key only if it is still ours (compare-and-delete in one step).
_DELETE_IF_OURS = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['instance_id'] == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def registry_key(name: str) -> str:
    return KEY_PREFIX + name


def advertised_host(bind_host: str, configured: str, redis_url: str) -> str:
    """The address other services can reach us on: the configured one, else the bound one, else the
    address of the interface that routes to the registry (never 0.0.0.0)."""
    if configured:
        return configured
    if bind_host not in _WILDCARD:
        return bind_host
    target = urlsplit(redis_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))  # UDP connect sends nothing; it only picks the route
            return str(sock.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def registration_document(
    *, name: str, instance_id: str, host: str, http_port: int, grpc_port: int, version: str, started_at: datetime
) -> dict[str, Any]:
    return {
        "name": name,
        "instance_id": instance_id,
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "http_url": f"http://{host}:{http_port}",
        "grpc_address": f"{host}:{grpc_port}",
        "health_url": f"http://{host}:{http_port}/api/v1/health",
        "version": version,
        "started_at": started_at.isoformat(),
    }


@dataclass
class ServiceRegistration:
    client: redis.Redis
    name: str
    document: Mapping[str, Any]
    ttl_s: int = 90
    heartbeat_s: float = 30.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return registry_key(self.name)

    def start(self) -> None:
        """Register now (a failure is logged, not fatal: the registry is optional), then keep refreshing."""
        self.refresh()
        self._thread = threading.Thread(target=self._heartbeat, name="registry-heartbeat", daemon=True)
        self._thread.start()

    def refresh(self) -> bool:
        try:
            self.client.set(self.key, json.dumps(dict(self.document)), ex=self.ttl_s)
        except redis.RedisError as exc:
            metrics.REGISTRY_HEARTBEATS.labels("failed").inc()
            log.warning("service registration in Redis failed: %s", type(exc).__name__)
            return False
        metrics.REGISTRY_HEARTBEATS.labels("ok").inc()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.client.eval(_DELETE_IF_OURS, 1, self.key, str(self.document["instance_id"]))
        except redis.RedisError as exc:
            log.warning("service deregistration failed (the key expires by itself): %s", type(exc).__name__)
        finally:
            self.client.close()


def connect(redis_url: str, *, timeout_s: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
