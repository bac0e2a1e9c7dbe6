"""Read side of alerts, the audit log and compliance: keyset-paginated queries for the API and the CLI.

Read-only: the alert store is the only writer of these tables. Every list query walks an index in its
ORDER BY (see docs/api.md, "Pagination and indexes"), so page N of years of history costs what page 1
costs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, select, text, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.orm import AccountRow, AlertEventRow, AlertRow, ComplianceStatusRow
from services.errors import NotFoundError
from services.page_tokens import Cursor

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

_ACCOUNT_KEY = (AccountRow.venue_id + ":" + AccountRow.external_id).label("account")


@dataclass(frozen=True)
class AlertView:
    id: int
    fingerprint: str
    limit_name: str
    limit_type: str
    limit_version: int
    account: str | None
    subject: str
    symbol: str | None
    severity: str
    state: str
    observed_value: Decimal
    threshold: Decimal
    data_time: datetime
    detection_latency_s: float
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class AlertEventView:
    id: int
    alert_id: int
    event_type: str
    occurred_at: datetime
    actor: str
    severity: str
    state: str
    observed_value: Decimal | None
    threshold: Decimal | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    fingerprint: str
    limit_name: str
    account: str | None


@dataclass(frozen=True)
class ComplianceView:
    account: str
    status: str
    changed_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AlertFilter:
    """ListAlerts filters; None matches everything."""

    account: str | None = None
    limit_type: str | None = None
    severity: str | None = None
    state: str | None = None
    opened_after: datetime | None = None  # inclusive
    opened_before: datetime | None = None  # exclusive
    symbol: str | None = None
    newest_first: bool = False

    def digest_parts(self) -> tuple[str, ...]:
        """What a page token is bound to: the same filters and order, or the token is rejected."""
        return tuple(
            "" if v is None else (v.isoformat() if isinstance(v, datetime) else str(v))
            for v in (
                self.account,
                self.limit_type,
                self.severity,
                self.state,
                self.opened_after,
                self.opened_before,
                self.symbol,
                self.newest_first,
            )
        )


@dataclass(frozen=True)
class EventFilter:
    occurred_after: datetime | None = None  # inclusive
    occurred_before: datetime | None = None  # exclusive
    alert_id: int | None = None

    def digest_parts(self) -> tuple[str, ...]:
        return (
            self.occurred_after.isoformat() if self.occurred_after else "",
            self.occurred_before.isoformat() if self.occurred_before else "",
            str(self.alert_id or ""),
        )


@contextmanager
def read_only(engine: Engine, timeout_s: float | None = None) -> Iterator[Session]:
    """A read-only transaction; ``timeout_s`` (the caller's remaining deadline) bounds every statement."""
    with Session(engine) as session, session.begin():
        session.execute(text("SET TRANSACTION READ ONLY"))
        if timeout_s is not None:
            # SET LOCAL takes no bind parameters; the value is an int computed here, not user text.
            session.execute(text(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}"))
        yield session


def _account_id(conn: Session, key: str) -> int | None:
    venue, _, external = key.partition(":")
    return conn.scalar(select(AccountRow.id).where(AccountRow.venue_id == venue, AccountRow.external_id == external))


def alerts_query(
    flt: AlertFilter, cursor: Cursor | None, limit: int, *, account_id: int | None = None
) -> Select[AlertRow, str]:
    """The ListAlerts statement (exposed so the EXPLAIN test checks the very SQL the API runs)."""
    a = AlertRow
    stmt = select(a, _ACCOUNT_KEY).outerjoin(AccountRow, AccountRow.id == a.account_id)
    conditions: list[ColumnElement[bool]] = []
    if flt.account is not None:
        conditions.append(a.account_id == (account_id if account_id is not None else -1))
    if flt.limit_type is not None:
        conditions.append(a.limit_type == flt.limit_type)
    if flt.severity is not None:
        conditions.append(a.severity == flt.severity)
    if flt.state is not None:
        conditions.append(a.state == flt.state)
    if flt.symbol is not None:
        conditions.append(a.symbol == flt.symbol)
    if flt.opened_after is not None:
        conditions.append(a.opened_at >= flt.opened_after)
    if flt.opened_before is not None:
        conditions.append(a.opened_at < flt.opened_before)
    key = tuple_(a.opened_at, a.id)
    if cursor is not None:
        # Row comparison, not "opened_at > t OR (opened_at = t AND id > i)": PostgreSQL turns it into
        # an index range condition on (…, opened_at, id).
        bound = tuple_(cursor.time, cursor.id)
        conditions.append(key < bound if flt.newest_first else key > bound)
    order = (a.opened_at.desc(), a.id.desc()) if flt.newest_first else (a.opened_at, a.id)
    return stmt.where(*conditions).order_by(*order).limit(limit)


def list_alerts(
    conn: Session, flt: AlertFilter, cursor: Cursor | None, page_size: int
) -> tuple[list[AlertView], Cursor | None]:
    """One page and the cursor of the next one (None on the last page)."""
    account_id = _account_id(conn, flt.account) if flt.account is not None else None
    rows = conn.execute(alerts_query(flt, cursor, page_size + 1, account_id=account_id)).all()
    views = [_alert_view(row[0], row.account) for row in rows]
    if len(views) <= page_size:
        return views, None
    views = views[:page_size]
    return views, Cursor(views[-1].opened_at, views[-1].id)


def get_alert(conn: Session, alert_id: int) -> tuple[AlertView, list[AlertEventView]]:
    row = conn.execute(
        select(AlertRow, _ACCOUNT_KEY)
        .outerjoin(AccountRow, AccountRow.id == AlertRow.account_id)
        .where(AlertRow.id == alert_id)
    ).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id} does not exist")
    events = conn.execute(_events_select().where(AlertEventRow.alert_id == alert_id).order_by(AlertEventRow.id)).all()
    return _alert_view(row[0], row.account), [_event_view(e) for e in events]


def events_query(flt: EventFilter, cursor: Cursor | None, limit: int) -> Select[AlertEventRow, str, str, str]:
    """The ListAlertEvents statement: (occurred_at, id) order, keyset on the same pair."""
    e = AlertEventRow
    stmt = _events_select()
    if flt.alert_id is not None:
        stmt = stmt.where(e.alert_id == flt.alert_id)
    if flt.occurred_after is not None:
        stmt = stmt.where(e.occurred_at >= flt.occurred_after)
    if flt.occurred_before is not None:
        stmt = stmt.where(e.occurred_at < flt.occurred_before)
    if cursor is not None:
        stmt = stmt.where(tuple_(e.occurred_at, e.id) > tuple_(cursor.time, cursor.id))
    return stmt.order_by(e.occurred_at, e.id).limit(limit)


def list_events(
    conn: Session, flt: EventFilter, cursor: Cursor | None, page_size: int
) -> tuple[list[AlertEventView], Cursor | None]:
    """One page of the audit log in (occurred_at, id) order, and the cursor of the next (None: last page)."""
    rows = conn.execute(events_query(flt, cursor, page_size + 1)).all()
    views = [_event_view(r) for r in rows[:page_size]]
    return views, (Cursor(views[-1].occurred_at, views[-1].id) if len(rows) > page_size else None)


def events_after(conn: Session, after_id: int, limit: int) -> list[AlertEventView]:
    """Events with id > after_id in id order (WatchAlerts catch-up and the live poller). Ids become
    visible in id order (the alert store serialises appends), so polling "id > last seen" misses none."""
    stmt = _events_select().where(AlertEventRow.id > after_id).order_by(AlertEventRow.id).limit(limit)
    return [_event_view(r) for r in conn.execute(stmt).all()]


def last_event_id(conn: Session) -> int:
    return int(conn.scalar(select(AlertEventRow.id).order_by(AlertEventRow.id.desc()).limit(1)) or 0)


def compliance(conn: Session, account: str | None) -> list[ComplianceView]:
    stmt = select(ComplianceStatusRow, _ACCOUNT_KEY).join(AccountRow, AccountRow.id == ComplianceStatusRow.account_id)
    if account is not None:
        venue, _, external = account.partition(":")
        stmt = stmt.where(AccountRow.venue_id == venue, AccountRow.external_id == external)
    rows = conn.execute(stmt.order_by(_ACCOUNT_KEY)).all()
    if account is not None and not rows:
        raise NotFoundError(f"account {account!r} has no compliance status")
    return [ComplianceView(r.account, r[0].status, r[0].changed_at, r[0].updated_at) for r in rows]


def _events_select() -> Select[AlertEventRow, str, str, str]:
    return (
        select(AlertEventRow, AlertRow.fingerprint, AlertRow.limit_name, _ACCOUNT_KEY)
        .join(AlertRow, AlertRow.id == AlertEventRow.alert_id)
        .outerjoin(AccountRow, AccountRow.id == AlertRow.account_id)
    )


def _alert_view(r: AlertRow, account: str | None) -> AlertView:
    return AlertView(
        id=r.id,
        fingerprint=r.fingerprint,
        limit_name=r.limit_name,
        limit_type=r.limit_type,
        limit_version=r.limit_version,
        account=account,
        subject=r.subject,
        symbol=r.symbol,
        severity=r.severity,
        state=r.state,
        observed_value=r.observed_value,
        threshold=r.threshold,
        data_time=r.data_time,
        detection_latency_s=r.detection_latency_s,
        opened_at=r.opened_at,
        updated_at=r.updated_at,
        acknowledged_at=r.acknowledged_at,
        acknowledged_by=r.acknowledged_by,
        ack_comment=r.ack_comment,
        resolved_at=r.resolved_at,
    )


def _event_view(row: Any) -> AlertEventView:
    e: AlertEventRow = row[0]
    return AlertEventView(
        id=e.id,
        alert_id=e.alert_id,
        event_type=e.event_type,
        occurred_at=e.occurred_at,
        actor=e.actor,
        severity=e.severity,
        state=e.state,
        observed_value=e.observed_value,
        threshold=e.threshold,
        details=dict(e.details or {}),
        prev_hash=e.prev_hash,
        hash=e.hash,
        fingerprint=row.fingerprint,
        limit_name=row.limit_name,
        account=row.account,
    )
