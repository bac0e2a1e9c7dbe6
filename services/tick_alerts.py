"""Background writer for level changes found on the tick path: StreamTicks never waits on the database.

``LiveRisk`` submits each batch that changed a level; a writer thread drains the bounded queue and
persists everything it took in one call (one transaction in the alert store), so a burst of batches
costs one round trip. Durability (also in the .proto and docs/api.md): a stopping server flushes the
queue before the database engine is disposed; a crash loses at most the queued changes. The queue is
bounded: when the database falls behind, ``submit`` blocks, which slows the tick streams
(back-pressure) instead of growing memory or dropping breaches.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from services.live_risk import BatchOutcome

log = logging.getLogger(__name__)

# Persists outcomes in order; the same fingerprints as the scheduled path, deduplicated by the store.
Persist = Callable[[Sequence[tuple[BatchOutcome, datetime]]], None]
_STOP = object()


class TickAlertWriter:
    def __init__(
        self,
        persist: Persist,
        *,
        queue_size: int = 10_000,
        max_batch: int = 500,
        retry_s: float = 1.0,
        on_persisted: Callable[[], None] = lambda: None,
    ) -> None:
        self._persist = persist
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._on_persisted = on_persisted  # e.g. wake the WatchAlerts poller
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tick-alert-writer", daemon=True)
        self.persisted_batches = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, outcome: BatchOutcome, now: datetime) -> None:
        self._queue.put((outcome, now))  # blocks when full: back-pressure, see the module docstring

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush everything queued, then stop. Call after the gRPC server stopped accepting ticks."""
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("tick alert writer did not flush within %.0f s; %d batches pending", timeout_s, self.pending())

    def _take(self) -> tuple[list[tuple[BatchOutcome, datetime]], bool]:
        items: list[tuple[BatchOutcome, datetime]] = []
        stop = False
        first = self._queue.get()
        while True:
            if first is _STOP:
                stop = True
            else:
                items.append(first)  # type: ignore[arg-type]
            if len(items) >= self._max_batch:
                break
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                break
        return items, stop

    def _run(self) -> None:
        while True:
            items, stop = self._take()
            while items:
                try:
                    self._persist(items)
                    self.persisted_batches += len(items)
                    self._on_persisted()
                    break
                except Exception:  # keep the changes and retry: losing a breach is worse than a delay
                    log.exception("persisting %d tick batches failed; retrying", len(items))
                    if self._stopping.wait(self._retry_s) and stop:
                        log.error("stopping with %d unpersisted tick batches", len(items))
                        return
            if stop:
                return
