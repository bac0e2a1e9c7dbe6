"""Notification channels: one HTTP receiver each. A delivery either succeeds (2xx) or fails with a reason;
it never raises, so the dispatcher can record every attempt.

Every request carries ``Idempotency-Key`` (the outbox row's key): delivery is at least once, and the
receiver deduplicates. No retries here: the outbox schedules them, with backoff, across restarts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import requests

from services import tracing
from services.notifications import documents


@dataclass(frozen=True)
class Delivery:
    ok: bool
    status_code: int | None = None
    error: str | None = None


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def deliver(self, document: Mapping[str, Any], idempotency_key: str) -> Delivery: ...


_USERINFO = re.compile(r"://[^/@\s]+@")


def describe_error(exc: BaseException) -> str:
    """A short reason for ``last_error`` and logs: credentials in URLs are removed."""
    return _USERINFO.sub("://***@", f"{type(exc).__name__}: {exc}")[:500]


@dataclass
class HttpJsonPoster:
    """POSTs JSON bodies with a timeout; turns every outcome into a ``Delivery``."""

    timeout_s: float
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Delivery:
        sent = {"Content-Type": "application/json", "User-Agent": documents.SOURCE, **headers}
        tracing.inject(sent)  # traceparent of the dispatch span, so receivers can join the trace
        try:
            response = self.session.post(
                url,
                data=body,
                headers=sent,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            return Delivery(ok=False, error=describe_error(exc))
        with response:
            if 200 <= response.status_code < 300:
                return Delivery(ok=True, status_code=response.status_code)
            return Delivery(
                ok=False,
                status_code=response.status_code,
                error=f"HTTP {response.status_code}: {response.text[:200]}",
            )

    def close(self) -> None:
        self.session.close()


@dataclass
class WebhookChannel:
    """The event document as JSON, signed with HMAC-SHA256 when a secret is configured."""

    url: str
    poster: HttpJsonPoster
    secret: str = ""
    name: str = "webhook"

    def deliver(self, document: Mapping[str, Any], idempotency_key: str) -> Delivery:
        body = documents.canonical_json(document)
        headers = {"Idempotency-Key": idempotency_key, "X-Risk-Monitor-Event": str(document.get("event_type", ""))}
        if self.secret:
            headers["X-Risk-Monitor-Signature"] = documents.signature(body, self.secret)
        return self.poster.post(self.url, body, headers)


@dataclass
class AuditChannel:
    """The ecosystem's audit correlator: ``POST /api/v1/audit/events``."""

    base_url: str
    poster: HttpJsonPoster
    name: str = "audit"

    def deliver(self, document: Mapping[str, Any], idempotency_key: str) -> Delivery:
        body = documents.canonical_json(documents.audit_event(document, trace_id=tracing.current_trace_id()))
        url = self.base_url.rstrip("/") + "/api/v1/audit/events"
        return self.poster.post(url, body, {"Idempotency-Key": idempotency_key})


@dataclass
class AlertmanagerChannel:
    """Alertmanager's v2 API. Re-posting the same labels is idempotent on its side."""

    base_url: str
    poster: HttpJsonPoster
    validity: timedelta  # how long a firing alert stays firing without a re-post
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    name: str = "alertmanager"

    def deliver(self, document: Mapping[str, Any], idempotency_key: str) -> Delivery:
        alerts = documents.alertmanager_alerts(document, now=self.clock(), validity=self.validity)
        return self.post_alerts(alerts, idempotency_key)

    def post_alerts(self, alerts: list[dict[str, Any]], idempotency_key: str = "") -> Delivery:
        url = self.base_url.rstrip("/") + "/api/v2/alerts"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.poster.post(url, documents.canonical_json_list(alerts), headers)
