"""The scheduler: job defaults, triggers and run metrics. The only module that names APScheduler triggers."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

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


def instrumented(job_id: str, func: Callable[[], object]) -> Callable[[], None]:
    """Time every run, count failures, and log them with the job in context; never raise into APScheduler."""

    @functools.wraps(func)
    def run() -> None:
        started = time.perf_counter()
        with log_context(job=job_id), tracing.span(f"job {job_id}", job=job_id) as span:
            try:
                func()
            except Exception as exc:
                tracing.record_error(span, exc)  # caught here, so the span would not see it
                metrics.JOB_FAILURES.labels(job_id).inc()
                log.exception("job %s failed", job_id)
            finally:
                metrics.JOB_DURATION.labels(job_id).observe(time.perf_counter() - started)

    return run


def add_pools(scheduler: BackgroundScheduler, pools: Mapping[str, int]) -> None:
    """Add a named thread pool per entry (alias -> threads), for jobs whose ``executor`` names it."""
    for alias, threads in pools.items():
        scheduler.add_executor(ThreadPoolExecutor(max_workers=threads), alias)


def register(scheduler: BackgroundScheduler, jobs: list[ScheduledJob]) -> None:
    """Register (or replace) every job; jobs live in code, so they are registered at every start."""
    for job in jobs:
        first_run = {"next_run_time": datetime.now(UTC)} if job.run_at_start else {}
        scheduler.add_job(
            instrumented(job.id, job.func),
            "interval",
            seconds=job.every_s,
            id=job.id,
            name=job.id,
            replace_existing=True,
            executor=job.executor,
            **first_run,
        )
