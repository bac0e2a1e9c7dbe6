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
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from operator import itemgetter
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


class _Times(dict[datetime, str]):
    """datetime -> its text, formatted on first sight (a C-level lookup for every later hit)."""

    def __missing__(self, key: datetime) -> str:
        text = self[key] = timestamp_value(key)
        return text


# A row that cannot be written: (its index among the block's rows, index of the offending value, why).
Refused = tuple[int, int, str]


_SPECIAL = ("\\", "\t", "\n", "\r", "\x00")


class CopyText:
    """Formats rows for one COPY.

    ``block`` formats a batch column by column on a fast path: a column of plain text is checked once
    as a whole for characters that need escaping, decimals go through plain ``str()`` (C, no check), and
    the whole block is then searched for 'NaN' and 'Infinity': every non-finite Decimal prints one of
    them, so a block without either holds none. Only a block that fails this (a NaN, a NUL, a naive time,
    text to escape, an unknown type) is formatted again row by row, with every value checked. Times
    repeat a lot within a batch (every row of an account shares its observed_at), so each distinct one
    is formatted once; equal instants in different zones share a key, which is right: they are the
    same timestamptz.
    """

    __slots__ = ("_fast", "_times")

    def __init__(self) -> None:
        self._times = _Times()
        self._fast: dict[type, Callable[[Any], str]] = {
            **_BY_TYPE,
            type(None): {None: NULL}.__getitem__,
            Decimal: str,  # checked on the whole block, see above
            int: str,
            datetime: self._times.__getitem__,
        }

    def value(self, value: object) -> str:
        """One value, checked: raises ``UnwritableValue`` for a value that must not be written."""
        if type(value) is datetime:
            return self._times[value]
        formatter = _BY_TYPE.get(type(value)) or _by_class(value)
        return formatter(value)

    def fields(self, row: Iterable[object]) -> str:
        """The row's columns, checked, tab-separated, without the end of line."""
        value = self.value
        return "\t".join([value(v) for v in row])

    def block(
        self, rows: Sequence[Sequence[object]], prefixes: Sequence[str], suffix: str = "\n"
    ) -> tuple[str, list[Refused]]:
        """COPY text of ``rows``, row i written as prefixes[i] + its fields + suffix (which must end
        the line; a prefix is already formatted, ending in a tab when it holds columns).

        Rows holding a value that must not be written are left out and returned with the reason.
        """
        text = self._fast_block(rows, prefixes, suffix)
        if text is not None:
            return text, []
        lines: list[str] = []
        refused: list[Refused] = []
        for index, (prefix, row) in enumerate(zip(prefixes, rows, strict=True)):
            try:
                lines.append(prefix + self.fields(row) + suffix)
            except UnwritableValue:
                refused.append((index, *self._refusal(row)))
        return "".join(lines), refused

    def _fast_block(self, rows: Sequence[Sequence[object]], prefixes: Sequence[str], suffix: str) -> str | None:
        """The block's text when every value is writable as is; None when any needs a closer look."""
        if not rows or len(prefixes) != len(rows) or len(set(map(len, rows))) != 1:
            return None
        fast = self._fast
        columns: list[Sequence[str]] = []
        try:
            # Columns through itemgetter, not zip(*rows): zip's new tuples wake the cyclic GC (3x slower).
            for column in [list(map(itemgetter(i), rows)) for i in range(len(rows[0]))]:
                kinds = set(map(type, column))
                if kinds == {str}:
                    probe = "".join(column)
                    if any(c in probe for c in _SPECIAL):
                        return None
                    columns.append(column)
                elif len(kinds) == 1:  # one type: a C-level map, no lookup per value
                    columns.append(list(map(fast[kinds.pop()], column)))
                else:
                    columns.append([fast[type(v)](v) for v in column])
        except (KeyError, UnwritableValue):
            return None
        text = suffix.join(map(str.__add__, prefixes, map("\t".join, zip(*columns, strict=True)))) + suffix
        return None if "NaN" in text or "Infinity" in text else text

    def _refusal(self, row: Sequence[object]) -> tuple[int, str]:
        for index, v in enumerate(row):
            try:
                self.value(v)
            except UnwritableValue as exc:
                return index, str(exc)
        raise AssertionError("a refused row has no unwritable value")  # pragma: no cover


def array_literal(values: Sequence[object]) -> str:
    """A one-dimensional array literal ('{1,2,NULL}', '{"a b","2026-01-01T00:00:00+00:00"}'), to pass
    a whole array as one text parameter: psycopg otherwise inspects and dumps each element in Python."""
    kinds = set(map(type, values))
    # Fast paths, each a C-level loop: all ints, all plain text, all times (the heads and price_latest).
    if kinds <= {int}:
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == {str}:
        texts: Sequence[str] = values  # type: ignore[assignment]
        probe = "".join(texts)
        if '"' not in probe and "\\" not in probe and "\x00" not in probe:
            return '{"' + '","'.join(texts) + '"}'
    elif kinds == {datetime}:
        return '{"' + '","'.join(map(_Times().__getitem__, values)) + '"}'  # type: ignore[arg-type]
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
