"""Composition roots of the worker processes (services/workers.py): each builder runs in its child and
builds the same objects ``services/app.py`` builds in-process when workers are off.

- ``collection``: the venue clients, price streams and every collection job (``build_collection``).
- ``evaluation``: the limits reloader and the evaluation job; a run returns the alert events it stored,
  which the parent publishes to its live feed.
- ``tick_path``: the tick path's in-memory state (``LiveRisk``), its alert writer and resync job, served on
  a loopback gRPC port of its own that the parent relays StreamTicks, CheckOrder and GetRiskSummary to
  (services/rpc/relay.py), guarded by a per-start secret.

Children never start an embedded database: the parent passes the URL of the one it runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine

from jobs.collect import build_collection
from jobs.evaluate import EvaluateJob
from jobs.reload_limits import ReloadLimitsJob
from jobs.resync_tick_state import ResyncTickStateJob
from services import database
from services.alert_feed import AlertFeed
from services.alert_records import StoredEvent
from services.book_loader import FreshnessSource, load_book
from services.config import Settings
from services.evaluation import HistoryState
from services.limits_reloader import LimitsReloader
from services.rpc.api import RiskApi, acknowledge_with_store, build_api
from services.rpc.relay import SharedSecretInterceptor
from services.rpc.server import build_server
from services.tick_alerts import store_persist
from services.workers import Built


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _engine(settings: Settings, role: str, pool_size: int) -> Engine:
    s = settings
    return database.make_engine(
        s.database_url,
        pool_size=pool_size,
        connect_timeout_s=s.database_connect_timeout_s,
        statement_timeout_s=s.database_statement_timeout_s,
        application_name=f"{s.service_name}-{role}:{s.service_instance}",  # ":<instance>" last, as the parent's
    )


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What the parent schedules for a job that runs in a worker."""

    id: str
    every_s: float
    executor: str
    run_at_start: bool
    per_account: bool
    venue_id: str


def collection(settings: Settings) -> Built:
    engine = _engine(settings, "collection", settings.database_pool_size)
    built = build_collection(settings, engine)
    built.start()
    jobs: dict[str, Callable[..., object]] = {}
    specs = []
    for job in built.jobs:
        per_account = job.id in built.per_account
        jobs[job.id] = _with_shards(job.func) if per_account else job.func
        venue = str(getattr(job.func, "venue_id", ""))
        specs.append(JobSpec(job.id, job.every_s, job.executor, job.run_at_start, per_account, venue))
    jobs[REFRESH_STALENESS] = functools.partial(built.refresh_freshness, engine)

    def close() -> None:
        built.close()
        engine.dispose()

    return Built(jobs, {"jobs": specs, "pools": dict(built.pools)}, close)


def _with_shards(job: Callable[[], object]) -> Callable[..., object]:
    """The job over the accounts the parent's shards select for this run (None: every account)."""

    def run(subset: Callable[[Sequence[str]], list[str]] | None = None) -> object:
        if subset is None:
            return job()
        narrowed = dataclasses.replace(job, shards=lambda _job, _venue: subset)  # type: ignore[type-var]
        return narrowed()

    return run


REFRESH_STALENESS = "refresh_staleness"


def evaluate_job(
    settings: Settings,
    engine: Engine,
    limits: LimitsReloader,
    *,
    publish: Callable[[Sequence[StoredEvent]], None],
    freshness: FreshnessSource | None,
) -> EvaluateJob:
    """The scheduled evaluation, in-process or in its worker. ``freshness`` None: from collection_runs."""
    s = settings
    return EvaluateJob(
        engine,
        limits=limits.limits,
        groups=limits.groups,
        channels=lambda: s.notifications_channels,
        clock=_utcnow,
        history=HistoryState(every_s=s.evaluation_history_every_s),
        publish=publish,
        freshness=freshness,
        per_account_metrics=s.metrics_per_account,
    )


def tick_api(
    settings: Settings,
    engine: Engine,
    limits: LimitsReloader,
    *,
    freshness: FreshnessSource | None = None,
    feed: AlertFeed | None = None,
) -> tuple[RiskApi, ResyncTickStateJob]:
    """The API with the tick path's state seeded from the latest snapshots, and the job that re-seeds it."""
    s = settings
    loaded = load_book(engine, groups=limits.groups(), freshness=freshness)
    account_ids = dict(loaded.account_ids)  # shared by the alert writer and the resync (new accounts)

    def channels() -> tuple[str, ...]:
        return s.notifications_channels

    api = build_api(
        s,
        engine,
        book=loaded.book,
        limits=limits.limits,
        acknowledge=acknowledge_with_store(engine, channels=channels, feed=feed),
        persist=store_persist(engine, account_ids, channels=channels, publish=feed.publish if feed else None),
        feed=feed,
    )
    live = api.servicer.require_live()
    return api, ResyncTickStateJob(engine, live, limits.groups, account_ids, _utcnow, freshness)


def evaluation(settings: Settings) -> Built:
    engine = _engine(settings, "evaluation", 4)
    limits = LimitsReloader(engine, settings.limits_file, clock=_utcnow)
    limits.reload()
    stored: list[StoredEvent] = []  # one pass at a time (max_instances=1): what the running pass stored
    # Collection runs in another process: freshness from collection_runs.
    evaluate = evaluate_job(settings, engine, limits, publish=stored.extend, freshness=None)

    def run() -> list[StoredEvent]:
        stored.clear()
        evaluate()
        return list(stored)

    jobs: dict[str, Callable[..., object]] = {"evaluate": run, "reload_limits": ReloadLimitsJob(limits)}
    return Built(jobs, close=engine.dispose)


def tick_path(settings: Settings, secret: str) -> Built:
    engine = _engine(settings, "ticks", 4)
    limits = LimitsReloader(engine, settings.limits_file, clock=_utcnow)
    limits.reload()
    # Auth and TLS are the parent's: this listener is loopback-only and takes the parent's secret alone.
    internal = dataclasses.replace(
        settings, grpc_tokens="", grpc_tokens_file="", grpc_tls_cert="", grpc_tls_key="", grpc_tls_client_ca=""
    )
    api, resync = tick_api(internal, engine, limits)
    server, _health, port = build_server(
        "127.0.0.1:0",
        [api.registration],
        max_workers=settings.grpc_max_workers,
        max_message_bytes=settings.grpc_max_message_bytes,
        interceptors=[SharedSecretInterceptor(secret)],
    )
    api.writer.start()  # the tick alert writer; WatchAlerts is the parent's, so no poller here
    server.start()

    def close() -> None:
        server.stop(settings.shutdown_grace_s).wait()
        api.writer.stop()  # queued tick alert changes reach the database before the engine goes
        engine.dispose()

    jobs: dict[str, Callable[..., object]] = {"resync_tick_state": resync, "reload_limits": ReloadLimitsJob(limits)}
    return Built(jobs, {"port": port}, close)
