"""In-process fan-out of stored alert events to subscribers (gRPC WatchAlerts streams), after commit.

Each subscriber has a bounded queue, so a slow reader can never stall the evaluation: when its queue is
full the event is dropped for that subscriber and ``overflowed`` is set; the reader then resumes from the
database after the last event id it saw (ids become visible in id order, see services/alert_store.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.alert_records import StoredEvent


@dataclass
class Subscription:
    feed: AlertFeed
    events: queue.Queue[StoredEvent | None]
    overflowed: bool = False

    def get(self, timeout: float | None = None) -> StoredEvent | None:
        """The next event; None when the feed closed or the timeout passed."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.feed.unsubscribe(self)


@dataclass
class AlertFeed:
    max_queue: int = 1000
    _subscribers: list[Subscription] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, queue.Queue(self.max_queue))
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def publish(self, events: Sequence[StoredEvent]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            for event in events:
                try:
                    sub.events.put_nowait(event)
                except queue.Full:
                    sub.overflowed = True
                    break

    def close_all(self) -> None:
        """End every subscription: each reader gets None."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            try:
                sub.events.put_nowait(None)
            except queue.Full:
                sub.overflowed = True
