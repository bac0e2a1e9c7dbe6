"""Venue records -> snapshot rows: plain functions over the parsed records, no I/O (unit-tested alone).

Each returns the rows in the target table's column order plus the records it had to reject, with a
reason, so a bad record is stored in ``rejected_records`` instead of failing its run's batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

from models.payloads import (
    BalanceRecord,
    CustodyBalanceRecord,
    PositionRecord,
    PriceRecord,
    Rejected,
    SettlementRecord,
)
from services.snapshot_store import Rejection, SettlementUpsert

Row = tuple[Any, ...]
_MAX_ERROR = 2000  # characters of a run's error text: enough to name every failed account of a venue


def _payload(record: object) -> dict[str, Any]:
    return dataclasses.asdict(record)  # type: ignore[call-overload,no-any-return]


def rejections(rejected: Iterable[Rejected], prefix: str = "") -> list[Rejection]:
    return [Rejection(r.raw, f"{prefix}{r.reason}") for r in rejected]


def position_rows(records: Sequence[PositionRecord]) -> tuple[list[Row], list[Rejection]]:
    """Rows in ``position_snapshots`` column order. The snapshot key holds one row per symbol, so a
    second record of a symbol (a hedge-mode leg) is rejected, visibly, rather than failing the batch."""
    rows: list[Row] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for r in records:
        if r.symbol in seen:
            rejected.append(Rejection(_payload(r), f"{r.account_id}: duplicate position in {r.symbol}"))
            continue
        seen.add(r.symbol)
        rows.append((r.symbol, r.quantity, r.avg_price, r.mark_price, r.realized_pnl, r.updated_at))
    return rows, rejected


def balance_rows(records: Sequence[BalanceRecord], observed_at: datetime) -> tuple[list[Row], list[Rejection]]:
    rows: list[Row] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for r in records:
        if r.asset in seen:
            rejected.append(Rejection(_payload(r), f"{r.account_id}: duplicate balance in {r.asset}"))
            continue
        seen.add(r.asset)
        rows.append((r.asset, r.available, r.locked, r.total, observed_at))
    return rows, rejected


def custody_rows(
    records: Sequence[CustodyBalanceRecord],
    observed_at: datetime,
    *,
    master_account: int,
    held_accounts: Mapping[tuple[str, str], int],
) -> tuple[list[Row], list[Rejection]]:
    """Rows ``(held account, asset, total, observed_at)``. The master (omnibus) balance is held for the
    custodian's own client account; a segregated balance for an account at a venue the monitor does not
    collect from is rejected (nothing to reconcile it against)."""
    rows: list[Row] = []
    rejected: list[Rejection] = []
    seen: set[tuple[int, str]] = set()
    for r in records:
        if r.venue is None or r.account_id is None:
            held = master_account
        elif (r.venue, r.account_id) in held_accounts:
            held = held_accounts[(r.venue, r.account_id)]
        else:
            reason = f"{r.client_id}: venue {r.venue!r} is not a configured exchange"
            rejected.append(Rejection(_payload(r), reason))
            continue
        if (held, r.asset) in seen:
            where = f"{r.venue}/{r.account_id}" if r.venue else "master"
            rejected.append(Rejection(_payload(r), f"{r.client_id}: duplicate {where} balance in {r.asset}"))
            continue
        seen.add((held, r.asset))
        rows.append((held, r.asset, r.total, observed_at))
    return rows, rejected


def settlement_upserts(
    records: Sequence[SettlementRecord], accounts: Mapping[str, Sequence[int]]
) -> tuple[list[SettlementUpsert], list[Rejection]]:
    """Resolve each settlement's account (named without a venue) among the collected exchanges."""
    upserts: list[SettlementUpsert] = []
    rejected: list[Rejection] = []
    for r in records:
        matches = accounts.get(r.account_id, ())
        if len(matches) != 1:
            why = "is not known at any configured exchange" if not matches else "is ambiguous across exchanges"
            rejected.append(Rejection(_payload(r), f"settlement {r.settlement_id}: account {r.account_id!r} {why}"))
            continue
        upserts.append(
            SettlementUpsert(
                r.settlement_id,
                matches[0],
                r.asset,
                r.quantity,
                r.status,
                r.initiated_at,
                # Midnight UTC of the expected date: `.date()` gives the date back exactly.
                datetime.combine(r.expected_settlement_date, time(0), UTC),
            )
        )
    return upserts, rejected


def price_rows(records: Iterable[PriceRecord]) -> list[tuple[str, Any, Any, datetime]]:
    return [(r.symbol, r.price, r.volume, r.timestamp) for r in records]


def stale_symbols(
    wanted: Iterable[str], received: Mapping[str, datetime], *, now: datetime, max_age: timedelta
) -> list[str]:
    """Symbols the stream has not refreshed within ``max_age`` (or never): to be polled."""
    return [s for s in wanted if s not in received or now - received[s] > max_age]


def failure_summary(failures: Mapping[str, str], total: int, noun: str = "accounts") -> str | None:
    if not failures:
        return None
    text = f"{len(failures)} of {total} {noun} failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."
