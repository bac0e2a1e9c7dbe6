"""Collection use cases: fetch from one venue, validate, map records to snapshot rows, write one batch.

Every run ends in exactly one ``collection_runs`` row: ``succeeded``; ``partial`` (records rejected,
or some accounts failed: the error names them, the others are written); or ``failed`` (nothing
written: the venue is down, its breaker is open, the account list was unusable). One account's
failure never stops the others, and a failed account keeps its previous snapshot as its latest; so does
an account whose every record was rejected (an empty snapshot would read as a flat account). Accounts
are read one request each, or ``batch`` per request from the venue's batched endpoints; either way a
failure costs only the accounts it concerns. The mapping from records to rows is in
``services.collection_rows`` (pure functions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from models.payloads import (
    AccountRecord,
    BalanceRecord,
    BatchResult,
    CustodyBalanceRecord,
    MalformedResponse,
    ParseResult,
    PositionRecord,
)
from services import metrics
from services.collection_rows import (
    balance_rows,
    custody_rows,
    failure_summary,
    position_rows,
    price_rows,
    rejections,
    settlement_upserts,
    stale_symbols,
)
from services.logs import log_context
from services.snapshot_store import AccountSnapshot, Rejection, RunRecord, SnapshotStore
from services.staleness import RUN_KINDS, StalenessTracker
from services.venues.fan_out import sequential
from services.venues.http import VENUE_ERRORS, CustodianClient, ExchangeClient, VenueUnavailable
from services.venues.market_data import MarketDataClient, UnknownSymbol

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one collection run did (the ``collection_runs`` row, plus what the job publishes)."""

    job: str
    venue_id: str
    kind: str  # the run kind: positions, balances, custody_balances, settlements, prices
    status: str  # succeeded | partial | failed
    finished_at: datetime
    accepted: int = 0
    rejected: int = 0
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Everything the run asked for arrived (rejected records aside): the data counts as fresh."""
        return self.status != "failed" and self.error is None


# --- use cases --------------------------------------------------------------------------------------

T = TypeVar("T")
Built = tuple[AccountSnapshot, list[Rejection]]  # one account's snapshot and its rejected records


@dataclass(frozen=True, slots=True)
class Fetch(Generic[T]):
    """How one kind of run reads its accounts: one request per account, or one per chunk of accounts.

    ``one`` and ``many`` return the venue's parsed payloads; ``build`` maps one account's payload to its
    snapshot (pure). ``many`` is used when the venue is configured with a ``batch`` size.
    """

    one: Callable[[str], T]
    many: Callable[[Sequence[str]], BatchResult[T]]
    build: Callable[[str, int, T], Built]


def _failed(store: SnapshotStore, run: RunRecord, rejected: Sequence[Rejection] = ()) -> RunOutcome:
    log.warning("collection %s failed: %s", run.job, run.error)
    store.record_failed_run(run, rejected)
    return RunOutcome(
        run.job, run.venue_id, run.kind, "failed", run.finished_at, rejected=len(rejected), error=run.error
    )


_AccountResult = tuple[AccountSnapshot | None, list[Rejection], str | None]  # snapshot, rejected, failure
# Runs one call per item and returns the results in order (services.venues.fan_out.FanOut.map).
FanOutMap = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
# Narrows the listed accounts to those this replica collects (its account shards); None: all of them.
AccountFilter = Callable[[Sequence[str]], list[str]]


def _per_account(
    store: SnapshotStore,
    *,
    job: str,
    venue_id: str,
    kind: str,
    clock: Clock,
    list_accounts: Callable[[], ParseResult[AccountRecord]],
    fetch: Fetch[Any],
    batch: int = 0,
    fan_out: FanOutMap = sequential,
    only: AccountFilter | None = None,
) -> RunOutcome:
    started = clock()
    try:
        listed = list_accounts()
    except VENUE_ERRORS as exc:
        return _failed(store, RunRecord(job, venue_id, kind, started, clock(), error=f"accounts: {exc}"))
    rejected = rejections(listed.rejected, "accounts: ")
    external = list(dict.fromkeys(a.account_id for a in listed.accepted))  # listed twice: collected once
    if only is not None:
        external = only(external)
    ids = store.account_ids(venue_id, external)

    def build(account: str, payload: Any) -> _AccountResult:
        with log_context(account=account):
            try:
                snapshot, bad = fetch.build(account, ids[account], payload)
            except Exception as exc:  # one account's surprise must not cost the others their snapshot
                log.exception("collecting %s of %s failed unexpectedly", kind, venue_id)
                return None, [], f"{type(exc).__name__}: {exc}"
        return snapshot, bad, None

    def guarded(call: Callable[[], T]) -> tuple[T | None, str | None]:
        """The call's result, or why it failed: a venue error, or a surprise (logged with its traceback)."""
        try:
            return call(), None
        except VENUE_ERRORS as exc:
            return None, str(exc)
        except Exception as exc:
            log.exception("collecting %s of %s failed unexpectedly", kind, venue_id)
            return None, f"{type(exc).__name__}: {exc}"

    def one(account: str) -> tuple[list[_AccountResult], list[Rejection]]:
        with log_context(account=account):
            payload, failure = guarded(lambda: fetch.one(account))
        return [build(account, payload) if failure is None else (None, [], failure)], []

    def many(chunk: Sequence[str]) -> tuple[list[_AccountResult], list[Rejection]]:
        # A failed request fails its chunk's accounts only; a failed entry only its account.
        got, failure = guarded(lambda: fetch.many(chunk))
        if got is None:
            return [(None, [], failure)] * len(chunk), []
        results = [
            build(a, got.results[a]) if a in got.results else (None, [], got.failures.get(a, "no snapshot"))
            for a in chunk
        ]
        return results, rejections(got.rejected, "batch: ")

    if batch > 0:
        chunks: list[Sequence[str]] = [external[i : i + batch] for i in range(0, len(external), batch)]
        done = fan_out(many, chunks)
    else:
        chunks, done = [[a] for a in external], fan_out(one, external)
    # Concurrent requests, but one batch: the snapshots are still written in one transaction below.
    snapshots, failures = _gather(chunks, done, rejected)
    error = failure_summary(failures, len(external))
    if failures and not snapshots:
        return _failed(store, RunRecord(job, venue_id, kind, started, clock(), error=error), rejected)
    run = RunRecord(job, venue_id, kind, started, clock(), error=error)
    result = store.write_snapshots(run, started, snapshots, rejected)
    return RunOutcome(job, venue_id, kind, result.status, run.finished_at, result.accepted, result.rejected, error)


def _gather(
    chunks: Sequence[Sequence[str]],
    done: Sequence[tuple[list[_AccountResult], list[Rejection]]],
    rejected: list[Rejection],
) -> tuple[list[AccountSnapshot], dict[str, str]]:
    """The accounts' snapshots and failures, in account order; every rejected record goes to ``rejected``."""
    snapshots: list[AccountSnapshot] = []
    failures: dict[str, str] = {}
    for chunk, (results, stray) in zip(chunks, done, strict=True):
        rejected.extend(stray)
        for account, (snapshot, bad, failure) in zip(chunk, results, strict=True):
            if snapshot is None:
                failures[account] = failure or "no snapshot"
                continue
            rejected.extend(bad)
            if bad and not snapshot.rows:
                # Every record the venue sent was refused: an empty snapshot would read as a flat account
                # (no exposure). The account keeps its previous snapshot and the run says why.
                failures[account] = f"all {len(bad)} records rejected"
                continue
            snapshots.append(snapshot)
    return snapshots, failures


def _exchange_fetch(client: ExchangeClient, kind: str, clock: Clock) -> Fetch[Any]:
    def positions(account: str, account_id: int, result: ParseResult[PositionRecord]) -> Built:
        rows, dupes = position_rows(result.accepted)
        bad = rejections(result.rejected, f"{account}: ") + dupes
        return AccountSnapshot(account_id, result.as_of or clock(), rows), bad

    def balances(account: str, account_id: int, result: ParseResult[BalanceRecord]) -> Built:
        observed_at = result.as_of or clock()
        rows, dupes = balance_rows(result.accepted, observed_at)
        return AccountSnapshot(account_id, observed_at, rows), rejections(result.rejected, f"{account}: ") + dupes

    if kind == "positions":
        return Fetch(client.positions, client.positions_batch, positions)
    if kind == "balances":
        return Fetch(client.balances, client.balances_batch, balances)
    raise ValueError(f"unknown exchange run kind {kind!r}")


def collect_exchange(
    client: ExchangeClient,
    store: SnapshotStore,
    *,
    venue_id: str,
    kind: str,
    job: str,
    clock: Clock = utc_now,
    batch: int = 0,
    fan_out: FanOutMap = sequential,
    only: AccountFilter | None = None,
) -> RunOutcome:
    """One run of ``positions`` or ``balances`` over every account the exchange lists.

    ``batch`` > 0 asks for that many accounts per request (the venue's batched endpoints); 0 asks per account.
    """
    return _per_account(
        store,
        job=job,
        venue_id=venue_id,
        kind=kind,
        clock=clock,
        list_accounts=client.accounts,
        fetch=_exchange_fetch(client, kind, clock),
        batch=batch,
        fan_out=fan_out,
        only=only,
    )


_Custody = tuple[ParseResult[CustodyBalanceRecord], ParseResult[CustodyBalanceRecord]]  # master, segregated


def _custody_fetch(
    client: CustodianClient, store: SnapshotStore, exchanges: Sequence[str], clock: Clock
) -> Fetch[_Custody]:
    def one(client_id: str) -> _Custody:
        return client.master_balance(client_id), client.segregated_balances(client_id)

    def many(client_ids: Sequence[str]) -> BatchResult[_Custody]:
        master = client.master_balances(client_ids)
        segregated = client.segregated_balances_batch(client_ids)
        both = {c: (master.results[c], segregated.results[c]) for c in master.results if c in segregated.results}
        failures = {**segregated.failures, **master.failures}  # both halves or neither, as in `one`
        return BatchResult(both, failures, master.rejected + segregated.rejected)

    def build(client_id: str, account_id: int, payload: _Custody) -> Built:
        # Both halves or neither: a snapshot without its master rows would read as an emptied account.
        master, segregated = payload
        by_venue: dict[str, list[str]] = {}
        for r in segregated.accepted:
            if r.venue is not None and r.venue in exchanges and r.account_id is not None:
                by_venue.setdefault(r.venue, []).append(r.account_id)
        held = {
            (venue, external): internal
            for venue, externals in by_venue.items()
            for external, internal in store.account_ids(venue, externals).items()
        }
        rows, bad = custody_rows(master.accepted, master.as_of or clock(), master_account=account_id, held_accounts={})
        seg_rows, seg_bad = custody_rows(
            segregated.accepted, segregated.as_of or clock(), master_account=account_id, held_accounts=held
        )
        observed = min(t for t in (master.as_of, segregated.as_of, clock()) if t is not None)
        bad += (
            seg_bad + rejections(master.rejected, f"{client_id}: ") + rejections(segregated.rejected, f"{client_id}: ")
        )
        return AccountSnapshot(account_id, observed, rows + seg_rows), bad

    return Fetch(one, many, build)


def collect_custody(
    client: CustodianClient,
    store: SnapshotStore,
    *,
    venue_id: str,
    exchanges: Sequence[str],
    job: str,
    clock: Clock = utc_now,
    batch: int = 0,
    fan_out: FanOutMap = sequential,
    only: AccountFilter | None = None,
) -> RunOutcome:
    """One run of master + segregated balances for every client account of the custodian."""
    return _per_account(
        store,
        job=job,
        venue_id=venue_id,
        kind="custody_balances",
        clock=clock,
        list_accounts=client.accounts,
        fetch=_custody_fetch(client, store, exchanges, clock),
        batch=batch,
        fan_out=fan_out,
        only=only,
    )


def collect_settlements(
    client: CustodianClient,
    store: SnapshotStore,
    *,
    venue_id: str,
    exchanges: Sequence[str],
    job: str,
    clock: Clock = utc_now,
) -> RunOutcome:
    """Upsert the custodian's pending settlements; those it stopped listing become CLEARED."""
    started = clock()
    try:
        result = client.pending_settlements()
    except VENUE_ERRORS as exc:
        return _failed(store, RunRecord(job, venue_id, "settlements", started, clock(), error=f"settlements: {exc}"))
    accounts = store.find_accounts(exchanges, [r.account_id for r in result.accepted])
    upserts, unresolved = settlement_upserts(result.accepted, accounts)
    # Listed but not accepted is still pending: never clear those.
    upserted = {u.settlement_id for u in upserts}
    still_listed = [r.settlement_id for r in result.accepted if r.settlement_id not in upserted]
    still_listed += [
        r.raw["settlement_id"]
        for r in result.rejected
        if isinstance(r.raw, dict) and isinstance(r.raw.get("settlement_id"), str)
    ]
    bad = rejections(result.rejected) + unresolved
    run = RunRecord(job, venue_id, "settlements", started, clock())
    written = store.write_settlements(run, started, upserts, bad, still_reported=still_listed)
    return RunOutcome(job, venue_id, "settlements", written.status, run.finished_at, written.accepted, written.rejected)


def collect_prices(
    market: MarketDataClient,
    store: SnapshotStore,
    *,
    venue_id: str,
    symbols: Sequence[str],
    refresh_after: timedelta,
    job: str,
    clock: Clock = utc_now,
) -> RunOutcome:
    """Snapshot the streamed price cache; poll ``GetPrice`` for symbols the stream left quiet."""
    started = clock()
    wanted = list(symbols) or sorted(market.snapshot())
    if not wanted:
        return _failed(store, RunRecord(job, venue_id, "prices", started, clock(), error="no price streamed yet"))
    failures: dict[str, str] = {}
    stale = stale_symbols(wanted, market.received(), now=started, max_age=refresh_after)
    for n, symbol in enumerate(stale):
        try:
            market.get_price(symbol)
        except (UnknownSymbol, MalformedResponse) as exc:
            failures[symbol] = str(exc)
        except VenueUnavailable as exc:
            # Down or slow: every other symbol would wait out the same deadline. Try again next run.
            failures.update({s: str(exc) for s in stale[n:]})
            break
    cached = market.snapshot()
    fresh = [cached[s] for s in wanted if s in cached and s not in failures]
    error = failure_summary(failures, len(wanted), "symbols")
    if not fresh:
        return _failed(store, RunRecord(job, venue_id, "prices", started, clock(), error=error))
    bad = [Rejection(raw, reason) for raw, reason in market.drain_rejections()]
    run = RunRecord(job, venue_id, "prices", started, clock(), error=error)
    written = store.write_prices(run, started, price_rows(fresh), bad)
    return RunOutcome(
        job, venue_id, "prices", written.status, run.finished_at, written.accepted, written.rejected, error
    )


def publish(outcome: RunOutcome, tracker: StalenessTracker) -> None:
    """Count the run and, when it collected everything it asked for, move the venue's freshness."""
    kind = RUN_KINDS.get(outcome.kind, outcome.kind)
    metrics.COLLECTION_RUNS.labels(outcome.venue_id, kind, outcome.status).inc()
    metrics.COLLECTION_RECORDS.labels(outcome.venue_id, kind, "accepted").inc(outcome.accepted)
    metrics.COLLECTION_RECORDS.labels(outcome.venue_id, kind, "rejected").inc(outcome.rejected)
    if outcome.complete:
        tracker.record(outcome.venue_id, kind, outcome.finished_at)
