"""A client of the sandbox's HTTP control surface (POST /control/<action>, GET /control/state)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests

_TIMEOUT_S = 10.0


class SandboxControl:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._http = requests.Session()

    def post(self, action: str, **params: Any) -> Any:
        body = {k: str(v) if isinstance(v, Decimal) else v for k, v in params.items() if v is not None}
        response = self._http.post(f"{self.url}/control/{action}", json=body, timeout=_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        response = self._http.get(f"{self.url}/control/state", timeout=_TIMEOUT_S)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def price(self, symbol: str) -> Decimal:
        return Decimal(self.state()["prices"][symbol])

    def close(self) -> None:
        self._http.close()
