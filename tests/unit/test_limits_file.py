"""Parsing the TOML limits file: every type, one-line errors with line numbers, and the digest."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from models.risk import LimitType
from services.limits_file import LimitsFileError, limits_digest, load_limits, parse_limits

TWO = (
    '[[limit]]\nname = "a"\ntype = "leverage"\ncritical = "3"\n\n'
    '[[limit]]\nname = "a"\ntype = "leverage"\ncritical = "4"\n'
)
EXAMPLE = Path(__file__).resolve().parents[2] / "limits.example.toml"


def test_the_example_file_loads_and_covers_every_limit_type() -> None:
    limits = load_limits(EXAMPLE)
    assert {limit.type for limit in limits} == set(LimitType)
    assert len({limit.name for limit in limits}) == len(limits)


def test_toml_floats_are_read_through_their_shortest_text() -> None:
    [limit] = parse_limits('[[limit]]\nname = "c"\ntype = "drawdown"\ncritical = 0.1\n')
    assert limit.critical == Decimal("0.1")


def test_an_unknown_type_names_the_file_line_and_limit() -> None:
    text = '# limits\n\n[[limit]]\nname = "btc-long"\ntype = "positon_quantity"\ncritical = "5"\n'
    with pytest.raises(LimitsFileError) as exc:
        parse_limits(text, path="limits.toml")
    assert str(exc.value) == "limits.toml:5: limit 'btc-long' has unknown type 'positon_quantity'"


def test_syntax_errors_carry_tomls_line() -> None:
    with pytest.raises(LimitsFileError, match=r"^limits.toml:3: invalid TOML"):
        parse_limits('[[limit]]\nname = "a"\ntype = = "x"\n', path="limits.toml")


def test_unknown_keys_are_rejected_at_their_line() -> None:
    text = TWO.replace('critical = "4"', 'critcal = "3"')
    with pytest.raises(LimitsFileError, match=r"^x:9: limit 'a' has unknown key 'critcal'$"):
        parse_limits(text, path="x")


def test_duplicate_names_point_at_the_second_definition() -> None:
    text = TWO
    with pytest.raises(LimitsFileError, match=r"^x:7: limit 'a' is defined twice \(first at line 1\)$"):
        parse_limits(text, path="x")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('critical = "-1"', "positive"),
        ('warn = "5"\ncritical = "3"', "above critical"),
        ('critical = "abc"', "not a number"),
        ('critical = "3"\nscope = "desk"', "expected one of firm, group, account"),
        ('critical = "3"\nscope = "group"', "no scope_ref"),
    ],
)
def test_semantic_errors_are_reported_per_limit(body: str, message: str) -> None:
    with pytest.raises(LimitsFileError, match=message):
        parse_limits(f'[[limit]]\nname = "a"\ntype = "leverage"\n{body}\n')


def test_price_deviation_without_reference_is_rejected() -> None:
    text = '[[limit]]\nname = "d"\ntype = "price_deviation"\nsymbol = "USDT-USD"\ncritical = "0.01"\n'
    with pytest.raises(LimitsFileError, match="requires 'reference'"):
        parse_limits(text)


def test_the_digest_ignores_order_formatting_and_number_spelling() -> None:
    a = (
        '[[limit]]\nname = "a"\ntype = "leverage"\ncritical = "3"\n'
        '[[limit]]\nname = "b"\ntype = "drawdown"\nwarn = 0.1\n'
    )
    b = (
        '# reordered\n[[limit]]\nname="b"\ntype="drawdown"\nwarn="0.10"\n\n'
        '[[limit]]\nname="a"\ntype="leverage"\ncritical=3\n'
    )
    changed = a.replace('critical = "3"', 'critical = "4"')
    assert limits_digest(parse_limits(a)) == limits_digest(parse_limits(b))
    assert limits_digest(parse_limits(a)) != limits_digest(parse_limits(changed))


def test_an_unreadable_file_is_a_limits_file_error(tmp_path: Path) -> None:
    with pytest.raises(LimitsFileError, match="cannot read"):
        load_limits(tmp_path / "missing.toml")
