"""The only writer of ``alerts``, ``alert_events`` and ``notification_outbox``.

Every write goes through ``apply_transitions`` inside the caller's transaction: it takes the chain lock,
re-reads the active alert of every fingerprint involved, re-derives a transition computed from a stale
view (the scheduled evaluation and the tick path race on the same fingerprints), updates/inserts alert
rows, appends hash-chained events, and writes one outbox row per event per channel. The caller commits;
the events it returns may be published only after that commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import Connection, Engine, text

from models.risk import Alert, AlertError, AlertEvent, AlertState, Check, Transition, step
from models.risk import acknowledge as acknowledge_transition
from services import audit_chain
from services.alert_documents import event_document
from services.alert_records import AlertRecord, StoredEvent, read_alerts
from services.errors import ConflictError, InvalidArgumentError, NotFoundError
from services.raw_rows import copy_rows

# One lock for every append to alert_events, taken before reading the previous hash and held to commit.
# Besides keeping the chain linear, it makes event ids become visible in id order: ids are drawn under the
# lock and the lock is released only at commit, so no smaller id can commit after a larger one is seen.
# gRPC WatchAlerts resumes "after event id N" and relies on exactly that.
CHAIN_LOCK = 0x616C65727473  # "alerts"
_AMOUNT_QUANTUM = Decimal(10) ** -18  # thresholds are NUMERIC(38, 18): hash what the row will hold


@dataclass(frozen=True, slots=True)
class AlertContext:
    """What an evaluation knows about a check beyond the state machine: needed to open or change an alert."""

    check: Check
    account_id: int | None
    account: str | None
    data_time: datetime  # newest observed_at of the inputs that showed the value

    @property
    def threshold(self) -> Decimal:
        threshold = self.check.threshold
        return threshold if threshold is not None else self.check.clear


@dataclass(frozen=True, slots=True)
class AckResult:
    alert: AlertRecord
    event: StoredEvent | None  # None: it was already acknowledged (a repeat is a no-op)


def _amount(value: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return value.quantize(_AMOUNT_QUANTUM)


def _same(previous: Alert | None, current: AlertRecord | None) -> bool:
    if previous is None or current is None:
        return previous is None and current is None
    return (previous.opened_at, previous.state, previous.severity) == (
        current.opened_at,
        current.state,
        current.severity,
    )


def _rederive(
    transition: Transition, current: AlertRecord | None, context: AlertContext | None, now: datetime
) -> tuple[Transition, ...]:
    """The transition computed from a stale view, redone against the alert as it is now."""
    alert = current.to_domain() if current is not None else None
    if context is not None:
        return step(alert, context.check, now)
    if transition.event is AlertEvent.RESOLVED and alert is not None:
        resolved = replace(alert, state=AlertState.RESOLVED, updated_at=now, resolved_at=now)
        return (Transition(AlertEvent.RESOLVED, resolved, alert),)
    return ()  # e.g. an acknowledgement of an alert resolved meanwhile: nothing left to do


def _after(record: AlertRecord | None, t: Transition, ctx: AlertContext | None, now: datetime) -> AlertRecord:
    """The alert row after one transition."""
    new = t.alert
    if t.event is AlertEvent.OPENED:
        if ctx is None:
            raise ValueError(f"opening alert {new.fingerprint!r} needs its AlertContext")
        check = ctx.check
        return AlertRecord(
            id=0,  # assigned on insert
            fingerprint=new.fingerprint,
            limit_name=check.limit.name,
            limit_type=check.limit.type.value,
            limit_version=check.limit.version,
            account_id=ctx.account_id,
            account=ctx.account,
            subject=check.subject.key,
            symbol=check.subject.symbol,
            severity=new.severity,
            state=new.state,
            observed_value=new.value,
            threshold=_amount(ctx.threshold),
            data_time=ctx.data_time,
            detection_latency_s=(now - ctx.data_time).total_seconds(),
            opened_at=now,
            updated_at=now,
        )
    assert record is not None
    changes: dict[str, Any] = {"severity": new.severity, "state": new.state, "updated_at": now}
    if t.event in (AlertEvent.ESCALATED, AlertEvent.DEESCALATED):
        changes["observed_value"] = new.value
        if ctx is not None:
            changes["threshold"] = _amount(ctx.threshold)
            changes["limit_version"] = ctx.check.limit.version
    elif t.event is AlertEvent.ACKNOWLEDGED:
        changes.update(acknowledged_at=now, acknowledged_by=new.acknowledged_by, ack_comment=new.ack_comment)
    elif t.event is AlertEvent.RESOLVED:
        changes.update(resolved_at=now, observed_value=new.value)
    return replace(record, **changes)


def apply_transitions(
    conn: Connection,
    transitions: Sequence[Transition],
    now: datetime,
    actor: str,
    context: Mapping[str, AlertContext],
    *,
    channels: Sequence[str] = (),
    comment: str | None = None,
) -> list[StoredEvent]:
    """Persist transitions (and their events and outbox rows) in the caller's transaction.

    ``context`` maps fingerprint -> AlertContext; it is required for transitions that open or change the
    severity of an alert. Returns the stored events in id order; publish them only after commit.
    """
    if not transitions:
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    fingerprints = sorted({t.alert.fingerprint for t in transitions})
    active = {r.fingerprint: r for r in read_alerts(conn, fingerprints=fingerprints, active_only=True, lock=True)}
    steps: list[tuple[AlertEvent, str, AlertRecord]] = []  # (event, fingerprint, alert after) in order
    for transition in transitions:
        fp = transition.alert.fingerprint
        current = active.get(fp)
        ctx = context.get(fp)
        effective = (transition,) if _same(transition.previous, current) else _rederive(transition, current, ctx, now)
        for t in effective:
            after = _after(current, t, ctx, now)
            steps.append((t.event, fp, after))
            current = after if after.state is not AlertState.RESOLVED else None
            if current is None:
                active.pop(fp, None)
            else:
                active[fp] = current
    return _write(conn, steps, now=now, actor=actor, channels=channels, comment=comment)


def _write(
    conn: Connection,
    steps: list[tuple[AlertEvent, str, AlertRecord]],
    *,
    now: datetime,
    actor: str,
    channels: Sequence[str],
    comment: str | None,
) -> list[StoredEvent]:
    if not steps:
        return []
    # Final state per alert: existing rows are updated first (a resolve must free the fingerprint before
    # a new alert of the same fingerprint is inserted), then new rows are inserted.
    final_existing: dict[int, AlertRecord] = {}
    final_new: dict[int, AlertRecord] = {}  # step index of the OPENED event -> final state
    owner: list[int] = []  # per step: existing alert id, or -(index of its OPENED step) - 1
    opened_at_step: dict[str, int] = {}
    for index, (event, fp, after) in enumerate(steps):
        if event is AlertEvent.OPENED:
            opened_at_step[fp] = index
            final_new[index] = after
            owner.append(-index - 1)
        elif after.id == 0:
            final_new[opened_at_step[fp]] = after
            owner.append(-opened_at_step[fp] - 1)
        else:
            final_existing[after.id] = after
            owner.append(after.id)
    if final_existing:
        _update_alerts(conn, list(final_existing.values()))
    new_ids = _insert_alerts(conn, list(final_new.values()))
    id_of_new = dict(zip(final_new, new_ids, strict=True))
    event_ids = sorted(
        conn.scalars(
            text("SELECT nextval(pg_get_serial_sequence('alert_events', 'id')) FROM generate_series(1, :n)"),
            {"n": len(steps)},
        )
    )
    prev_hash = conn.scalar(text("SELECT hash FROM alert_events ORDER BY id DESC LIMIT 1")) or audit_chain.GENESIS_HASH
    stored: list[StoredEvent] = []
    for event_id, (event, _fp, after), who in zip(event_ids, steps, owner, strict=True):
        alert_id = who if who > 0 else id_of_new[-who - 1]
        record = replace(after, id=alert_id)
        details = {"fingerprint": record.fingerprint, "limit_version": record.limit_version}
        if event is AlertEvent.ACKNOWLEDGED and comment is not None:
            details["comment"] = comment
        row = {
            "id": event_id,
            "alert_id": alert_id,
            "event_type": event.value,
            "occurred_at": now,
            "actor": actor,
            "severity": record.severity.value,
            "state": record.state.value,
            "observed_value": record.observed_value,
            "threshold": record.threshold,
            "details": details,
        }
        digest = audit_chain.chain_hash(prev_hash, row)
        stored.append(StoredEvent(event_id, event, now, actor, record, details, prev_hash, digest))
        prev_hash = digest
    _insert_events(conn, stored)
    _insert_outbox(conn, stored, channels)
    return stored


def _update_alerts(conn: Connection, records: list[AlertRecord]) -> None:
    conn.execute(
        text(
            "UPDATE alerts SET severity = u.severity, state = u.state, observed_value = u.observed_value,"
            " threshold = u.threshold, limit_version = u.limit_version, updated_at = u.updated_at,"
            " acknowledged_at = u.acknowledged_at, acknowledged_by = u.acknowledged_by,"
            " ack_comment = u.ack_comment, resolved_at = u.resolved_at"
            " FROM unnest(CAST(:id AS bigint[]), CAST(:severity AS text[]), CAST(:state AS text[]),"
            " CAST(:observed AS numeric[]), CAST(:threshold AS numeric[]), CAST(:version AS int[]),"
            " CAST(:updated AS timestamptz[]), CAST(:acked AS timestamptz[]), CAST(:acked_by AS text[]),"
            " CAST(:comment AS text[]), CAST(:resolved AS timestamptz[]))"
            " AS u(id, severity, state, observed_value, threshold, limit_version, updated_at, acknowledged_at,"
            " acknowledged_by, ack_comment, resolved_at)"
            " WHERE alerts.id = u.id"
        ),
        {
            "id": [r.id for r in records],
            "severity": [r.severity.value for r in records],
            "state": [r.state.value for r in records],
            "observed": [r.observed_value for r in records],
            "threshold": [r.threshold for r in records],
            "version": [r.limit_version for r in records],
            "updated": [r.updated_at for r in records],
            "acked": [r.acknowledged_at for r in records],
            "acked_by": [r.acknowledged_by for r in records],
            "comment": [r.ack_comment for r in records],
            "resolved": [r.resolved_at for r in records],
        },
    )


def _reserve_ids(conn: Connection, table: str, n: int) -> list[int]:
    """Draw n ids from the table's identity sequence (ascending), so rows can reference each other and the
    hash can cover the id before anything is inserted."""
    if n == 0:
        return []
    return sorted(
        int(i)
        for i in conn.scalars(
            # table is one of two literals in this module, never input
            text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, :n)"),  # noqa: S608
            {"n": n},
        )
    )


_ALERT_COLUMNS = (
    ("id", "int8"),
    ("fingerprint", "text"),
    ("limit_name", "text"),
    ("limit_type", "text"),
    ("limit_version", "int4"),
    ("account_id", "int4"),
    ("subject", "text"),
    ("symbol", "text"),
    ("severity", "text"),
    ("state", "text"),
    ("observed_value", "numeric"),
    ("threshold", "numeric"),
    ("data_time", "timestamptz"),
    ("detection_latency_s", "float8"),
    ("opened_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("acknowledged_at", "timestamptz"),
    ("acknowledged_by", "text"),
    ("ack_comment", "text"),
    ("resolved_at", "timestamptz"),
)
_EVENT_COLUMNS = (
    ("id", "int8"),
    ("alert_id", "int8"),
    ("event_type", "text"),
    ("occurred_at", "timestamptz"),
    ("actor", "text"),
    ("severity", "text"),
    ("state", "text"),
    ("observed_value", "numeric"),
    ("threshold", "numeric"),
    ("details", "jsonb"),
    ("prev_hash", "text"),
    ("hash", "text"),
)
_OUTBOX_COLUMNS = (
    ("event_id", "int8"),
    ("channel", "text"),
    ("idempotency_key", "text"),
    ("payload", "jsonb"),
    ("next_attempt_at", "timestamptz"),
)


def _copy(conn: Connection, table: str, columns: tuple[tuple[str, str], ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        copy_rows(conn, table, [c for c, _ in columns], [t for _, t in columns], rows)


def _insert_alerts(conn: Connection, records: list[AlertRecord]) -> list[int]:
    ids = _reserve_ids(conn, "alerts", len(records))
    rows = [
        (
            alert_id,
            r.fingerprint,
            r.limit_name,
            r.limit_type,
            r.limit_version,
            r.account_id,
            r.subject,
            r.symbol,
            r.severity.value,
            r.state.value,
            r.observed_value,
            r.threshold,
            r.data_time,
            r.detection_latency_s,
            r.opened_at,
            r.updated_at,
            r.acknowledged_at,
            r.acknowledged_by,
            r.ack_comment,
            r.resolved_at,
        )
        for alert_id, r in zip(ids, records, strict=True)
    ]
    _copy(conn, "alerts", _ALERT_COLUMNS, rows)
    return ids


def _insert_events(conn: Connection, events: list[StoredEvent]) -> None:
    rows = [
        (
            e.id,
            e.alert.id,
            e.event_type.value,
            e.occurred_at,
            e.actor,
            e.alert.severity.value,
            e.alert.state.value,
            e.alert.observed_value,
            e.alert.threshold,
            e.details,
            e.prev_hash,
            e.hash,
        )
        for e in events
    ]
    _copy(conn, "alert_events", _EVENT_COLUMNS, rows)


def _insert_outbox(conn: Connection, events: list[StoredEvent], channels: Sequence[str]) -> None:
    """One row per event per channel; the idempotency key lets the dispatcher and the receiver dedupe."""
    if not channels:
        return
    rows: list[tuple[Any, ...]] = []
    for event in events:
        document = event_document(event)
        rows.extend((event.id, channel, f"{channel}:{event.id}", document, event.occurred_at) for channel in channels)
    _copy(conn, "notification_outbox", _OUTBOX_COLUMNS, rows)


def acknowledge(
    engine: Engine,
    alert_id: int,
    actor: str,
    comment: str,
    now: datetime,
    *,
    channels: Sequence[str] = (),
    publish: Callable[[Sequence[StoredEvent]], None] | None = None,
) -> AckResult:
    """Open -> acknowledged, with an event and outbox rows. Repeating it is a no-op that returns the alert.

    Raises InvalidArgumentError (no actor or comment), NotFoundError (unknown id), ConflictError (resolved).
    """
    if not actor.strip() or not comment.strip():
        raise InvalidArgumentError("acknowledging an alert needs an actor and a comment")
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
        found = read_alerts(conn, ids=[alert_id], lock=True)
        if not found:
            raise NotFoundError(f"alert {alert_id} does not exist")
        record = found[0]
        try:
            transition = acknowledge_transition(record.to_domain(), actor=actor, comment=comment, now=now)
        except AlertError as exc:
            raise ConflictError(f"alert {alert_id} is resolved and can't be acknowledged") from exc
        if transition is None:
            return AckResult(record, None)
        after = _after(record, transition, None, now)
        [event] = _write(
            conn,
            [(AlertEvent.ACKNOWLEDGED, record.fingerprint, after)],
            now=now,
            actor=actor,
            channels=channels,
            comment=comment,
        )
    if publish is not None:
        publish([event])
    return AckResult(event.alert, event)
