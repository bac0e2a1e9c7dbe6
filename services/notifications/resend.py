"""Re-posts every active alert to Alertmanager, so a firing alert does not expire there while it is open.

Alertmanager resolves an alert by itself when its ``endsAt`` passes; each post extends it by the
channel's validity (a few re-send intervals), so a monitor that dies lets its alerts clear on their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from services import metrics
from services.notifications import documents, outbox
from services.notifications.channels import AlertmanagerChannel

log = logging.getLogger(__name__)

_CHUNK = 500  # alerts per POST: keeps one request small however many alerts are open


@dataclass
class ResendActiveAlerts:
    sessions: sessionmaker[Session]
    channel: AlertmanagerChannel

    def __call__(self) -> int:
        """Returns how many alerts were re-posted."""
        with self.sessions() as session:
            active = outbox.active_alert_documents(session)
        now: datetime = self.channel.clock()
        alerts = [
            am_alert
            for alert in active
            for am_alert in documents.alertmanager_alerts(
                {"event_id": None, "event_type": "resent", "occurred_at": now.isoformat(), "alert": alert},
                now=now,
                validity=self.channel.validity,
            )
        ]
        for start in range(0, len(alerts), _CHUNK):
            result = self.channel.post_alerts(alerts[start : start + _CHUNK])
            if not result.ok:
                metrics.ALERTMANAGER_RESENDS.labels("failed").inc()
                log.warning("re-posting active alerts to Alertmanager failed: %s", result.error)
                return start
        metrics.ALERTMANAGER_RESENDS.labels("ok").inc()
        return len(alerts)
