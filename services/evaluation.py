"""The evaluation use case: read the book, evaluate the limits, persist everything the pass decided.

Two transactions, on purpose: the book is read in one REPEATABLE READ read-only transaction (one
consistent picture of the snapshots, see services/book_loader.py), and everything the pass decides is
written in ONE read-write transaction: the ``evaluations`` row, changed P&L marks, compliance status and
history, per-account risk history (bounded rate), and the alert transitions with their events and outbox
rows. A crash before commit loses nothing committed; the next pass recomputes from the same inputs.
Writing inside the snapshot transaction instead would turn every race with the tick path on ``alerts``
into a serialization failure of the whole pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from models.risk import Check, Evaluation, Level, Limit, daily_pnl, drawdown, evaluate, resolve_absent, step
from models.risk.alerts import Alert, AlertEvent, Severity, Transition
from models.risk.exposure import delta_by_asset
from services import metrics, risk_signals
from services.alert_records import StoredEvent, active_alerts_with_types
from services.alert_store import CHAIN_LOCK, AlertContext, apply_transitions
from services.book_loader import BookCache, FreshnessSource, LoadedBook, load_book
from services.raw_rows import copy_rows, fetch_all
from services.tick_alerts import ACTOR as TICKS_ACTOR

log = logging.getLogger(__name__)

ACTOR = "system:evaluation"
FIRM = "firm"  # the firm-wide scope key of models.risk
ZERO = Decimal(0)
_STATUS = {Level.OK: "compliant", Level.WARN: "warning", Level.CRITICAL: "breach"}
_RANK = {Level.OK: 0, Level.WARN: 1, Level.CRITICAL: 2}
_SEVERITY = {Level.WARN: Severity.WARNING, Level.CRITICAL: Severity.CRITICAL}
# Taken by every writer of compliance_status (evaluation passes, which may briefly overlap across replicas
# around a lease handover): the cached statuses' token is read under it.
COMPLIANCE_LOCK = 0x636F6D706C69  # "compli"
_HISTORY_COLUMNS = (
    "account_id",
    "recorded_at",
    "evaluation_id",
    "gross",
    "net",
    "equity",
    "leverage",
    "unrealized_pnl",
    "daily_pnl",
    "drawdown",
)
_HISTORY_TYPES = ("int4", "timestamptz", "int8", *(["numeric"] * 7))


@dataclass
class HistoryState:
    """Per-account risk history at a bounded rate: every ``every_s`` at most, and only accounts whose
    figures changed since their last row (in this process; after a restart the first sample writes all)."""

    every_s: float = 60.0
    last_sample_at: datetime | None = None
    written: dict[int, tuple[Decimal, ...]] = field(default_factory=dict)

    def due(self, now: datetime) -> bool:
        return self.last_sample_at is None or now - self.last_sample_at >= timedelta(seconds=self.every_s)


@dataclass
class FirmSignalsState:
    """Exact firm-wide figures for Prometheus cost ~0.6 s at 10k accounts (every account's exposure, summed
    exactly), far more than the rest of a pass, so they are refreshed at most every ``every_s``; between
    refreshes the gauges keep their last values. Prometheus scrapes every 15 s by default."""

    every_s: float = 10.0
    last_at: datetime | None = None

    def due(self, now: datetime) -> bool:
        return self.last_at is None or now - self.last_at >= timedelta(seconds=self.every_s)


@dataclass
class WrittenState:
    """What this process's last committed pass left in ``alerts`` and ``compliance_status``, so a steady
    pass need not re-read 10k+ rows to diff against them.

    Validated inside every write transaction, under a lock that every writer of those rows takes: the
    cached alerts are used only while ``max(alert_events.id)`` is still the one this process saw after its
    own last commit (every alert change appends an event under the chain lock: an operator's ack, the tick
    path's writer, another replica), and the statuses only while ``max(compliance_history.id)`` is (every
    status change appends history under ``COMPLIANCE_LOCK``). Anything else re-reads. Updated only after
    a commit, so a rolled-back pass leaves the previous (still true) state."""

    alert_token: int | None = None
    alerts: dict[str, tuple[Alert, str]] = field(default_factory=dict)  # fingerprint -> (active alert, limit type)
    compliance_token: int | None = None
    compliance: dict[int, str] = field(default_factory=dict)  # account id -> status


@dataclass
class _Staged:
    """The next WrittenState, built inside the transaction and kept only if it commits."""

    alert_token: int | None = None
    alerts: dict[str, tuple[Alert, str]] | None = None
    compliance_token: int | None = None
    compliance: dict[int, str] | None = None
    alert_cache_hit: bool = False
    compliance_cache_hit: bool = False


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    evaluation_id: int
    evaluation: Evaluation
    loaded: LoadedBook
    events: list[StoredEvent]
    compliance_changes: int
    history_rows: int
    timings: Mapping[str, float]  # seconds: read, compute, write, total
    cache_hits: tuple[bool, bool] = (False, False)  # (alerts, compliance) diffed against WrittenState


def run_evaluation(
    engine: Engine,
    limits: Sequence[Limit],
    now: datetime,
    *,
    groups: Mapping[str, tuple[str, ...]] | None = None,
    freshness: FreshnessSource | None = None,
    channels: Sequence[str] = (),
    history: HistoryState | None = None,
    publish: Callable[[Sequence[StoredEvent]], None] | None = None,
    path: str = "scheduled",
    day_offset: timedelta = timedelta(0),
    cache: BookCache | None = None,
    per_account_metrics: bool = False,
    firm_signals: FirmSignalsState | None = None,
    written: WrittenState | None = None,
) -> EvaluationResult:
    """One full pass. ``history``, ``cache`` and ``written`` are the caller's state across passes (None: none
    kept)."""
    started = time.perf_counter()
    loaded = load_book(engine, groups=groups, freshness=freshness, day_offset=day_offset, cache=cache)
    read_done = time.perf_counter()
    evaluation = evaluate(loaded.book, limits, now)
    compute_done = time.perf_counter()
    staged = _Staged()
    with engine.begin() as conn:
        evaluation_id = _insert_evaluation(conn, evaluation, loaded, now, path)
        _write_marks(conn, evaluation, now)
        worst = _worst_levels(evaluation, loaded)
        compliance_changes = _write_compliance(conn, worst, loaded, now, written=written, staged=staged)
        history_rows = (
            _write_history(conn, evaluation, loaded=loaded, history=history, evaluation_id=evaluation_id, now=now)
            if history
            else 0
        )
        # Alerts last: their chain lock is held until commit, so keep what follows it short.
        events = _write_alerts(conn, evaluation, loaded, now, channels=channels, written=written, staged=staged)
        opened = sum(1 for e in events if e.event_type is AlertEvent.OPENED)
        resolved = sum(1 for e in events if e.event_type is AlertEvent.RESOLVED)
        finished = now + timedelta(seconds=time.perf_counter() - started)
        conn.execute(
            text(
                "UPDATE evaluations SET alerts_opened = :opened, alerts_resolved = :resolved, finished_at = :at"
                " WHERE id = :id AND started_at = :started"  # the partition key: one partition, not all
            ),
            {"opened": opened, "resolved": resolved, "at": finished, "id": evaluation_id, "started": now},
        )
        open_alerts = _open_alert_counts(staged.alerts or {})  # the active alerts as of this transaction
    if written is not None:  # committed: what this pass wrote is now what the database holds
        written.alert_token, written.alerts = staged.alert_token, staged.alerts or {}
        written.compliance_token, written.compliance = staged.compliance_token, staged.compliance or {}
    done = time.perf_counter()
    if publish is not None and events:
        publish(events)
    timings = {
        "read": read_done - started,
        "compute": compute_done - read_done,
        "write": done - compute_done,
        "total": done - started,
    }
    symbols = {limit.name: limit.symbol or "" for limit in limits}
    _observe(
        timings,
        worst,
        evaluation=evaluation,
        loaded=loaded,
        events=events,
        open_alerts=open_alerts,
        now=now,
        limit_symbols=symbols,
        per_account=per_account_metrics,
        firm_due=firm_signals is None or firm_signals.due(now),
    )
    if firm_signals is not None and firm_signals.due(now):
        firm_signals.last_at = now
    hits = (staged.alert_cache_hit, staged.compliance_cache_hit)
    return EvaluationResult(evaluation_id, evaluation, loaded, events, compliance_changes, history_rows, timings, hits)


def _observe(
    timings: Mapping[str, float],
    worst: Mapping[str, Level],
    *,
    evaluation: Evaluation,
    loaded: LoadedBook,
    events: list[StoredEvent],
    open_alerts: Mapping[tuple[str, str], int],
    now: datetime,
    limit_symbols: Mapping[str, str],
    per_account: bool,
    firm_due: bool,
) -> None:
    """Export the pass to Prometheus (services/risk_signals.py owns the compliance signals)."""
    for phase, seconds in timings.items():
        if phase != "total":
            metrics.EVALUATION_DURATION.labels(phase).observe(seconds)
    if loaded.data_as_of is not None:
        metrics.EVALUATION_DATA_AGE.set((now - loaded.data_as_of).total_seconds())
    opened: list[tuple[str, str, str | None]] = []
    for event in events:
        metrics.ALERT_EVENTS.labels(event.event_type.value).inc()
        if event.event_type is AlertEvent.OPENED:
            alert = event.alert
            # the symbol label only when the limit names one: per-instrument subjects would multiply series
            opened.append((alert.severity.value, alert.limit_type, limit_symbols.get(alert.limit_name) or None))
    risk_signals.record_alerts_generated(opened)
    counts = dict.fromkeys(_STATUS.values(), 0)
    for level in worst.values():
        counts[_STATUS[level]] += 1
    for status, count in counts.items():
        metrics.COMPLIANCE_ACCOUNTS.labels(status).set(count)
    risk_signals.publish_evaluation(
        _signals(
            evaluation,
            worst,
            events=events,
            open_alerts=open_alerts,
            now=now,
            duration_s=timings["total"],
            per_account=per_account,
            firm_due=firm_due,
        ),
        per_account=per_account,
    )


def _signals(
    evaluation: Evaluation,
    worst: Mapping[str, Level],
    *,
    events: Sequence[StoredEvent],
    open_alerts: Mapping[tuple[str, str], int],
    now: datetime,
    duration_s: float,
    per_account: bool,
    firm_due: bool,
) -> risk_signals.EvaluationSignals:
    utilization: dict[tuple[str, str], Decimal] = {}
    for check in evaluation.checks:  # only checks at or above their clear threshold exist: the others are absent
        key = (check.limit.name, check.limit.type.value)
        if check.utilisation > utilization.get(key, Decimal("-Infinity")):
            utilization[key] = check.utilisation
    accounts: dict[str, risk_signals.AccountExposure] = {}
    if per_account:
        for account in worst:
            exposure = evaluation.exposures.get(account)
            account_marks = evaluation.marks.get(account)
            if exposure is not None:
                pnl = daily_pnl(account_marks, exposure.equity) if account_marks else ZERO
                accounts[account] = risk_signals.AccountExposure(pnl, exposure.gross, delta_by_asset(exposure))
    return risk_signals.EvaluationSignals(
        evaluated_at=now,
        duration_s=duration_s,
        firm=firm_figures(evaluation) if firm_due else None,
        utilization=utilization,
        compliance={account: _STATUS[level] for account, level in worst.items()},
        open_alerts=open_alerts,
        detection_latencies=tuple(
            ("scheduled", e.alert.detection_latency_s) for e in events if e.event_type is AlertEvent.OPENED
        ),
        accounts=accounts,
    )


def firm_figures(evaluation: Evaluation) -> risk_signals.FirmFigures | None:
    firm = evaluation.exposures.get(FIRM)
    if firm is None:
        return None
    marks = evaluation.marks.get(FIRM)
    return risk_signals.FirmFigures(
        pnl=daily_pnl(marks, firm.equity) if marks is not None else ZERO,
        drawdown_ratio=drawdown(marks, firm.equity) if marks is not None else ZERO,
        gross_notional=firm.gross,
        delta_by_asset=delta_by_asset(firm),
    )


def _open_alert_counts(alerts: Mapping[str, tuple[Alert, str]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for alert, limit_type in alerts.values():
        key = (alert.severity.value, limit_type)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _insert_evaluation(conn: Connection, evaluation: Evaluation, loaded: LoadedBook, now: datetime, path: str) -> int:
    evaluation_id: int = conn.execute(
        text(
            "INSERT INTO evaluations (path, started_at, data_as_of, accounts_evaluated, checks, breaches, status)"
            " VALUES (:path, :started, :data_as_of, :accounts, :checks, :breaches, 'succeeded') RETURNING id"
        ),
        {
            "path": path,
            "started": now,
            "data_as_of": loaded.data_as_of,
            "accounts": len(loaded.book.accounts),
            "checks": len(evaluation.checks),
            "breaches": sum(1 for c in evaluation.checks if c.level is not Level.OK),
        },
    ).scalar_one()
    return evaluation_id


def _write_marks(conn: Connection, evaluation: Evaluation, now: datetime) -> None:
    """Changed marks only: the high-water mark and day start then survive a restart."""
    changed = evaluation.changed_marks
    if not changed:
        return
    conn.execute(
        text(
            "INSERT INTO pnl_marks (scope, high_water_mark, day_start_equity, trading_day, updated_at)"
            " SELECT s, h, d, t, :now FROM unnest(CAST(:scope AS text[]), CAST(:hwm AS numeric[]),"
            " CAST(:start AS numeric[]), CAST(:day AS date[])) AS u(s, h, d, t)"
            " ON CONFLICT (scope) DO UPDATE SET high_water_mark = excluded.high_water_mark,"
            " day_start_equity = excluded.day_start_equity, trading_day = excluded.trading_day,"
            " updated_at = excluded.updated_at"
        ),
        {
            "now": now,
            "scope": list(changed),
            "hwm": [m.hwm for m in changed.values()],
            "start": [m.day_start_equity for m in changed.values()],
            "day": [m.trading_day for m in changed.values()],
        },
    )


def _worst_levels(evaluation: Evaluation, loaded: LoadedBook) -> dict[str, Level]:
    worst = dict.fromkeys(loaded.book.accounts, Level.OK)
    for check in evaluation.checks:
        account = check.subject.account
        if account is not None and account in worst and _RANK[check.level] > _RANK[worst[account]]:
            worst[account] = check.level
    return worst


def _write_compliance(
    conn: Connection,
    worst: Mapping[str, Level],
    loaded: LoadedBook,
    now: datetime,
    *,
    written: WrittenState | None,
    staged: _Staged,
) -> int:
    """Status per account from its worst check; a change (or a first status) appends compliance_history.

    Rows are written only when the status changes, so ``changed_at`` = ``updated_at`` = the time of the last
    change (a refresh of every row per pass would be a 10k-row update every second)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": COMPLIANCE_LOCK})
    token = int(conn.scalar(text("SELECT coalesce(max(id), 0) FROM compliance_history")) or 0)
    if written is not None and written.compliance_token == token:
        previous: dict[int, str] = written.compliance
        staged.compliance_cache_hit = True
    else:
        previous = dict(fetch_all(conn, "SELECT account_id, status FROM compliance_status"))
    changed: list[tuple[int, str, str | None]] = []
    for account, level in worst.items():
        account_id = loaded.account_ids[account]
        status = _STATUS[level]
        if previous.get(account_id) != status:
            changed.append((account_id, status, previous.get(account_id)))
    statuses = dict(previous)
    if changed:
        params = {
            "now": now,
            "ids": [c[0] for c in changed],
            "status": [c[1] for c in changed],
            "previous": [c[2] for c in changed],
        }
        conn.execute(
            text(
                "INSERT INTO compliance_status (account_id, status, changed_at, updated_at)"
                " SELECT a, s, :now, :now FROM unnest(CAST(:ids AS int[]), CAST(:status AS text[])) AS u(a, s)"
                " ON CONFLICT (account_id) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at,"
                " updated_at = excluded.updated_at"
            ),
            params,
        )
        token = int(
            conn.scalar(
                text(
                    "WITH added AS (INSERT INTO compliance_history"
                    " (account_id, status, previous_status, changed_at, reason)"
                    " SELECT a, s, p, :now, 'evaluation' FROM unnest(CAST(:ids AS int[]), CAST(:status AS text[]),"
                    " CAST(:previous AS text[])) AS u(a, s, p) RETURNING id) SELECT max(id) FROM added"
                ),
                params,
            )
        )
        statuses.update((account_id, status) for account_id, status, _ in changed)
    staged.compliance_token, staged.compliance = token, statuses
    return len(changed)


def _write_history(
    conn: Connection,
    evaluation: Evaluation,
    *,
    loaded: LoadedBook,
    history: HistoryState,
    evaluation_id: int,
    now: datetime,
) -> int:
    if not history.due(now):
        return 0
    rows: list[tuple[Any, ...]] = []
    for account, account_id in loaded.account_ids.items():
        exposure = evaluation.exposures.get(account)
        if exposure is None:
            continue
        marks = evaluation.marks.get(account)
        figures = (
            exposure.gross,
            exposure.net,
            exposure.equity,
            exposure.leverage,
            exposure.unrealized_pnl,
            daily_pnl(marks, exposure.equity) if marks else ZERO,
            drawdown(marks, exposure.equity) if marks else ZERO,
        )
        if history.written.get(account_id) != figures:
            history.written[account_id] = figures
            rows.append((account_id, now, evaluation_id, *figures))
    history.last_sample_at = now
    copy_rows(conn, "account_risk_history", _HISTORY_COLUMNS, _HISTORY_TYPES, rows)
    return len(rows)


def _write_alerts(
    conn: Connection,
    evaluation: Evaluation,
    loaded: LoadedBook,
    now: datetime,
    *,
    channels: Sequence[str],
    written: WrittenState | None,
    staged: _Staged,
) -> list[StoredEvent]:
    # The chain lock first: while it is held nobody else can append an event, so the token read under it
    # says exactly whether the cached alerts are still what the database holds.
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    token = int(conn.scalar(text("SELECT coalesce(max(id), 0) FROM alert_events")) or 0)
    if written is not None and written.alert_token == token:
        cached = written.alerts
        staged.alert_cache_hit = True
    else:
        cached = active_alerts_with_types(conn)
    active = {fp: alert for fp, (alert, _) in cached.items()}
    transitions: list[Transition] = []
    context: dict[str, AlertContext] = {}
    for check in evaluation.checks:
        fp = check.fingerprint
        previous = active.get(fp)
        if previous is not None and check.level is not Level.OK and _SEVERITY[check.level] is previous.severity:
            continue  # the common case, decided without building anything: an active alert at the same severity
        found = step(previous, check, now)
        if found:
            transitions.extend(found)
            context[fp] = _context(check, loaded, now)
    resolving = resolve_absent(active.values(), evaluation, now)
    ahead = _ahead_of_positions(conn, [t.alert.fingerprint for t in resolving], loaded)
    transitions.extend(t for t in resolving if t.alert.fingerprint not in ahead)
    events = apply_transitions(conn, transitions, now, ACTOR, context, channels=channels)
    after = dict(cached)
    for event in events:  # every event of this transaction, including ones re-derived against newer rows
        alert = event.alert.to_domain()
        if alert.active:
            after[alert.fingerprint] = (alert, event.alert.limit_type)
        else:
            after.pop(alert.fingerprint, None)
    staged.alert_token = max((e.id for e in events), default=token)
    staged.alerts = after
    return events


def _ahead_of_positions(conn: Connection, fingerprints: Sequence[str], loaded: LoadedBook) -> set[str]:
    """Alerts the tick path raised from position data newer than the account's latest positions snapshot:
    a StreamTicks fill that reached the monitor before the venue poll did. Resolving those from the older snapshot
    would close the alert and open a second one a poll later; the next snapshot decides instead."""
    if not fingerprints:
        return set()
    keys = {account_id: key for key, account_id in loaded.account_ids.items()}
    rows = fetch_all(
        conn,
        "SELECT a.fingerprint, a.account_id, a.data_time FROM alerts a"
        " WHERE a.state <> 'resolved' AND a.account_id IS NOT NULL AND a.fingerprint = ANY(%(fps)s)"
        " AND EXISTS (SELECT 1 FROM alert_events e WHERE e.alert_id = a.id AND e.actor = %(ticks)s)",
        {"fps": list(fingerprints), "ticks": TICKS_ACTOR},
    )
    ahead = set()
    for fingerprint, account_id, data_time in rows:
        as_of = loaded.positions_as_of.get(keys.get(account_id, ""))
        if as_of is not None and data_time > as_of:
            ahead.add(fingerprint)
    return ahead


def _context(check: Check, loaded: LoadedBook, now: datetime) -> AlertContext:
    subject = check.subject
    account = subject.account
    data_time: datetime | None = None
    if account is not None:
        data_time = loaded.data_times.get(account)
    elif subject.venue is not None and subject.kind is not None:
        data_time = loaded.book.freshness.get((subject.venue, subject.kind))  # stale data: the newest we had
    data_time = data_time or loaded.data_as_of or now
    return AlertContext(
        check=check,
        account_id=loaded.account_ids.get(account) if account is not None else None,
        account=account,
        data_time=data_time,
    )
