"""Injected faults: slow endpoints, HTTP errors and malformed payloads, per venue and endpoint."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ANY = "*"

MALFORMED_MODES = (
    "not_json",  # 200 with an HTML body
    "wrong_shape",  # valid JSON, not the documented envelope
    "negative_balance",  # first record: a negative amount
    "nan",  # first record: a NaN amount
    "missing_field",  # first record: its identifying field removed
    "future_timestamp",  # first record (or the envelope): a timestamp a day ahead
)


@dataclass
class Fault:
    kind: str  # "delay" | "error" | "malformed"
    venue: str
    endpoint: str
    remaining: int | None  # None: until cleared
    seconds: float = 0.0
    status: int = 500
    mode: str = ""

    def matches(self, venue: str, endpoint: str) -> bool:
        return self.venue in (venue, ANY) and self.endpoint in (endpoint, ANY)


@dataclass(frozen=True)
class Outcome:
    delay: float = 0.0
    status: int | None = None
    malformed: str | None = None


class FaultBook:
    """Thread-safe list of faults; each request consumes one use of every fault that matches it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.hits: Counter[tuple[str, str]] = Counter()  # requests seen per (venue, endpoint)
        self.in_flight: Counter[str] = Counter()  # requests being answered now, per venue
        self.peak_in_flight: Counter[str] = Counter()  # the most at once, per venue (how concurrent a client is)

    def started(self, venue: str) -> None:
        with self._lock:
            self.in_flight[venue] += 1
            self.peak_in_flight[venue] = max(self.peak_in_flight[venue], self.in_flight[venue])

    def finished(self, venue: str) -> None:
        with self._lock:
            self.in_flight[venue] -= 1

    def add(self, fault: Fault) -> None:
        if fault.kind == "malformed" and fault.mode not in MALFORMED_MODES:
            raise ValueError(f"unknown malformed mode {fault.mode!r}; one of {', '.join(MALFORMED_MODES)}")
        if fault.kind == "error" and not 400 <= fault.status <= 599:
            raise ValueError(f"status {fault.status} is not an HTTP error")
        with self._lock:
            self._faults.append(fault)

    def clear(self, venue: str = ANY) -> None:
        with self._lock:
            self._faults = [] if venue == ANY else [f for f in self._faults if f.venue != venue]

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, venue: str, endpoint: str) -> Outcome:
        delay, status, malformed = 0.0, None, None
        with self._lock:
            self.hits[venue, endpoint] += 1
            for fault in self._faults:
                if not fault.matches(venue, endpoint):
                    continue
                if fault.kind == "delay":
                    delay = max(delay, fault.seconds)
                elif fault.kind == "error" and status is None:
                    status = fault.status
                elif fault.kind == "malformed" and malformed is None:
                    malformed = fault.mode
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return Outcome(delay, status, None if status else malformed)


def corrupt(doc: dict[str, Any], mode: str) -> dict[str, Any] | list[Any]:
    """A copy of a venue document with one fault applied (`not_json` is handled by the server)."""
    if mode == "wrong_shape":
        return [doc]
    doc = copy.deepcopy(doc)
    record = _first_record(doc)
    if mode == "future_timestamp":
        target = record if record is not None and _time_key(record) else doc
        key = _time_key(target) or "as_of"
        target[key] = _plus_a_day(target.get(key))
        return doc
    if record is None:
        return doc
    amount_key = next((k for k in _AMOUNT_KEYS if k in record), None)
    if mode == "negative_balance" and amount_key:
        record[amount_key] = "-100"
        record.pop("total", None)
    elif mode == "nan" and amount_key:
        record[amount_key] = "NaN"
    elif mode == "missing_field":
        for key in ("symbol", "asset", "currency", "account_id", "client_id", "settlement_id"):
            if record.pop(key, None) is not None:
                break
    return doc


_AMOUNT_KEYS = ("available", "free", "quantity", "amount", "avg_price")


def _first_record(doc: dict[str, Any]) -> dict[str, Any] | None:
    results = doc.get("results")  # a batched response: the first entry's first record
    if isinstance(results, list) and results and isinstance(results[0], dict):
        return _first_record(results[0])
    for key in ("positions", "balances", "settlements", "accounts"):
        items = doc.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            nested = items[0].get("balances")
            if isinstance(nested, list) and nested and isinstance(nested[0], dict):
                return nested[0]
            return items[0]
    return None


def _time_key(record: dict[str, Any]) -> str | None:
    return next((k for k in ("updated_at", "initiated_at", "as_of") if k in record), None)


def _plus_a_day(value: object) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else datetime.now(UTC)
    return (moment + timedelta(days=1)).isoformat().replace("+00:00", "Z")
