"""Process-wide interpreter settings for a long-running monitor: the GIL switch interval and the garbage collector.

The monitor is one CPython process whose threads (scheduler, collection, evaluation, the gRPC tick path)
share one GIL. Two interpreter defaults make a thread that wakes up (a job due, a tick batch arriving) wait
far longer than its own work takes (measured in benchmarks/soak.py, docs/performance.md):

- the switch interval (5 ms): how long a waiting thread lets a running one keep the GIL before asking for it;
- the cyclic garbage collector: a young-generation pass every 700 allocations and a full pass every
  ~70k, each holding the GIL for its whole length, over a heap of long-lived objects (caches, the kept book)
  that will never be garbage.

`tune` shortens the first and can space out the second (measured: a young-generation threshold of 50,000
made each young pass ~100 ms and the lateness worse, so the default keeps Python's 700); `freeze` moves
everything allocated during start-up into the permanent generation so later passes never traverse it.
Both apply to the whole process, so the process's entry point (`serve`) calls them, never a `Monitor`
(tests build several in one process).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)


def tune(*, switch_interval_ms: float, gc_gen0_threshold: int) -> None:
    """Set the GIL switch interval and the young-generation threshold (0 keeps the interpreter's)."""
    if switch_interval_ms > 0:
        sys.setswitchinterval(switch_interval_ms / 1000)
    if gc_gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gc_gen0_threshold, gen1, gen2)
    log.info(
        "interpreter: switch interval %.2f ms, gc thresholds %s",
        sys.getswitchinterval() * 1000,
        gc.get_threshold(),
    )


def freeze() -> None:
    """Collect once, then exempt every surviving object from future collections (they are start-up state)."""
    gc.collect()
    gc.freeze()
    log.info("interpreter: %d start-up objects frozen out of garbage collection", gc.get_freeze_count())


@contextlib.contextmanager
def realtime_threads(priority: int) -> Iterator[bool]:
    """Threads started inside the block run in the SCHED_RR real-time class at ``priority`` (1-99; 0: off):
    when one wakes (a due job) it gets a core at once instead of waiting for a busy core's time slice to end
    (measured: that wait was what was left of the scheduler's lateness once the work ran in worker
    processes; docs/performance.md "Soak"). The calling thread is in the class only for the block: threads
    inherit it at creation, so only those started inside, and the threads *they* start, keep it. Yields
    whether it was granted: it needs CAP_SYS_NICE or an RLIMIT_RTPRIO that high; refused, it is logged and
    everything stays in the normal class. Child processes inherit it too and must call ``normal()``."""
    granted = False
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
            granted = True
            log.info("interpreter: threads started now run in SCHED_RR at priority %d", priority)
        except OSError as exc:
            log.info("interpreter: real-time priority %d refused (%s); normal class", priority, exc)
    try:
        yield granted
    finally:
        if granted:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def normal() -> None:
    """Back to the normal scheduling class (a worker process started by a real-time thread)."""
    if os.sched_getscheduler(0) in (os.SCHED_RR, os.SCHED_FIFO):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
