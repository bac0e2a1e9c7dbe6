"""Bounded concurrent venue requests: one pool of request threads per venue, shared by that venue's jobs.

A collection run fans its per-account requests out over the venue's pool and waits for all of them. The
pool is the venue's bulkhead for requests, as the job pool (``venue:<id>``) is for runs: a slow venue
holds at most its own ``concurrency`` threads and connections, never another venue's. Each call runs in a
copy of the submitting thread's context, so log fields (job, venue, run) and the job's trace span carry
over into the request threads.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class FanOut:
    """``map`` runs ``fn`` over the items on at most ``workers`` threads; results come back in item order."""

    def __init__(self, name: str, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.name = name
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"fetch-{name}")

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Every result, or the first exception raised (callers catch per item, so one item never costs
        the others). With a single item, or one worker, the calls run on the caller's thread."""
        if len(items) <= 1 or self.workers == 1:
            return [fn(item) for item in items]
        # A context may be entered by one thread at a time: each call gets its own copy.
        futures = [self._pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def sequential(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """The default when no pool is given: one call after another on the caller's thread."""
    return [fn(item) for item in items]
