"""Rows -> COPY text and array literals: escaping, NULL, numbers, times, and the values refused."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.copy_text import NULL, CopyText, UnwritableValue, array_literal, text_value

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _read_field(field: str) -> str | None:
    """COPY text format read back (the subset the writer emits): \\N is NULL, backslash escapes."""
    if field == NULL:
        return None
    return re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], field)


def _read_block(text: str) -> list[list[str | None]]:
    assert text.endswith("\n")
    return [[_read_field(f) for f in line.split("\t")] for line in text[:-1].split("\n")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("BTC-USDT", "BTC-USDT"),
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("back\\slash", "back\\\\slash"),
        ("\\N", "\\\\N"),  # the text "\N" is not NULL
        ("", ""),  # the empty string is not NULL either
        ("ünïcødé €", "ünïcødé €"),
        ("\\\t\n", "\\\\\\t\\n"),
    ],
)
def test_text_is_escaped_for_copy(value: str, expected: str) -> None:
    assert text_value(value) == expected
    assert _read_field(text_value(value)) == value


def test_values_of_each_type() -> None:
    text = CopyText()
    assert text.value(None) == NULL
    assert text.value(Decimal("-1.125")) == "-1.125"
    assert text.value(Decimal("1E+3")) == "1E+3"  # valid numeric input
    assert text.value(42) == "42"
    assert text.value(True) == "t"
    assert text.value(1.5) == "1.5"
    assert text.value(T0) == "2026-03-02T09:30:00+00:00"
    assert text.value(T0.astimezone(timezone(timedelta(hours=-5)))) in (
        "2026-03-02T04:30:00-05:00",
        "2026-03-02T09:30:00+00:00",  # the same instant: equal keys share one cached text
    )
    assert text.value(date(2026, 3, 2)) == "2026-03-02"


def test_a_subclass_is_formatted_as_its_base() -> None:
    class Side(StrEnum):
        BUY = "buy\tside"

    assert CopyText().value(Side.BUY) == "buy\\tside"


@pytest.mark.parametrize(
    "bad",
    [
        Decimal("NaN"),
        Decimal("-NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        float("nan"),
        float("inf"),
        T0.replace(tzinfo=None),  # no offset: the server would read it in its own zone
        "nul\x00inside",
    ],
)
def test_values_that_must_not_be_written_are_refused(bad: object) -> None:
    with pytest.raises(UnwritableValue):
        CopyText().value(bad)


def test_an_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no COPY text format for object"):
        CopyText().value(object())


def test_block_writes_prefix_fields_suffix_per_row() -> None:
    rows = [("BTC-USDT", Decimal("1.5"), None, T0), ("ETH\tUSDT", Decimal("-2"), Decimal("0"), T0)]
    text, refused = CopyText().block(rows, ["7\t", "8\t"], "\t99\n")
    assert refused == []
    assert _read_block(text) == [
        ["7", "BTC-USDT", "1.5", None, "2026-03-02T09:30:00+00:00", "99"],
        ["8", "ETH\tUSDT", "-2", "0", "2026-03-02T09:30:00+00:00", "99"],
    ]


@pytest.mark.parametrize(
    ("bad_row", "column", "reason"),
    [
        (("BTC-USDT", Decimal("NaN"), None, T0), 1, "NaN is not a finite number"),
        (("BTC-USDT", Decimal("1"), Decimal("sNaN"), T0), 2, "sNaN is not a finite number"),
        (("BTC-USDT", Decimal("-Infinity"), None, T0), 1, "-Infinity is not a finite number"),
        (("BTC-USDT", Decimal("1"), None, T0.replace(tzinfo=None)), 3, "has no UTC offset"),
        (("BTC\x00USDT", Decimal("1"), None, T0), 0, "NUL character"),
    ],
)
def test_block_leaves_out_a_refused_row_and_says_why(bad_row: tuple[object, ...], column: int, reason: str) -> None:
    good = ("ETH-USDT", Decimal("2"), None, T0)
    text, refused = CopyText().block([good, bad_row, good], ["1\t", "2\t", "3\t"], "\n")
    assert [row[0] for row in _read_block(text)] == ["1", "3"]
    assert [(index, col) for index, col, _ in refused] == [(1, column)]
    assert reason in refused[0][2]


def test_text_that_merely_reads_nan_is_written() -> None:
    # 'NaN' in a text column sends the block down the checked path, which writes it.
    text, refused = CopyText().block([("NaN-USDT", Decimal("1"))], ["x\t"], "\n")
    assert (text, refused) == ("x\tNaN-USDT\t1\n", [])


def test_block_of_no_rows_is_empty() -> None:
    assert CopyText().block([], [], "\n") == ("", [])


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_decimal = st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12)
_time = st.datetimes(timezones=st.just(UTC))
_row = st.tuples(_text, st.one_of(st.none(), _decimal), st.one_of(st.none(), _time), st.integers(-(2**31), 2**31))


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, max_size=20))
def test_fast_and_checked_paths_agree_and_read_back(
    rows: list[tuple[str, Decimal | None, datetime | None, int]],
) -> None:
    prefixes = ["p\t"] * len(rows)
    text, refused = CopyText().block(rows, prefixes, "\n")
    checked = "".join(f"p\t{CopyText().fields(row)}\n" for row in rows)
    assert (text, refused) == (checked, [])
    read = _read_block(text) if rows else []
    assert [r[1] for r in read] == [row[0] for row in rows]
    assert [r[2] for r in read] == [None if row[1] is None else str(row[1]) for row in rows]


def test_array_literals() -> None:
    assert array_literal([]) == "{}"
    assert array_literal([1, -2, 3]) == "{1,-2,3}"
    assert array_literal(["BTC-USDT", "a b", ""]) == '{"BTC-USDT","a b",""}'
    assert array_literal(['quo"te', "back\\slash", None, "NULL"]) == '{"quo\\"te","back\\\\slash",NULL,"NULL"}'
    assert array_literal([T0, T0]) == '{"2026-03-02T09:30:00+00:00","2026-03-02T09:30:00+00:00"}'
    assert array_literal([Decimal("1.5"), None, 7]) == '{"1.5",NULL,7}'


@pytest.mark.parametrize("bad", [["a\x00b"], [T0.replace(tzinfo=None)], [Decimal("NaN")]])
def test_array_literal_refuses_what_copy_refuses(bad: list[object]) -> None:
    with pytest.raises(UnwritableValue):
        array_literal(bad)
