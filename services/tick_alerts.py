"""Background writer for level changes found on the tick path: StreamTicks never waits on the database.

``LiveRisk`` submits each batch that changed a level; a writer thread drains the queue and persists
everything it took in one call (one transaction in the alert store), so a burst of batches costs one
round trip. Durability (also in the .proto and docs/api.md): a stopping server flushes the queue before
the database engine is disposed; a crash loses at most the queued changes.

The queue is unbounded. ``submit`` runs inside ``LiveRisk``'s lock, so a bounded queue that blocked
when full stopped every tick stream during a long database outage; and dropping or merging queued
changes would lose level changes the audit trail must show (an escalation then de-escalation is two
events, not zero). Memory grows by the queued changes only (batches that change no level are never
queued); ``risk_monitor_tick_alert_queue`` shows the depth and a warning is logged when it passes
``warn_depth`` (``grpc.tick_queue_size``), so an outage that long is seen long before memory matters.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Engine

from models.risk import Alert, AlertEvent, AlertState, Transition, step
from services import metrics
from services.alert_records import StoredEvent, read_alerts
from services.alert_store import AlertContext, apply_transitions
from services.live_risk import BatchOutcome

log = logging.getLogger(__name__)

# Persists outcomes in order; the same fingerprints as the scheduled path, deduplicated by the store.
Persist = Callable[[Sequence[tuple[BatchOutcome, datetime]]], None]
_STOP = object()
ACTOR = "system:ticks"
STOP_ATTEMPTS = 5  # when stopping, a persistently failing database can't hold the process forever


class TickAlertWriter:
    def __init__(
        self,
        persist: Persist,
        *,
        warn_depth: int = 10_000,
        max_batch: int = 500,
        retry_s: float = 1.0,
        on_persisted: Callable[[], None] = lambda: None,
    ) -> None:
        self._persist = persist
        # SimpleQueue: unbounded, put never blocks (see the module docstring), and cheaper than Queue.
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._warn_depth = max(1, warn_depth)
        self._warned = False  # set past warn_depth, cleared once the queue has drained below half of it
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._on_persisted = on_persisted  # e.g. wake the WatchAlerts poller
        self._thread = threading.Thread(target=self._run, name="tick-alert-writer", daemon=True)
        self.persisted_batches = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, outcome: BatchOutcome, now: datetime) -> None:
        """Never blocks: called under ``LiveRisk``'s lock, on the tick path."""
        self._queue.put((outcome, now))
        depth = self._queue.qsize()
        metrics.TICK_ALERT_QUEUE.set(depth)
        if depth > self._warn_depth and not self._warned:
            self._warned = True  # one line per episode, not one per batch
            log.warning(
                "tick alert queue at %d batches (grpc.tick_queue_size %d): the database is not keeping up;"
                " the changes are kept in memory until it does",
                depth,
                self._warn_depth,
            )

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush everything queued, then stop. Call after the gRPC server stopped accepting ticks."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("tick alert writer did not flush within %.0f s; %d batches pending", timeout_s, self.pending())

    def _drained(self) -> None:
        depth = self._queue.qsize()
        metrics.TICK_ALERT_QUEUE.set(depth)
        if self._warned and depth <= self._warn_depth // 2:
            self._warned = False
            log.info("tick alert queue back to %d batches", depth)

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
            attempts = 0
            while items:
                try:
                    self._persist(items)
                except Exception as exc:  # keep the changes and retry: losing a breach is worse than a delay
                    attempts += 1
                    if attempts == 1:
                        log.exception("persisting %d tick batches failed; retrying", len(items))
                    elif attempts % 60 == 0:  # about once a minute through an outage, not a traceback a second
                        log.warning("persisting tick batches still failing (attempt %d): %s", attempts, exc)
                    if stop and attempts >= STOP_ATTEMPTS:
                        log.error("stopping with %d unpersisted tick batches", len(items))
                        return
                    time.sleep(self._retry_s)
                    continue
                self.persisted_batches += len(items)
                self._drained()
                self._on_persisted()
                break
            if stop:
                return


def store_persist(
    engine: Engine,
    account_ids: Mapping[str, int],
    *,
    channels: Callable[[], Sequence[str]] = tuple,
    publish: Callable[[Sequence[StoredEvent]], None] | None = None,
) -> Persist:
    """Persist tick-path level changes through the alert store, exactly as the scheduled path does: the
    state machine's ``step`` against the active alert, absent-check resolution as ``resolve_absent``, the
    same fingerprints, one transaction per drained burst. The store re-derives a transition the scheduled
    path overtook, and the partial unique index keeps one active alert per fingerprint."""

    def persist(items: Sequence[tuple[BatchOutcome, datetime]]) -> None:
        fingerprints = sorted({ch.check.fingerprint for outcome, _ in items for ch in outcome.changes})
        stored: list[StoredEvent] = []
        with engine.begin() as conn:
            active = {
                r.fingerprint: r.to_domain() for r in read_alerts(conn, fingerprints=fingerprints, active_only=True)
            }
            for outcome, now in items:
                transitions, context = _transitions(outcome, now, active, account_ids)
                events = apply_transitions(conn, transitions, now, ACTOR, context, channels=channels())
                for event in events:
                    alert = event.alert.to_domain()
                    if alert.active:
                        active[alert.fingerprint] = alert
                    else:
                        active.pop(alert.fingerprint, None)
                stored += events
        if publish is not None and stored:
            publish(stored)

    return persist


def _transitions(
    outcome: BatchOutcome, now: datetime, active: Mapping[str, Alert], account_ids: Mapping[str, int]
) -> tuple[list[Transition], dict[str, AlertContext]]:
    transitions: list[Transition] = []
    context: dict[str, AlertContext] = {}
    for change in outcome.changes:
        check = change.check
        fp = check.fingerprint
        previous = active.get(fp)
        if change.value is None:  # cleared by absence: resolve as the scheduled path's resolve_absent does
            if previous is not None and previous.active:
                resolved = replace(previous, state=AlertState.RESOLVED, updated_at=now, resolved_at=now)
                transitions.append(Transition(AlertEvent.RESOLVED, resolved, previous))
            continue
        current = check  # an emitted check: its value and level are the batch's
        found = step(previous, current, now)
        if found:
            transitions.extend(found)
            account = check.subject.account
            # The data time is that of the data that showed the value: the batch's newest tick, or the snapshots
            # a resync adopted (never the clock of the evaluation, which would make detection latency read 0).
            context[fp] = AlertContext(current, account_ids.get(account) if account else None, account, outcome.data_at)
    return transitions, context
