"""Collection jobs: one small callable per venue and data kind, and ``build_collection`` to make them all.

Job ids are stable: ``collect.positions.<venue>``, ``collect.balances.<venue>`` (exchanges),
``collect.custody.<venue>``, ``collect.settlements.<venue>`` (custodians), ``collect.prices.<venue>``
(market data). Each job runs its use case from ``services.collection`` and publishes the outcome
(run metrics, staleness); a run never raises for a venue problem, it records a failed run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

from sqlalchemy import Engine

from jobs.schedule import ScheduledJob
from services import collection, metrics
from services.book_loader import freshness_from_runs
from services.collection import AccountFilter, Clock, FanOutMap, RunOutcome, utc_now
from services.config import Settings
from services.snapshot_store import SnapshotStore
from services.staleness import BALANCES, CUSTODY, POSITIONS, PRICES, SETTLEMENTS, StalenessTracker
from services.venue_settings import VenueSettings
from services.venues.breaker import BreakerState
from services.venues.fan_out import FanOut, sequential
from services.venues.http import CustodianClient, ExchangeClient, HttpPolicy
from services.venues.market_data import MarketDataClient

# (job id, venue id) -> the accounts of this replica's shards among those listed; None: every account.
ShardFilter = Callable[[str, str], AccountFilter | None]


def _only(shards: ShardFilter | None, job: str, venue: str) -> AccountFilter | None:
    return None if shards is None else shards(job, venue)


@dataclass(frozen=True)
class CollectPositions:
    """``collect.positions.<venue>``: every account's positions, one batch per run."""

    kind: ClassVar[str] = POSITIONS
    venue_id: str
    client: ExchangeClient
    store: SnapshotStore
    tracker: StalenessTracker
    clock: Clock = utc_now
    fan_out: FanOutMap = sequential  # the venue's request pool
    batch: int = 0  # accounts per request (the venue's batched endpoints); 0: one request per account
    shards: ShardFilter | None = None  # several replicas: only the accounts of the shards this one holds

    @property
    def id(self) -> str:
        return f"collect.{self.kind}.{self.venue_id}"

    def __call__(self) -> RunOutcome:
        outcome = collection.collect_exchange(
            self.client,
            self.store,
            venue_id=self.venue_id,
            kind=self.kind,
            job=self.id,
            clock=self.clock,
            batch=self.batch,
            fan_out=self.fan_out,
            only=_only(self.shards, self.id, self.venue_id),
        )
        collection.publish(outcome, self.tracker)
        return outcome


@dataclass(frozen=True)
class CollectBalances(CollectPositions):
    """``collect.balances.<venue>``: every account's balances, one batch per run."""

    kind: ClassVar[str] = BALANCES


@dataclass(frozen=True)
class CollectCustody:
    """``collect.custody.<venue>``: master and segregated balances of every client account."""

    venue_id: str
    client: CustodianClient
    store: SnapshotStore
    tracker: StalenessTracker
    exchanges: tuple[str, ...]  # venue ids segregated balances may refer to
    clock: Clock = utc_now
    fan_out: FanOutMap = sequential
    batch: int = 0
    shards: ShardFilter | None = None

    @property
    def id(self) -> str:
        return f"collect.{CUSTODY}.{self.venue_id}"

    def __call__(self) -> RunOutcome:
        outcome = collection.collect_custody(
            self.client,
            self.store,
            venue_id=self.venue_id,
            exchanges=self.exchanges,
            job=self.id,
            clock=self.clock,
            batch=self.batch,
            fan_out=self.fan_out,
            only=_only(self.shards, self.id, self.venue_id),
        )
        collection.publish(outcome, self.tracker)
        return outcome


@dataclass(frozen=True)
class CollectSettlements:
    """``collect.settlements.<venue>``: pending settlements upserted; no-longer-pending ones CLEARED."""

    venue_id: str
    client: CustodianClient
    store: SnapshotStore
    tracker: StalenessTracker
    exchanges: tuple[str, ...]  # where the accounts settlements name are looked up
    clock: Clock = utc_now

    @property
    def id(self) -> str:
        return f"collect.{SETTLEMENTS}.{self.venue_id}"

    def __call__(self) -> RunOutcome:
        outcome = collection.collect_settlements(
            self.client, self.store, venue_id=self.venue_id, exchanges=self.exchanges, job=self.id, clock=self.clock
        )
        collection.publish(outcome, self.tracker)
        return outcome


@dataclass(frozen=True)
class CollectPrices:
    """``collect.prices.<venue>``: snapshot the streamed price cache, polling symbols the stream left quiet."""

    venue_id: str
    market: MarketDataClient
    store: SnapshotStore
    tracker: StalenessTracker
    refresh_after: timedelta  # a symbol not streamed for this long is polled with GetPrice
    symbols: tuple[str, ...] = ()  # empty: whatever the stream has delivered
    clock: Clock = utc_now

    @property
    def id(self) -> str:
        return f"collect.{PRICES}.{self.venue_id}"

    def __call__(self) -> RunOutcome:
        outcome = collection.collect_prices(
            self.market,
            self.store,
            venue_id=self.venue_id,
            symbols=self.symbols,
            refresh_after=self.refresh_after,
            job=self.id,
            clock=self.clock,
        )
        collection.publish(outcome, self.tracker)
        return outcome


# --- building every job from the settings ------------------------------------------------------------

_BREAKER_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


@dataclass
class Collection:
    """Every collection job with what it needs started and closed around it (the composition root's part)."""

    tracker: StalenessTracker
    jobs: list[ScheduledJob] = field(default_factory=list)
    # Bulkheads: one thread pool per venue (alias -> threads). APScheduler runs each job in its
    # executor's pool; with one shared pool, a venue that hangs until its timeouts holds threads every
    # run and the other venues' jobs queue behind it. A pool per venue caps what a slow venue can hold
    # at its own threads, and max_instances=1 keeps its runs from piling up inside it.
    pools: dict[str, int] = field(default_factory=dict)
    http_clients: list[tuple[str, ExchangeClient | CustodianClient]] = field(default_factory=list)
    market_data: list[MarketDataClient] = field(default_factory=list)
    # Request bulkheads: per venue, the threads a run's per-account requests fan out over.
    fan_outs: list[FanOut] = field(default_factory=list)
    # Per-account jobs (positions, balances, custody): with account shards they run on every replica, each
    # over its own shards' accounts; the others (settlements, prices) keep one runner per job.
    per_account: set[str] = field(default_factory=set)

    def start(self) -> None:
        """Start the price streams and attach the scrape-time gauges."""
        for market in self.market_data:
            market.start()
        metrics.DATA_STALENESS.bind(self._staleness)
        metrics.CIRCUIT_BREAKER_STATE.bind(self._breakers)

    def close(self) -> None:
        """Stop streams and close sessions. Call after the scheduler stopped, before the engine goes."""
        metrics.DATA_STALENESS.bind(None)
        metrics.CIRCUIT_BREAKER_STATE.bind(None)
        for market in self.market_data:
            market.stop()
        for fan_out in self.fan_outs:
            fan_out.close()
        for _venue, client in self.http_clients:
            client.close()

    def refresh_freshness(self, engine: Engine) -> None:
        """Merge the newest good run per venue and kind from ``collection_runs`` into the tracker: with
        leases, another replica may collect, and this one's staleness gauge must still be current."""
        with engine.connect() as conn:
            self.tracker.merge(freshness_from_runs(conn))

    def _staleness(self) -> dict[tuple[str, ...], float]:
        return {tuple(key): age for key, age in self.tracker.ages(utc_now()).items()}

    def _breakers(self) -> dict[tuple[str, ...], float]:
        # Each job has its own client (a requests.Session is not thread-safe); report the worst breaker.
        worst: dict[tuple[str, ...], float] = {}
        for venue, client in self.http_clients:
            for endpoint, state in client.breaker_states().items():
                key = (venue, endpoint)
                worst[key] = max(worst.get(key, 0.0), _BREAKER_VALUE[state])
        return worst


def _policy(settings: Settings, venue: VenueSettings) -> HttpPolicy:
    return HttpPolicy(
        connect_timeout=venue.connect_timeout_s or settings.collection_connect_timeout_s,
        read_timeout=venue.read_timeout_s or settings.collection_read_timeout_s,
        max_skew=timedelta(seconds=settings.collection_max_skew_s),
        connections=_concurrency(settings, venue),
    )


def _concurrency(settings: Settings, venue: VenueSettings) -> int:
    return venue.concurrency or settings.collection_concurrency


def build_collection(
    settings: Settings, engine: Engine, *, clock: Clock = utc_now, shards: ShardFilter | None = None
) -> Collection:
    """Clients, store, tracker and one job per venue and kind, from ``settings.venues``.

    With ``shards``, per-account runs cover only the accounts of the shards this replica holds."""
    s = settings
    store = SnapshotStore(engine)
    for venue in s.venues:
        store.ensure_venue(venue.id, venue.kind, venue.address)
    tracker = StalenessTracker.from_runs(store.last_good_runs())
    built = Collection(tracker)
    exchanges = tuple(v.id for v in s.venues if v.kind == "exchange")

    def schedule(job: CollectPositions | CollectCustody | CollectSettlements | CollectPrices, every_s: float) -> None:
        built.jobs.append(ScheduledJob(job.id, job, every_s, executor=f"venue:{job.venue_id}", run_at_start=True))

    for v in s.venues:
        built.pools[f"venue:{v.id}"] = s.collection_workers
        policy = _policy(s, v)
        if v.kind in ("exchange", "custodian"):
            # Shared by the venue's jobs: the venue sees at most this many of our requests at once.
            fan_out = FanOut(v.id, _concurrency(s, v))
            built.fan_outs.append(fan_out)
        if v.kind == "exchange":
            # One client per job, so breakers and pools stay per job as before; each is thread-safe.
            positions = ExchangeClient(v.url, name=v.id, api_key=v.api_key or None, policy=policy)
            balances = ExchangeClient(v.url, name=v.id, api_key=v.api_key or None, policy=policy)
            built.http_clients += [(v.id, positions), (v.id, balances)]
            jobs = (
                CollectPositions(v.id, positions, store, tracker, clock, fan_out.map, v.batch or 0, shards),
                CollectBalances(v.id, balances, store, tracker, clock, fan_out.map, v.batch or 0, shards),
            )
            schedule(jobs[0], s.collection_positions_interval_s)
            schedule(jobs[1], s.collection_balances_interval_s)
            built.per_account.update(job.id for job in jobs)
            tracker.expect(v.id, POSITIONS)
            tracker.expect(v.id, BALANCES)
        elif v.kind == "custodian":
            custody = CustodianClient(v.url, name=v.id, api_key=v.api_key or None, policy=policy)
            settlements = CustodianClient(v.url, name=v.id, api_key=v.api_key or None, policy=policy)
            built.http_clients += [(v.id, custody), (v.id, settlements)]
            custody_job = CollectCustody(
                v.id, custody, store, tracker, exchanges, clock, fan_out.map, v.batch or 0, shards
            )
            schedule(custody_job, s.collection_balances_interval_s)
            built.per_account.add(custody_job.id)
            schedule(
                CollectSettlements(v.id, settlements, store, tracker, exchanges, clock),
                s.collection_settlements_interval_s,
            )
            tracker.expect(v.id, CUSTODY)
            tracker.expect(v.id, SETTLEMENTS)
        else:
            market = MarketDataClient(
                v.target,
                v.symbols,
                get_price_timeout=policy.read_timeout,
                max_skew=policy.max_skew,
                clock=clock,
                name=v.id,
            )
            built.market_data.append(market)
            refresh = timedelta(seconds=s.collection_prices_interval_s * s.collection_price_refresh_intervals)
            schedule(
                CollectPrices(v.id, market, store, tracker, refresh, v.symbols, clock), s.collection_prices_interval_s
            )
            tracker.expect(v.id, PRICES)
    return built
