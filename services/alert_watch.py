"""Live alert events for WatchAlerts: one poller thread tails ``alert_events`` by id and fans out to
bounded per-subscriber queues.

Why poll: every writer (scheduled evaluation, the tick writer, acknowledgements; possibly in other
replicas) commits to ``alert_events``, and ids become visible in id order (the alert store serialises
appends with an advisory lock), so "id > last seen" is a complete, ordered feed. In-process writers
call ``wake()`` after commit to cut the latency below the poll interval.

Resume without gap or duplicate (``subscribe`` + ``replay``): a subscriber is registered under the
poller's lock and receives every event with id > the poller's position P at that moment; the catch-up
read from the table then covers (resume id, ≥ P]; the stream skips any id it has already sent.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from services.alert_queries import AlertEventView

log = logging.getLogger(__name__)

FetchAfter = Callable[[int, int], list[AlertEventView]]  # (after id, limit) -> events in id order
_POLL_BATCH = 1000


class SubscriberOverflow(Exception):
    """The subscriber fell ``queue_size`` events behind and was dropped (memory stays bounded)."""


@dataclass
class Subscription:
    accounts: frozenset[str]
    start_after: int  # the poller's position when registered: live events have larger ids
    _queue: queue.Queue[AlertEventView | None]
    _on_close: Callable[[Subscription], None]
    overflowed: bool = False
    closed: bool = field(default=False)

    def offer(self, event: AlertEventView) -> None:
        if self.closed or (self.accounts and event.account not in self.accounts):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.overflowed = True
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)
            # Make room so the sentinel always fits: the reader stops at it either way.
            while True:
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    self._queue.get_nowait()

    def events(self, poll_s: float = 0.5, alive: Callable[[], bool] = lambda: True) -> Iterator[AlertEventView]:
        """Live events until closed. Raises SubscriberOverflow if dropped for falling behind."""
        while alive():
            try:
                item = self._queue.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is None:
                break
            yield item
        if self.overflowed:
            raise SubscriberOverflow(f"subscriber fell more than {self._queue.maxsize} events behind")


class AlertEventPoller:
    def __init__(self, fetch_after: FetchAfter, *, start_after: int, interval_s: float, queue_size: int) -> None:
        self._fetch_after = fetch_after
        self._position = start_after
        self._interval_s = interval_s
        self._queue_size = queue_size
        self._subscribers: list[Subscription] = []
        # Re-entrant: an overflowing subscriber removes itself while poll_once holds the lock.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-event-poller", daemon=True)

    @property
    def position(self) -> int:
        return self._position

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Poll now (writers call this after committing alert events)."""
        self._wake.set()

    def subscribe(self, accounts: Sequence[str] = ()) -> Subscription:
        with self._lock:
            sub = Subscription(frozenset(accounts), self._position, queue.Queue(self._queue_size), self._remove)
            self._subscribers.append(sub)
            return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def stop(self) -> None:
        """Stop polling and end every open subscription (their streams finish with OK)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            sub.close()

    def poll_once(self) -> int:
        """Fetch and publish what is new; returns how many events were published."""
        events = self._fetch_after(self._position, _POLL_BATCH)
        if not events:
            return 0
        with self._lock:
            # Position and fan-out move together under the lock, so a subscriber registered in
            # between sees exactly the events after its start_after.
            for event in events:
                for sub in list(self._subscribers):
                    sub.offer(event)
            self._position = events[-1].id
        return len(events)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.poll_once() == _POLL_BATCH:
                    pass  # a burst: keep reading before sleeping
            except Exception:  # a database hiccup must not kill the feed; the next poll retries
                log.exception("polling alert_events failed")
            self._wake.wait(self._interval_s)
            self._wake.clear()


def replay_then_live(
    subscribe: Callable[[], Subscription],
    resume_after: int,
    fetch_after: FetchAfter,
    *,
    accounts: Sequence[str] = (),
    alive: Callable[[], bool] = lambda: True,
    page: int = 500,
) -> Iterator[tuple[AlertEventView, bool]]:
    """(event, replayed) pairs: stored events after ``resume_after``, then live ones; ids strictly increase.

    The bulk of the history is read before subscribing, so a long catch-up cannot overflow the live
    queue; a second read after subscribing closes the window up to the subscription's start.
    """
    wanted = frozenset(accounts)
    last = resume_after

    def stored() -> Iterator[AlertEventView]:
        nonlocal last
        while alive():
            batch = fetch_after(last, page)
            for event in batch:
                last = event.id
                if not wanted or event.account in wanted:
                    yield event
            if len(batch) < page or (sub is not None and last >= sub.start_after):
                return

    sub: Subscription | None = None
    if resume_after > 0:
        for event in stored():
            yield event, True
    sub = subscribe()
    try:
        if resume_after > 0:
            for event in stored():
                yield event, True
        last = max(last, sub.start_after) if resume_after == 0 else last
        for event in sub.events(alive=alive):
            if event.id > last:
                last = event.id
                yield event, False
    finally:
        sub.close()
