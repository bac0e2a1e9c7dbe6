"""Builders for tests/unit/test_workers.py: the child process imports them by reference, so they live in a module."""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import Counter

from services.config import Settings
from services.workers import Built


def echo(settings: Settings, greeting: str = "hello") -> Built:
    """Jobs that answer, raise, hang, die, or wait for each other (to show requests run concurrently)."""
    gate = threading.Barrier(2, timeout=10)
    # Registered here, in the child only: the parent's registry (checked against docs/metrics.md) never has it.
    calls = Counter("risk_monitor_test_worker_calls_total", "Calls a test worker served.", ["job"])

    def say(name: str) -> str:
        calls.labels("say").inc()
        return f"{greeting} {name} from {os.getpid()}"

    def fail() -> None:
        raise ValueError("bad input in the child")

    def hang() -> None:
        time.sleep(3600)

    def die() -> None:
        os._exit(3)

    def meet() -> int:
        return gate.wait()  # returns only when two calls are inside at once

    def unreadable() -> Unreadable:
        return Unreadable()

    jobs = {"say": say, "fail": fail, "hang": hang, "die": die, "meet": meet, "unreadable": unreadable}
    return Built(jobs, {"pid": os.getpid()})


def _refuse() -> None:
    raise RuntimeError("this result cannot be loaded here")


class Unreadable:
    """Pickles in the child, fails to load in the parent (as a class changed under a running serve would)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


def broken(settings: Settings) -> Built:
    raise RuntimeError("cannot reach the venue list")
