"""The scheduler: job defaults, triggers and run metrics. The only module that names APScheduler triggers."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from services import metrics, tracing
from services.logs import log_context

log = logging.getLogger(__name__)

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 5}


@dataclass(frozen=True)
class ScheduledJob:
    """A job definition: a stable id, what to run, and how often."""

    id: str
    func: Callable[[], object]
    every_s: float
    executor: str = "default"  # a named thread pool (see add_pools); collection jobs get one per venue
    run_at_start: bool = False  # first run immediately instead of one interval after start
    exclusive: bool = True  # with leases, runs on one replica at a time (False: every replica runs it)


class Leases(Protocol):
    """Job leases across replicas (services/leases.py): ``claim`` is True when this replica may run the job."""

    def claim(self, job_id: str) -> bool: ...


def build_scheduler(max_workers: int = 16) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        timezone="UTC",
        job_defaults=JOB_DEFAULTS,
        executors={"default": {"type": "threadpool", "max_workers": max_workers}},
    )

    def on_skipped(event: JobExecutionEvent) -> None:
        reason = "misfired" if event.code == EVENT_JOB_MISSED else "still_running"
        metrics.JOB_MISSED.labels(event.job_id, reason).inc()
        log.warning("job %s skipped a run (%s)", event.job_id, reason)

    scheduler.add_listener(on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


def instrumented(
    job_id: str, func: Callable[[], object], claim: Callable[[str], bool] | None = None
) -> Callable[[], None]:
    """Time every run, count failures, and log them with the job in context; never raise into APScheduler.

    With ``claim``, a run first claims the job's lease and is skipped (counted, not timed) when another
    replica holds it. A claim that raises (database down) is a failed run like any other."""

    @functools.wraps(func)
    def run() -> None:
        started = time.perf_counter()
        ran = True
        with log_context(job=job_id), tracing.span(f"job {job_id}", job=job_id) as span:
            try:
                if claim is not None and not claim(job_id):
                    ran = False
                    metrics.JOB_NOT_LEADER.labels(job_id).inc()
                    return
                func()
            except Exception as exc:
                tracing.record_error(span, exc)  # caught here, so the span would not see it
                metrics.JOB_FAILURES.labels(job_id).inc()
                log.exception("job %s failed", job_id)
            finally:
                if ran:
                    metrics.JOB_DURATION.labels(job_id).observe(time.perf_counter() - started)

    return run


def add_pools(scheduler: BackgroundScheduler, pools: Mapping[str, int]) -> None:
    """Add a named thread pool per entry (alias -> threads), for jobs whose ``executor`` names it."""
    for alias, threads in pools.items():
        scheduler.add_executor(ThreadPoolExecutor(max_workers=threads), alias)


def register(scheduler: BackgroundScheduler, jobs: list[ScheduledJob], leases: Leases | None = None) -> None:
    """Register (or replace) every job; jobs live in code, so they are registered at every start.

    With ``leases``, each exclusive job runs only on the replica holding its lease (the job code is unchanged)."""
    for job in jobs:
        first_run = {"next_run_time": datetime.now(UTC)} if job.run_at_start else {}
        claim = leases.claim if leases is not None and job.exclusive else None
        scheduler.add_job(
            instrumented(job.id, job.func, claim),
            "interval",
            seconds=job.every_s,
            id=job.id,
            name=job.id,
            replace_existing=True,
            executor=job.executor,
            **first_run,
        )
