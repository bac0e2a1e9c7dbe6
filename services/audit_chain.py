"""The hash chain over ``alert_events``: canonical form, hashing, and verification.

Each event's ``hash = sha256(prev_hash || canonical(event))`` (hex), ``prev_hash`` being the previous
event's hash in id order (``GENESIS_HASH`` for the first). Canonical form (docs/schema.md): a JSON object
of the fields in ``EVENT_FIELDS``, keys sorted, no whitespace, UTF-8; Decimals as normalized plain strings
("1500", "0.25", "Infinity"), times as ISO 8601 in UTC with microseconds, NULL as null.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

GENESIS_HASH = "0" * 64
EVENT_FIELDS = (
    "id",
    "alert_id",
    "event_type",
    "occurred_at",
    "actor",
    "severity",
    "state",
    "observed_value",
    "threshold",
    "details",
)


def decimal_text(value: Decimal | None) -> str | None:
    """Normalized plain text: "1500" for 1.5E+3 and 1500.000, "Infinity" for infinity."""
    if value is None:
        return None
    if not value.is_finite():
        return str(value)
    text_ = format(value.normalize(), "f")
    return "0" if text_ in {"-0", "0"} else text_


def time_text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(event: Mapping[Any, Any]) -> bytes:
    content: dict[str, Any] = {}
    for name in EVENT_FIELDS:
        value = event[name]
        if isinstance(value, Decimal):
            value = decimal_text(value)
        elif isinstance(value, datetime):
            value = time_text(value)
        content[name] = value
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, event: Mapping[Any, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(event)).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    first_id: int | None
    last_id: int | None
    last_hash: str
    broken_id: int | None = None
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_id is None


def verify_chain(conn: Connection, *, batch: int = 5000) -> ChainReport:
    """Recompute the chain in id order; stop at the first event whose links or content don't match."""
    rows = conn.execution_options(yield_per=batch).execute(
        text(f"SELECT {', '.join(EVENT_FIELDS)}, prev_hash, hash FROM alert_events ORDER BY id")  # noqa: S608 - constants
    )
    try:
        return _walk(rows)
    finally:
        rows.close()  # a server-side cursor left open on an early return would leak


def _walk(rows: Iterable[Any]) -> ChainReport:
    previous = GENESIS_HASH
    count = 0
    first_id: int | None = None
    last_id: int | None = None
    for row in rows:
        event = row._mapping
        event_id = int(event["id"])
        if first_id is None:
            first_id = event_id
        if event["prev_hash"] != previous:
            reason = "prev_hash does not match the previous event's hash (an event was removed or reordered)"
            return ChainReport(count, first_id, last_id, previous, event_id, reason)
        expected = chain_hash(previous, event)
        if event["hash"] != expected:
            reason = "hash does not match the event's content (the row was altered)"
            return ChainReport(count, first_id, last_id, previous, event_id, reason)
        previous = expected
        count += 1
        last_id = event_id
    return ChainReport(count, first_id, last_id, previous)
