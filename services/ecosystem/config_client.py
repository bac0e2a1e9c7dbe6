"""Client of the ecosystem's configuration service (``GET /api/v1/configuration?key=&environment=``),
with a cache and a fallback to the local configuration when the service is unreachable.

Order of answers: a fresh cached value; the service; a stale cached value (service down); the local
value. The monitor keeps running on its local configuration whatever the service does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from services import metrics

log = logging.getLogger(__name__)


def _value_from(body: Any, key: str) -> str | None:
    """Accepts ``{"value": ...}``, ``{"data": {"value": ...}}`` or ``{key: ...}``; None when absent."""
    if isinstance(body, dict):
        for candidate in (body, body.get("data")):
            if isinstance(candidate, dict):
                if "value" in candidate:
                    value = candidate["value"]
                    return None if value is None else str(value)
                if key in candidate:
                    return str(candidate[key])
    return None


@dataclass
class ConfigServiceClient:
    base_url: str
    environment: str
    local: Mapping[str, str]
    cache_ttl_s: float = 60.0
    timeout_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    session: requests.Session = field(default_factory=requests.Session)
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: str) -> str | None:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_ttl_s:
            metrics.CONFIG_SERVICE_LOOKUPS.labels("cache").inc()
            return cached[1]
        try:
            response = self.session.get(
                self.base_url.rstrip("/") + "/api/v1/configuration",
                params={"key": key, "environment": self.environment},
                timeout=self.timeout_s,
            )
            if response.status_code == 404:
                value = self.local.get(key)  # the service does not know the key: the local value stands
            else:
                response.raise_for_status()
                value = _value_from(response.json(), key)
                if value is None:
                    value = self.local.get(key)
        except (requests.RequestException, ValueError) as exc:
            log.warning("configuration service unavailable for %s: %s", key, type(exc).__name__)
            if cached is not None:
                metrics.CONFIG_SERVICE_LOOKUPS.labels("stale_cache").inc()
                return cached[1]
            metrics.CONFIG_SERVICE_LOOKUPS.labels("local").inc()
            return self.local.get(key)
        with self._lock:
            self._cache[key] = (now, value)
        metrics.CONFIG_SERVICE_LOOKUPS.labels("remote").inc()
        return value

    def close(self) -> None:
        self.session.close()
