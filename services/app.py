"""Composition root: builds every real object, starts the listeners and the scheduler, stops them in order."""

from __future__ import annotations

import functools
import logging
import secrets
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType

import grpc
from apscheduler.schedulers.background import BackgroundScheduler
from grpc_health.v1 import health
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs import maintain_partitions, schedule
from jobs.collect import Collection, build_collection
from jobs.reload_limits import ReloadLimitsJob
from services import app_workers, database, metrics, metrics_merge, partitions, runtime, tracing, workers
from services.alert_feed import AlertFeed
from services.config import Settings, secret_from_env
from services.ecosystem import registry
from services.http_api import HttpApi
from services.leases import JobLeases, holder_id
from services.limits_reloader import LimitsReloader
from services.notifications import setup as notifications_setup
from services.rpc.api import RiskApi, acknowledge_with_store, build_api
from services.rpc.relay import TickPathTarget
from services.rpc.server import build_server
from services.shards import AccountShards
from services.tick_alerts import store_persist
from services.workers import RemoteJob, WorkerProcess

log = logging.getLogger(__name__)


def version() -> str:
    try:
        return metadata.version("risk-monitor")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


@dataclass
class Monitor:
    """The running service. ``start()`` brings it up; ``stop()`` takes it down in reverse order."""

    settings: Settings
    engine: Engine | None = None
    sessions: sessionmaker[Session] | None = None
    scheduler: BackgroundScheduler | None = None
    http: HttpApi | None = None
    grpc_server: grpc.Server | None = None
    grpc_health: health.HealthServicer | None = None
    grpc_port: int = 0
    embedded: database.EmbeddedPostgres | None = None
    notifications: notifications_setup.Notifications | None = None
    registration: registry.ServiceRegistration | None = None
    collection: Collection | None = None
    alert_feed: AlertFeed = field(default_factory=AlertFeed)
    limits: LimitsReloader | None = None
    api: RiskApi | None = None
    tracing: tracing.Tracing | None = None
    leases: JobLeases | None = None
    shards: AccountShards | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)  # runtime.workers: name -> process
    _incarnations: metrics_merge.Incarnations = field(default_factory=metrics_merge.Incarnations)
    _target: TickPathTarget | None = None
    _target_lock: threading.Lock = field(default_factory=threading.Lock)
    _ping: database.BoundedPing | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        s = self.settings
        try:
            # First, so every job, venue call and RPC below is traced (off unless an endpoint is set).
            self.tracing = tracing.configure(
                s.tracing_otlp_endpoint,
                service_name=s.tracing_service_name or s.service_name,
                instance=s.service_instance,
                environment=s.service_environment,
                sample_ratio=s.tracing_sample_ratio,
            )
            url = s.database_url
            if s.embedded:
                # The embedded default migrates itself so a newcomer's first command just works;
                # a configured database is migrated as its own step (`risk-monitor db upgrade`).
                self.embedded = database.EmbeddedPostgres(Path(s.embedded_data_dir))
                url = self.embedded.start()
                database.upgrade(url)
            self.engine = database.make_engine(
                url,
                pool_size=s.database_pool_size,
                connect_timeout_s=s.database_connect_timeout_s,
                statement_timeout_s=s.database_statement_timeout_s,
                application_name=f"{s.service_name}:{s.service_instance}",
            )
            database.ping(self.engine)  # fail fast on an unreachable database
            self.sessions = database.session_factory(self.engine)

            self.scheduler = schedule.build_scheduler()
            self._lease_jobs(self.engine)  # --- several replicas (issue 8): one runner per job ---
            schedule.register(self.scheduler, [*self._observability_jobs()], self.leases)

            if s.runtime_workers:
                # --- worker processes (issue 8): the heavy work off this process's GIL ---
                self._start_workers(url)
                self._register_remote_work()
            else:
                # --- collection (issue 3): venue clients, price streams, one job per venue and kind ---
                shards = self.shards
                self.collection = build_collection(s, self.engine, shards=shards.only if shards is not None else None)
                schedule.add_pools(self.scheduler, self.collection.pools)
                self._register_collection(self.collection.jobs, self.collection.per_account)
                self.collection.start()
                if self.leases is not None:
                    # Collection may run on another replica: keep this replica's staleness (the gauge) current
                    # from the runs table, or a replica that leads no collection job reports everything stale.
                    refresh = functools.partial(self.collection.refresh_freshness, self.engine)
                    job = schedule.ScheduledJob(app_workers.REFRESH_STALENESS, refresh, 2.0, exclusive=False)
                    schedule.register(self.scheduler, [job])

                schedule.register(self.scheduler, self._evaluation_jobs(self.engine, self.collection), self.leases)
            # --- history partitions and retention (issue 8): hourly, and once at start ---
            schedule.register(self.scheduler, [self._partition_job()], self.leases)

            self.api = self._grpc_api(self.engine)
            self.grpc_server, self.grpc_health, self.grpc_port = build_server(
                f"{s.grpc_host}:{s.grpc_port}",
                [self.api.registration],
                max_workers=s.grpc_max_workers,
                max_message_bytes=s.grpc_max_message_bytes,
                credentials=self.api.credentials,
                interceptors=self.api.interceptors,
            )
            self.http = HttpApi(
                s.http_host,
                s.http_port,
                service=s.service_name,
                instance=s.service_instance,
                version=version(),
                environment=s.service_environment,
                readiness={
                    "database": self._database_ready,
                    "scheduler": self._scheduler_ready,
                    **({"workers": self._workers_ready} if self.workers else {}),
                },
                details=self._lease_details,
                exposition=metrics_merge.exposition(self._worker_families if self.workers else None),
            )
            self.grpc_server.start()
            self.api.start()
            # Only the scheduler's threads (its loop and job pools): with workers they just dispatch. The
            # gRPC and HTTP threads stay in the normal class, so a query storm never runs ahead of the work.
            realtime = min(s.runtime_scheduler_realtime_priority, 99) if s.runtime_workers else 0
            with runtime.realtime_threads(realtime):
                self.scheduler.start()
            self.http.start()
            self._register_in_ecosystem()
        except BaseException:
            self.stop()
            raise
        metrics.BUILD_INFO.info({"version": version(), "environment": s.service_environment})
        metrics.UP.set(1)
        log.info(
            "risk-monitor serving: HTTP on %s:%d, gRPC on %s:%d, database %s",
            s.http_host,
            self.http.port,
            s.grpc_host,
            self.grpc_port,
            "embedded" if self.embedded else database.safe_url(s.database_url),
            extra={"http_port": self.http.port, "grpc_port": self.grpc_port},
        )

    # --- observability and notifications (issue 6) ---------------------------------------------------

    def _observability_jobs(self) -> list[schedule.ScheduledJob]:
        """Outbox dispatcher and Alertmanager re-send jobs; the outbox gauges read the database at scrape time."""
        s, sessions = self.settings, self.sessions
        assert sessions is not None
        channels = s.notifications_channels
        # Bounded: a scrape must answer while the database hangs (no samples then), not wait for it.
        backlog = database.BoundedRead(
            lambda: notifications_setup.backlog_source(sessions, channels), s.database_connect_timeout_s
        )
        metrics.OUTBOX_BACKLOG.bind(lambda: backlog()[0])
        metrics.OUTBOX_OLDEST_PENDING_AGE.bind(lambda: backlog()[1])
        if not channels:
            return []
        secret = secret_from_env(s.notifications_webhook_secret_env) if "webhook" in channels else ""
        self.notifications = notifications_setup.build(s, sessions, webhook_secret=secret)
        jobs = [
            schedule.ScheduledJob(
                "dispatch_notifications", self.notifications.dispatcher, s.notifications_dispatch_interval_s
            )
        ]
        if self.notifications.resend is not None:
            jobs.append(
                schedule.ScheduledJob(
                    "resend_alertmanager", self.notifications.resend, s.notifications_alertmanager_resend_s
                )
            )
        return jobs

    # --- several replicas (issue 8) -------------------------------------------------------------------

    def _lease_jobs(self, engine: Engine) -> None:
        """Job leases, account shards and their heartbeats, on a pool of their own so busy jobs never delay
        a renewal."""
        s = self.settings
        if not s.leases_enabled or self.scheduler is None:
            return
        holder = holder_id(s.service_instance)
        leases = self.leases = JobLeases(engine, holder, s.leases_ttl_s)
        metrics.JOB_LEADER.bind(lambda: {(job,): 1.0 for job in leases.held()})
        schedule.add_pools(self.scheduler, {"leases": 2})
        renew = schedule.ScheduledJob("renew_leases", leases.renew, s.leases_ttl_s / 3, "leases", exclusive=False)
        schedule.register(self.scheduler, [renew])
        if s.leases_account_shards:
            shards = self.shards = AccountShards(engine, holder, s.leases_account_shards, s.leases_ttl_s)
            metrics.ACCOUNT_SHARDS_HELD.bind(lambda: {(job,): float(len(held)) for job, held in shards.held().items()})

    def _register_collection(self, jobs: list[schedule.ScheduledJob], per_account: set[str]) -> None:
        """Per-account jobs run on every replica over its account shards; the others take a job lease."""
        assert self.scheduler is not None
        shards = self.shards
        if shards is None:
            schedule.register(self.scheduler, jobs, self.leases)
            return
        shards.register(per_account)
        shards.rebalance()  # before the first runs (run_at_start), so a lone replica collects at once
        sharded = [job for job in jobs if job.id in per_account]
        schedule.register(self.scheduler, sharded, shards)  # claim = "holds a shard of the job"
        schedule.register(self.scheduler, [j for j in jobs if j not in sharded], self.leases)
        every_s = self.settings.leases_ttl_s / 3
        rebalance = schedule.ScheduledJob("rebalance_shards", shards.rebalance, every_s, "leases", exclusive=False)
        schedule.register(self.scheduler, [rebalance])

    def _lease_details(self) -> dict[str, object]:
        if self.leases is None:
            return {}
        details: dict[str, object] = {"lease_holder": self.leases.holder, "leads": sorted(self.leases.held())}
        if self.shards is not None:
            details["account_shards"] = {job: sorted(held) for job, held in self.shards.held().items() if held}
        return details

    def _release_leases(self) -> None:
        metrics.JOB_LEADER.bind(None)
        metrics.ACCOUNT_SHARDS_HELD.bind(None)
        if self.shards is not None:
            try:
                self.shards.release()  # the others claim them at their next heartbeat instead of after the TTL
            except Exception:  # the database may be down; the shards then simply expire
                log.warning("could not release account shards; they expire in %.0f s", self.shards.ttl_s, exc_info=True)
        if self.leases is None:
            return
        try:
            self.leases.release()  # the next replica takes over at its next run instead of after the TTL
        except Exception:  # the database may be down; the leases then simply expire
            log.warning("could not release job leases; they expire in %.0f s", self.leases.ttl_s, exc_info=True)

    # --- worker processes (issue 8) ------------------------------------------------------------------

    def _start_workers(self, url: str) -> None:
        """Collection, evaluation and the tick path, each in a process of its own, started side by side."""
        s = self.settings
        child = s.with_overrides(database_url=url)  # never a second embedded database
        timeout = s.runtime_worker_call_timeout_s
        self.workers = {
            "collection": WorkerProcess("collection", app_workers.collection, child, call_timeout_s=timeout),
            "evaluation": WorkerProcess("evaluation", app_workers.evaluation, child, call_timeout_s=timeout),
            "ticks": WorkerProcess(
                "ticks", app_workers.tick_path, child, (secrets.token_urlsafe(32),), call_timeout_s=timeout
            ),
        }
        workers.start_all(self.workers)

    def _register_remote_work(self) -> None:
        """The same jobs as in-process, each run dispatched to its worker."""
        assert self.scheduler is not None
        s, collection, evaluation = self.settings, self.workers["collection"], self.workers["evaluation"]
        specs: list[app_workers.JobSpec] = list(collection.info["jobs"])  # type: ignore[call-overload]
        schedule.add_pools(self.scheduler, dict(collection.info["pools"]))  # type: ignore[call-overload]
        jobs = [
            schedule.ScheduledJob(
                spec.id,
                RemoteJob(collection, spec.id, self._shard_args(spec) if spec.per_account else tuple),
                spec.every_s,
                executor=spec.executor,
                run_at_start=spec.run_at_start,
            )
            for spec in specs
        ]
        self._register_collection(jobs, {spec.id for spec in specs if spec.per_account})
        if self.leases is not None:
            refresh = RemoteJob(collection, app_workers.REFRESH_STALENESS)
            job = schedule.ScheduledJob(app_workers.REFRESH_STALENESS, refresh, 2.0, exclusive=False)
            schedule.register(self.scheduler, [job])
        evaluate = RemoteJob(evaluation, "evaluate", on_result=self._publish_events)
        schedule.register(
            self.scheduler,
            [
                schedule.ScheduledJob(
                    "reload_limits", RemoteJob(evaluation, "reload_limits"), s.limits_reload_interval_s
                ),
                schedule.ScheduledJob("evaluate", evaluate, s.evaluation_interval_s),
            ],
            self.leases,
        )

    def _shard_args(self, spec: app_workers.JobSpec) -> Callable[[], tuple[object, ...]]:
        shards = self.shards
        if shards is None:
            return tuple
        return lambda: (shards.only(spec.id, spec.venue_id),)

    def _publish_events(self, events: object) -> None:
        if isinstance(events, list) and events:
            self.alert_feed.publish(events)  # wakes WatchAlerts streams right after the worker's commit

    def _tick_path_target(self) -> TickPathTarget:
        """The tick worker's port; asking starts it again if it died (its state is re-seeded at start)."""
        ticks = self.workers["ticks"]
        ticks.start()
        port, secret = int(ticks.info["port"]), str(ticks.args[0])  # type: ignore[call-overload]
        with self._target_lock:
            if self._target is None or self._target.port != port:
                if self._target is not None:
                    self._target.close()
                self._target = TickPathTarget(port, secret)
            return self._target

    def _workers_ready(self) -> str | None:
        down = sorted(name for name, worker in self.workers.items() if not worker.alive)
        return f"worker {', '.join(down)} not running" if down else None

    def _worker_families(self) -> list[list[metrics_merge.Rendered]]:
        sources: list[list[metrics_merge.Rendered]] = []
        for name, worker in self.workers.items():
            sources.extend(self._incarnations.sources(name, worker.families(timeout_s=2.0)))
        return sources

    def _stop_work(self) -> None:
        """Collection and evaluation, after the scheduler stopped (its last runs finished)."""
        self._stop_workers("collection", "evaluation")
        if self.collection is not None:
            self.collection.close()  # streams and sessions go before the engine they write through

    def _stop_workers(self, *names: str) -> None:
        for name in names:
            worker = self.workers.get(name)
            if worker is not None:
                worker.stop(self.settings.shutdown_grace_s + 30.0)

    # --- history partitions and retention (issue 8) -------------------------------------------------

    def _partition_job(self) -> schedule.ScheduledJob:
        s = self.settings
        assert self.engine is not None
        policy = partitions.RetentionPolicy(
            precreate_days=s.retention_precreate_days,
            snapshots_days=s.retention_snapshots_days,
            collection_runs_days=s.retention_collection_runs_days,
            rejected_records_days=s.retention_rejected_records_days,
            evaluations_days=s.retention_evaluations_days,
            account_risk_history_days=s.retention_account_risk_history_days,
            delivered_notifications_days=s.retention_delivered_notifications_days,
        )
        job = maintain_partitions.MaintainPartitions(self.engine, policy, clock=lambda: datetime.now(UTC))
        return schedule.ScheduledJob(
            maintain_partitions.JOB_ID, job, s.retention_maintenance_interval_s, run_at_start=True
        )

    def _register_in_ecosystem(self) -> None:
        s = self.settings
        if not s.registry_enabled or self.http is None:
            return
        document = registry.registration_document(
            name=s.service_name,
            instance_id=s.service_instance,
            host=registry.advertised_host(s.http_host, s.registry_advertise_host, s.registry_redis_url),
            http_port=self.http.port,
            grpc_port=self.grpc_port,
            version=version(),
            started_at=datetime.now(UTC),
        )
        self.registration = registry.ServiceRegistration(
            registry.connect(s.registry_redis_url),
            s.service_name,
            document,
            ttl_s=s.registry_ttl_s,
            heartbeat_s=s.registry_heartbeat_s,
        )
        self.registration.start()

    def _stop_observability(self) -> None:
        if self.registration is not None:
            self.registration.stop()  # deregister first: nobody should route to a stopping instance
        for gauge in (metrics.OUTBOX_BACKLOG, metrics.OUTBOX_OLDEST_PENDING_AGE):
            gauge.bind(None)

    # --- evaluation (issue 4) ----------------------------------------------------------------------------
    def _evaluation_jobs(self, engine: Engine, collection: Collection) -> list[schedule.ScheduledJob]:
        """Limits reload + the scheduled evaluation. Limits are loaded once before the first evaluation."""
        s = self.settings
        self.limits = LimitsReloader(engine, s.limits_file, clock=_utcnow)
        self.limits.reload()
        # With leases collection may run on another replica: read freshness from collection_runs then.
        freshness = None if self.leases is not None else collection.tracker.freshness
        evaluate = app_workers.evaluate_job(
            s, engine, self.limits, publish=self.alert_feed.publish, freshness=freshness
        )
        return [
            schedule.ScheduledJob("reload_limits", ReloadLimitsJob(self.limits), s.limits_reload_interval_s),
            schedule.ScheduledJob("evaluate", evaluate, s.evaluation_interval_s),
        ]

    # --- gRPC API (issue 5) ------------------------------------------------------------------------------
    def _grpc_api(self, engine: Engine) -> RiskApi:
        """The API over the alert store; StreamTicks' in-memory state is seeded from the latest snapshots
        and re-seeded every ``grpc.tick_state_resync_s``."""
        assert self.scheduler is not None
        s = self.settings
        if self.workers:
            return self._relaying_api(engine)
        assert self.limits is not None
        # Same rule as the evaluation: with leases, collection may run on another replica.
        tracker = self.collection.tracker if self.collection is not None else None
        freshness = tracker.freshness if tracker is not None and self.leases is None else None
        api, resync = app_workers.tick_api(s, engine, self.limits, freshness=freshness, feed=self.alert_feed)
        every_s = s.grpc_tick_state_resync_s
        schedule.register(self.scheduler, [schedule.ScheduledJob("resync_tick_state", resync, every_s)])
        return api

    def _relaying_api(self, engine: Engine) -> RiskApi:
        """With workers: queries and WatchAlerts here, the tick path relayed to its worker."""
        assert self.scheduler is not None
        s, ticks = self.settings, self.workers["ticks"]

        def channels() -> tuple[str, ...]:
            return s.notifications_channels

        api = build_api(
            s,
            engine,
            book=None,
            limits=(),
            acknowledge=acknowledge_with_store(engine, channels=channels, feed=self.alert_feed),
            persist=store_persist(engine, {}, channels=channels, publish=self.alert_feed.publish),
            feed=self.alert_feed,
            relay=self._tick_path_target,
        )
        every_s = s.grpc_tick_state_resync_s
        jobs = [
            schedule.ScheduledJob("resync_tick_state", RemoteJob(ticks, "resync_tick_state"), every_s),
            # Every replica's tick path follows the limits file (not only the lease holder's).
            schedule.ScheduledJob(
                "reload_tick_limits", RemoteJob(ticks, "reload_limits"), s.limits_reload_interval_s, exclusive=False
            ),
        ]
        schedule.register(self.scheduler, jobs, self.leases)
        return api

    def _database_ready(self) -> str | None:
        if self._ping is None:
            assert self.engine is not None
            self._ping = database.BoundedPing(self.engine, self.settings.database_connect_timeout_s)
        return self._ping()

    def _scheduler_ready(self) -> str | None:
        return None if self.scheduler is not None and self.scheduler.running else "scheduler not running"

    def stop(self) -> None:
        """Stop in reverse order of dependency. Safe to call twice or after a failed start."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        metrics.UP.set(0)
        self._stop_observability()
        if self.grpc_health is not None:
            self.grpc_health.enter_graceful_shutdown()  # tell load balancers first
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)  # a running job finishes its transaction
        self._release_leases()
        self._stop_work()
        self.alert_feed.close_all()  # end open alert streams before the gRPC server stops
        if self.api is not None:
            self.api.close_streams()  # WatchAlerts streams end with OK
        if self.grpc_server is not None:
            self.grpc_server.stop(self.settings.shutdown_grace_s).wait()
        if self.api is not None:
            self.api.flush()  # tick-path alert changes reach the database before it goes away
        self._stop_workers("ticks")  # after the relaying server: its streams needed it; it flushes its writer
        if self._target is not None:
            self._target.close()
        if self.http is not None:
            self.http.stop()
        if self.notifications is not None:
            self.notifications.close()
        if self.engine is not None:
            self.engine.dispose()
        if self.embedded is not None:
            self.embedded.stop()
        tracing.shutdown(self.tracing)  # last: exports the spans of the final job runs and RPCs
        if self.http is not None:
            log.info("risk-monitor stopped")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop everything in order."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runtime.tune(
        switch_interval_ms=settings.runtime_switch_interval_ms, gc_gen0_threshold=settings.runtime_gc_gen0_threshold
    )
    monitor = Monitor(settings)
    monitor.start()
    runtime.freeze()  # what start-up built lives as long as the process: never traverse it again
    try:
        stop.wait()
    finally:
        monitor.stop()
