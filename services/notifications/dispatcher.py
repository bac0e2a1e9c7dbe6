"""The outbox dispatcher: claims due rows per channel, delivers them, records every attempt.

Runs as its own scheduled job, so a slow or dead receiver delays notifications but never evaluation.
A failed delivery is retried with capped exponential backoff and jitter; the first failure on a channel
ends that channel's run (the rest of its batch is released untouched) so a dead receiver costs one
timeout per run, not one per row.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from services import metrics, tracing
from services.notifications import outbox
from services.notifications.channels import Channel

log = logging.getLogger(__name__)


def retry_delay(failures: int, *, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds before the next attempt after ``failures`` failed ones (>= 1).

    Doubles per failure up to ``max_s``; ``jitter`` in [0, 1) spreads it over [d/2, d) so rows that
    failed together (a receiver outage) do not all come back in the same second.
    """
    delay = min(max_s, base_s * 2.0 ** min(max(failures, 1) - 1, 60))
    return delay / 2 + delay / 2 * jitter


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    channels: Mapping[str, Channel]
    batch_size: int = 100
    lease_s: float = 60.0  # longer than one delivery's timeout, or a replica may re-deliver early
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    jitter: Callable[[], float] = field(default=random.random)

    def __call__(self) -> int:
        """One pass over every channel; returns how many rows were delivered."""
        return sum(self.dispatch_channel(name, channel) for name, channel in self.channels.items())

    def dispatch_channel(self, name: str, channel: Channel) -> int:
        with self.sessions.begin() as session:
            items = outbox.claim(session, name, limit=self.batch_size, lease_s=self.lease_s)
        delivered = 0
        for index, item in enumerate(items):
            with tracing.span(f"notify {name}", kind=tracing.SpanKind.CLIENT, channel=name, outbox_id=item.id) as span:
                # Inside the span: channels put its trace id in the request (traceparent, audit details).
                result = channel.deliver(item.payload, item.idempotency_key)
                if result.status_code is not None:
                    span.set_attribute("http.response.status_code", result.status_code)
                if not result.ok:
                    tracing.record_error(span, "delivery failed")
            if result.ok:
                with self.sessions.begin() as session:
                    latency = outbox.record_delivered(session, item, status_code=result.status_code)
                metrics.NOTIFICATION_ATTEMPTS.labels(name, "delivered").inc()
                if latency is not None:
                    metrics.NOTIFICATION_DELIVERY_LATENCY.labels(name).observe(latency)
                delivered += 1
                continue
            delay = retry_delay(
                item.attempts + 1, base_s=self.retry_base_s, max_s=self.retry_max_s, jitter=self.jitter()
            )
            error = result.error or "delivery failed"
            with self.sessions.begin() as session:
                outbox.record_failed(session, item, status_code=result.status_code, error=error, retry_in_s=delay)
                outbox.release(session, [rest.id for rest in items[index + 1 :]], retry_in_s=delay)
            metrics.NOTIFICATION_ATTEMPTS.labels(name, "failed").inc()
            log.warning(
                "notification to %s failed (outbox %d, attempt %d), retry in %.1fs: %s",
                name,
                item.id,
                item.attempts + 1,
                delay,
                error,
                extra={"channel": name, "outbox_id": item.id},
            )
            break
        return delivered
