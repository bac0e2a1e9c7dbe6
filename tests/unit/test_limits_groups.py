"""The optional [groups] table of the limits file."""

from __future__ import annotations

import pytest

from services.limits_file import LimitsFileError, parse_groups, parse_limits

DOCUMENT = """
[groups]
market-making = ["binance:acct-1", "okx:mm-2", "binance:acct-1"]

[[limit]]
name = "mm-gross"
type = "gross_notional"
scope = "group"
scope_ref = "market-making"
critical = "100"
"""


def test_groups_map_names_to_member_account_keys_without_duplicates() -> None:
    assert parse_groups(DOCUMENT) == {"market-making": ("binance:acct-1", "okx:mm-2")}
    assert [limit.name for limit in parse_limits(DOCUMENT)] == ["mm-gross"]  # [groups] is not an unknown key


def test_a_member_that_is_not_a_venue_account_key_is_rejected_with_its_line() -> None:
    with pytest.raises(LimitsFileError) as err:
        parse_groups('\n[groups]\ndesk = ["acct-1"]\n', path="limits.toml")
    assert str(err.value) == "limits.toml:3: group 'desk' has 'acct-1'; expected \"<venue>:<account id>\""


def test_a_file_without_groups_has_none() -> None:
    assert parse_groups('[[limit]]\nname = "x"\ntype = "leverage"\nwarn = "3"\n') == {}
