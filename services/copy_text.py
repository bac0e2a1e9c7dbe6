"""Rows -> PostgreSQL's COPY text format and array literals, formatted by hand. Pure: no I/O.

Why by hand: psycopg's binary COPY runs a Python-level dumper per value (type lookup, struct packing
of each Decimal's digits), which dominated the monitor's CPU on the snapshot write path; ``str()`` of a
Decimal and one cached ``isoformat()`` per distinct time cost a fraction of that (benchmarks/write.py).

The price of hand formatting is that PostgreSQL would take some values we must not store: it parses
'NaN' into NUMERIC, reads a time without offset in the session's zone, and rejects a NUL character by
failing the whole COPY. Such a value raises ``UnwritableValue`` with a reason, so the caller can reject
that one record instead of writing it silently or losing the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

NULL = "\\N"
# COPY text format: backslash starts an escape, tab separates columns, newline ends the row; a bare
# carriage return is also read as an end of row.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class UnwritableValue(ValueError):
    """A value that PostgreSQL would store wrongly, or that would fail the whole COPY."""


def text_value(value: str) -> str:
    # Most values (symbols, assets) need no escaping: test for it first, translate() is 4x slower.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\x00" in value:
        if "\x00" in value:
            raise UnwritableValue(f"text {value!r} contains a NUL character")
        return value.translate(_COPY_ESCAPES)
    return value


def decimal_value(value: Decimal) -> str:
    if not value.is_finite():  # NaN, sNaN, Infinity: NUMERIC would keep a NaN without complaint
        raise UnwritableValue(f"{value} is not a finite number")
    return str(value)  # exponent forms ("1E+3") are valid numeric input


def float_value(value: float) -> str:
    if not math.isfinite(value):
        raise UnwritableValue(f"{value!r} is not a finite number")
    return repr(value)


def timestamp_value(value: datetime) -> str:
    if value.utcoffset() is None:  # PostgreSQL would read it in the session's time zone
        raise UnwritableValue(f"time {value.isoformat()} has no UTC offset")
    return value.isoformat()


def _bool_value(value: bool) -> str:
    return "t" if value else "f"


def _int_value(value: int) -> str:
    return str(value)


def _date_value(value: date) -> str:
    return value.isoformat()


def _null(_: None) -> str:
    return NULL


_BY_TYPE: dict[type, Callable[[Any], str]] = {
    type(None): _null,
    str: text_value,
    Decimal: decimal_value,
    int: _int_value,
    bool: _bool_value,
    float: float_value,
    datetime: timestamp_value,
    date: _date_value,
}


def _by_class(value: object) -> Callable[[Any], str]:
    """The formatter of a subclass (a str enum, an aware datetime subclass), by its nearest base."""
    for base in type(value).__mro__[1:]:
        if base in _BY_TYPE:
            return _BY_TYPE[base]
    raise TypeError(f"no COPY text format for {type(value).__name__}")


class CopyText:
    """Formats rows for one COPY. Times repeat a lot within a batch (every row of an account shares
    its observed_at), so each distinct one is formatted once. Equal instants in different zones share
    a key: they are the same timestamptz."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: dict[datetime, str] = {}

    def value(self, value: object) -> str:
        if type(value) is datetime:
            text = self._times.get(value)
            if text is None:
                text = self._times[value] = timestamp_value(value)
            return text
        formatter = _BY_TYPE.get(type(value)) or _by_class(value)
        return formatter(value)

    def fields(self, row: Iterable[object]) -> str:
        """The row's columns, tab-separated, without the end of line."""
        value = self.value
        return "\t".join([value(v) for v in row])


def array_literal(values: Iterable[object]) -> str:
    """A one-dimensional array literal ('{1,2,NULL}', '{"a b","2026-01-01T00:00:00+00:00"}'), to pass
    a whole array as one text parameter: psycopg otherwise inspects and dumps each element."""
    formatter = CopyText()
    items = []
    for v in values:
        if v is None:
            items.append("NULL")
        elif type(v) is int:
            items.append(str(v))
        elif isinstance(v, str):
            if "\x00" in v:
                raise UnwritableValue(f"text {v!r} contains a NUL character")
            items.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            items.append('"' + formatter.value(v) + '"')  # times, decimals: no quote or backslash inside
    return "{" + ",".join(items) + "}"
