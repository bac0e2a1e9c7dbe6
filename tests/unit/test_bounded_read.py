"""Scrape-time database reads answer within their deadline and never pile up behind a hung read."""

from __future__ import annotations

import threading
import time

import pytest

from services.database import BoundedRead


def test_a_read_that_answers_in_time_returns_its_value_and_each_call_reads_again() -> None:
    reads = iter(range(10))
    bounded = BoundedRead(lambda: next(reads), timeout_s=2.0)
    assert bounded() == 0
    assert bounded() == 1  # no stale cache: a finished read is not reused


def test_a_hung_read_times_out_is_shared_by_later_calls_and_its_result_serves_the_next_call() -> None:
    release = threading.Event()
    started: list[float] = []

    def hung_read() -> str:
        started.append(time.monotonic())
        release.wait(30)
        return "fresh"

    bounded = BoundedRead(hung_read, timeout_s=0.2)
    for _ in range(5):  # scrapes keep coming while the database hangs
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not answer within 0\.2 s"):
            bounded()
        assert time.monotonic() - began < 2.0  # the deadline (0.2 s), with slack for a loaded machine
    assert len(started) == 1  # one stuck read, not one per scrape

    release.set()
    deadline = time.monotonic() + 5
    while True:  # the stuck read finishes; a later call gets an answer again
        try:
            assert bounded() == "fresh"
            break
        except TimeoutError:
            assert time.monotonic() < deadline
    assert len(started) in (1, 2)


def test_a_failing_read_raises_its_error_to_the_caller() -> None:
    def broken() -> int:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError, match="database down"):
        BoundedRead(broken, timeout_s=2.0)()
