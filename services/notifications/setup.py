"""Builds the enabled channels and the dispatcher jobs from the settings (called by services/app.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.errors import ConfigError
from services.notifications import outbox
from services.notifications.channels import AlertmanagerChannel, AuditChannel, Channel, HttpJsonPoster, WebhookChannel
from services.notifications.dispatcher import Dispatcher
from services.notifications.resend import ResendActiveAlerts


@dataclass(frozen=True)
class Notifications:
    dispatcher: Dispatcher
    resend: ResendActiveAlerts | None  # only with the alertmanager channel
    posters: tuple[HttpJsonPoster, ...]

    def close(self) -> None:
        for poster in self.posters:
            poster.close()


def _required(value: str, key: str) -> str:
    if not value:
        raise ConfigError(f"'{key}' must be set when its channel is enabled in notifications.channels")
    return value


def build(settings: Settings, sessions: sessionmaker[Session], *, webhook_secret: str) -> Notifications:
    s = settings
    posters: list[HttpJsonPoster] = []

    def poster() -> HttpJsonPoster:
        posters.append(HttpJsonPoster(timeout_s=s.notifications_timeout_s))
        return posters[-1]

    # Firing alerts stay valid for three re-send periods: a missed re-post does not resolve them.
    validity = timedelta(seconds=3 * s.notifications_alertmanager_resend_s)
    channels: dict[str, Channel] = {}
    resend = None
    for name in s.notifications_channels:
        if name == "alertmanager":
            url = _required(s.notifications_alertmanager_url, "notifications.alertmanager_url")
            channels[name] = AlertmanagerChannel(url, poster(), validity=validity)
            resend = ResendActiveAlerts(sessions, AlertmanagerChannel(url, poster(), validity=validity))
        elif name == "webhook":
            url = _required(s.notifications_webhook_url, "notifications.webhook_url")
            channels[name] = WebhookChannel(url, poster(), secret=webhook_secret)
        elif name == "audit":
            channels[name] = AuditChannel(_required(s.notifications_audit_url, "notifications.audit_url"), poster())
    dispatcher = Dispatcher(
        sessions,
        channels,
        batch_size=s.notifications_batch_size,
        lease_s=max(60.0, 4 * s.notifications_timeout_s),
        retry_base_s=s.notifications_retry_base_s,
        retry_max_s=s.notifications_retry_max_s,
    )
    return Notifications(dispatcher, resend, tuple(posters))


def backlog_source(
    sessions: sessionmaker[Session], channels: Iterable[str]
) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """(pending rows, oldest pending age) per channel, for the scrape-time gauges."""
    with sessions() as session:
        backlog = outbox.backlog(session, channels)
    return (
        {(name,): float(b.pending) for name, b in backlog.items()},
        {(name,): b.oldest_age_s for name, b in backlog.items()},
    )
