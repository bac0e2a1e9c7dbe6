"""Circuit breaker transitions, driven by a hand-stepped clock."""

from __future__ import annotations

import pytest

from services.venues.breaker import BreakerState, CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failed(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("x", failure_threshold=3, cooldown=10, clock=Clock())
    failed(breaker, 2)
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    failed(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    failed(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match=r"next probe in 10\.0s"):
        breaker.before_call()


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("x", failure_threshold=1, cooldown=10, clock=clock)
    failed(breaker, 1)
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a concurrent caller while the probe is out
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN  # cool-down restarts at the failed probe
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
