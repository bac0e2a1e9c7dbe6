"""A small circuit breaker: stop calling an endpoint that keeps failing, probe it after a cool-down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail fast with CircuitOpen until the cool-down has passed
    HALF_OPEN = "half_open"  # one probe call goes through; its outcome closes or reopens the breaker


class CircuitOpen(ConnectionError):
    """The breaker for this endpoint is open: the call was not attempted."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit for {name} is open; next probe in {retry_in:.1f}s")
        self.name = name
        self.retry_in = retry_in


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; half-opens `cooldown` seconds later.

    Callers bracket each attempt with `before_call()` and then `record_success()` or
    `record_failure()`. Only one probe is let through while half-open; concurrent callers get
    `CircuitOpen` until it reports back.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> None:
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return
            opened_at = self._opened_at or 0.0
            raise CircuitOpen(self.name, max(0.0, opened_at + self.cooldown - self._clock()))

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()  # (re)open: a failed probe restarts the cool-down
            self._probing = False
