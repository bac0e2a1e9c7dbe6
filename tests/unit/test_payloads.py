"""Venue payload parsing: aliases, per-record rejection, envelope errors, and a fuzz test."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.payloads import (
    MalformedResponse,
    ParseResult,
    parse_balances,
    parse_batch,
    parse_client_accounts,
    parse_exchange_accounts,
    parse_master_balance,
    parse_positions,
    parse_price,
    parse_segregated_balances,
    parse_settlements,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = "2025-03-01T11:59:00Z"


def body(doc: Any) -> str:
    return json.dumps(doc)


def position(**overrides: Any) -> dict[str, Any]:
    record = {"symbol": "BTC-USDT", "quantity": "1.5", "avg_price": "60000.10", "updated_at": EARLIER}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


def positions_body(*records: dict[str, Any], account_id: str = "acc-1") -> str:
    return body({"account_id": account_id, "as_of": EARLIER, "positions": list(records)})


def only_reason(result: ParseResult[Any]) -> str:
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0].reason


def test_position_values_are_exact_decimals_and_utc_times() -> None:
    result = parse_positions(positions_body(position(quantity=0.1, mark_price="61000")), now=NOW)
    [record] = result.accepted
    assert record.quantity == Decimal("0.1")  # parse_float=Decimal: no binary noise
    assert str(record.avg_price) == "60000.10"
    assert record.mark_price == Decimal(61000)
    assert record.updated_at == datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
    assert record.account_id == "acc-1"
    assert result.as_of == datetime(2025, 3, 1, 11, 59, tzinfo=UTC)


def test_position_aliases_amount_and_entry_price() -> None:
    raw = position(quantity=..., avg_price=..., amount="-2", entry_price="10")
    [record] = parse_positions(positions_body(raw), now=NOW).accepted
    assert (record.quantity, record.avg_price) == (Decimal(-2), Decimal(10))


def test_sign_of_quantity_wins_over_side() -> None:
    [record] = parse_positions(positions_body(position(quantity="-3", side="LONG")), now=NOW).accepted
    assert record.quantity == Decimal(-3)


def test_a_bad_record_is_rejected_with_a_reason_and_its_neighbours_kept() -> None:
    good1, bad, good2 = position(symbol="BTC-USDT"), position(quantity="abc"), position(symbol="ETH-USDT")
    result = parse_positions(positions_body(good1, bad, good2), now=NOW)
    assert [r.symbol for r in result.accepted] == ["BTC-USDT", "ETH-USDT"]
    assert result.rejected[0].raw == bad
    assert result.rejected[0].reason == "quantity 'abc' is not a decimal"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"quantity": "NaN"}, "quantity 'NaN' is not finite"),
        ({"quantity": "-Infinity"}, "quantity '-Infinity' is not finite"),
        ({"quantity": "1_000"}, "quantity '1_000' is not a decimal"),
        ({"quantity": True}, "quantity True is not a decimal"),
        ({"quantity": "1e30"}, "quantity '1e30' is out of range"),
        ({"avg_price": "-1"}, "avg_price -1 is negative"),
        ({"mark_price": "0"}, "mark_price 0 is not positive"),
        ({"symbol": ...}, "missing field 'symbol'"),
        ({"symbol": "btc usdt"}, "symbol 'btc usdt' is not a valid symbol"),
        ({"updated_at": "2025-03-01T12:01:00Z"}, "updated_at '2025-03-01T12:01:00Z' is in the future"),
        ({"updated_at": "2025-03-01T11:00:00"}, "updated_at '2025-03-01T11:00:00' has no UTC offset"),
        ({"updated_at": "yesterday"}, "updated_at 'yesterday' is not an RFC 3339 timestamp"),
    ],
)
def test_invalid_position_fields_are_named_in_the_reason(overrides: dict[str, Any], reason: str) -> None:
    result = parse_positions(positions_body(position(**overrides)), now=NOW)
    assert result.accepted == []
    assert only_reason(result) == reason


def test_nan_token_in_the_json_is_rejected_per_record() -> None:
    text = positions_body(position(quantity="<nan>")).replace('"<nan>"', "NaN")  # a bare NaN token
    assert only_reason(parse_positions(text, now=NOW)) == "quantity NaN is not finite"


def test_clock_skew_allowance_is_an_argument() -> None:
    raw = position(updated_at="2025-03-01T12:00:03+00:00")
    assert parse_positions(positions_body(raw), now=NOW).accepted
    assert not parse_positions(positions_body(raw), now=NOW, max_skew=timedelta(0)).accepted


def test_offsets_are_converted_to_utc() -> None:
    [record] = parse_positions(positions_body(position(updated_at="2025-03-01T13:30:00+02:00")), now=NOW).accepted
    assert record.updated_at == datetime(2025, 3, 1, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<html>bad gateway</html>", "body is not JSON (JSONDecodeError)"),
        ("[]", "top level is list, expected an object"),
        (body({"account_id": "a", "as_of": EARLIER}), "'positions' is missing or not a list"),
        (
            body({"account_id": "a", "as_of": EARLIER, "positions": {}}),
            "'positions' is missing or not a list",
        ),
        (body({"as_of": EARLIER, "positions": []}), "account_id None is not a valid identifier"),
        (body({"account_id": "a", "positions": []}), "missing field 'as_of'"),
        (
            body({"account_id": "a", "as_of": "2030-01-01T00:00:00Z", "positions": []}),
            "as_of '2030-01-01T00:00:00Z' is in the future",
        ),
    ],
)
def test_wholly_malformed_responses_raise(text: str, reason: str) -> None:
    with pytest.raises(MalformedResponse) as caught:
        parse_positions(text, now=NOW)
    assert caught.value.reason == reason


def test_response_for_another_account_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="does not match the requested 'acc-2'"):
        parse_positions(positions_body(position()), now=NOW, account_id="acc-2")


def test_non_object_records_are_rejected() -> None:
    result = parse_positions(positions_body(position(), 42), now=NOW)  # type: ignore[arg-type]
    assert len(result.accepted) == 1
    assert only_reason(result) == "record 42 is not an object"


def test_balance_aliases_and_default_total() -> None:
    doc = {
        "account_id": "acc-1",
        "as_of": EARLIER,
        "balances": [
            {"currency": "USDT", "free": "100.5", "used": "20"},
            {"symbol": "BTC", "available": 1, "locked": 0, "total": "1"},
        ],
    }
    usdt, btc = parse_balances(body(doc), now=NOW).accepted
    assert (usdt.asset, usdt.available, usdt.locked, usdt.total) == (
        "USDT",
        Decimal("100.5"),
        20,
        Decimal("120.5"),
    )
    assert (btc.asset, btc.total) == ("BTC", 1)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"asset": "USDT", "available": "-5", "locked": "0"}, "available -5 is negative"),
        (
            {"asset": "USDT", "available": "1", "locked": "1", "total": "3"},
            "total 3 != available 1 + locked 1",
        ),
        ({"asset": "USDT"}, "missing field 'available'"),
        ({"available": "1"}, "missing field 'asset'"),
    ],
)
def test_invalid_balances_are_rejected(record: dict[str, Any], reason: str) -> None:
    doc = {"account_id": "acc-1", "as_of": EARLIER, "balances": [record, {"asset": "BTC", "available": "1"}]}
    result = parse_balances(body(doc), now=NOW)
    assert [b.asset for b in result.accepted] == ["BTC"]
    assert only_reason(result) == reason


def test_accounts() -> None:
    doc = {
        "accounts": [
            {"account_id": "a1", "account_type": "SPOT", "status": "ACTIVE"},
            {"account_id": "a2", "account_type": "OPTIONS", "status": "ACTIVE"},
        ]
    }
    result = parse_exchange_accounts(body(doc), now=NOW)
    assert [(a.account_id, a.account_type) for a in result.accepted] == [("a1", "SPOT")]
    assert only_reason(result) == "account_type 'OPTIONS' is not one of SPOT, MARGIN, FUTURES"
    clients = parse_client_accounts(body({"accounts": [{"client_id": "c1", "status": "ACTIVE"}]}), now=NOW)
    assert clients.accepted[0].account_id == "c1"


def test_custody_master_and_segregated_balances() -> None:
    master = {"client_id": "c1", "as_of": EARLIER, "balances": [{"asset": "USDT", "available": "7"}]}
    [record] = parse_master_balance(body(master), now=NOW, client_id="c1").accepted
    assert (record.client_id, record.venue, record.total) == ("c1", None, 7)

    segregated = {
        "client_id": "c1",
        "as_of": EARLIER,
        "accounts": [
            {
                "venue": "ex1",
                "account_id": "a1",
                "balances": [{"asset": "BTC", "available": "2"}, {"asset": "ETH"}],
            },
            {"venue": "ex2", "balances": []},
            {
                "venue": "ex2",
                "account_id": "a2",
                "balances": [{"asset": "SOL", "available": "3", "locked": "1"}],
            },
        ],
    }
    result = parse_segregated_balances(body(segregated), now=NOW)
    assert [(r.venue, r.account_id, r.asset, r.total) for r in result.accepted] == [
        ("ex1", "a1", "BTC", 2),
        ("ex2", "a2", "SOL", 4),
    ]
    assert [r.reason for r in result.rejected] == [
        "ex1/a1: missing field 'available'",
        "missing field 'account_id'",
    ]


def test_settlements() -> None:
    doc = {
        "as_of": EARLIER,
        "settlements": [
            {
                "settlement_id": "s1",
                "account_id": "a1",
                "currency": "USDT",
                "amount": "-250.5",
                "initiated_at": "2025-02-28T09:00:00Z",
                "expected_settlement_date": "2025-03-03",
            },
            {"settlement_id": "s2", "account_id": "a1", "asset": "USDT", "quantity": "1"},
        ],
    }
    result = parse_settlements(body(doc), now=NOW)
    [record] = result.accepted
    assert (record.asset, record.quantity, record.expected_settlement_date) == (
        "USDT",
        Decimal("-250.5"),
        date(2025, 3, 3),
    )
    assert only_reason(result) == "missing field 'initiated_at'"


def test_price_from_a_double_uses_the_shortest_round_trip_decimal() -> None:
    record = parse_price(
        {"symbol": "ETH-USDT", "price": 0.1 + 0.2, "volume": 3.0, "timestamp": NOW, "source": "md"}, now=NOW
    )
    assert record.price == Decimal("0.30000000000000004")
    assert record.volume == Decimal("3.0")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(
    [
        "account_id",
        "client_id",
        "as_of",
        "positions",
        "balances",
        "accounts",
        "settlements",
        "symbol",
        "quantity",
    ]
)
envelopes = st.fixed_dictionaries(
    {"account_id": st.just("a1"), "client_id": st.just("c1"), "as_of": st.just(EARLIER)},
    optional={
        "positions": st.lists(st.dictionaries(field_names | st.text(max_size=12), json_values, max_size=8)),
        "balances": st.lists(json_values),
        "accounts": st.lists(json_values),
        "settlements": st.lists(json_values),
    },
)
PARSERS = [
    parse_positions,
    parse_balances,
    parse_master_balance,
    parse_segregated_balances,
    parse_settlements,
    parse_exchange_accounts,
    parse_client_accounts,
]


@settings(max_examples=150, deadline=None)
@given(doc=json_values | envelopes, raw_text=st.text(max_size=50) | st.binary(max_size=50))
def test_arbitrary_input_never_raises_anything_but_malformed_response(doc: Any, raw_text: str | bytes) -> None:
    for parse in PARSERS:
        for text in (json.dumps(doc), raw_text):
            try:
                result = parse(text, now=NOW)  # type: ignore[operator]
            except MalformedResponse:
                continue
            assert isinstance(result, ParseResult)


# -- batched responses ----------------------------------------------------------------------------------


def _parse_positions_batch(doc: Any, requested: list[str]) -> Any:
    return parse_batch(
        json.dumps(doc),
        id_key="account_id",
        requested=requested,
        parse_one=lambda entry, key: parse_positions(entry, now=NOW, account_id=key),
    )


def _entry(account_id: str, *records: dict[str, Any]) -> dict[str, Any]:
    return {"account_id": account_id, "as_of": EARLIER, "positions": list(records)}


def test_a_batch_is_split_per_requested_account_with_the_single_account_parser() -> None:
    bad = position(quantity="NaN")
    doc = {"as_of": EARLIER, "results": [_entry("a1", position()), _entry("a2", position(symbol="ETH-USDT"), bad)]}
    got = _parse_positions_batch(doc, ["a1", "a2"])
    assert sorted(got.results) == ["a1", "a2"]
    assert [p.symbol for p in got.results["a2"].accepted] == ["ETH-USDT"]
    assert [r.reason for r in got.results["a2"].rejected] == ["quantity 'NaN' is not finite"]  # per record, as alone
    assert (got.failures, got.rejected) == ({}, [])


def test_a_batch_entry_fails_alone_and_stray_entries_are_rejected() -> None:
    doc = {
        "as_of": EARLIER,
        "results": [
            _entry("a1", position()),
            {"account_id": "a2", "error": {"code": "NOT_FOUND", "message": "no account a2"}},
            {"account_id": "a3", "as_of": EARLIER},  # no positions list: malformed as a whole
            _entry("zz", position()),  # nobody asked for it
            _entry("a1", position(quantity="9")),  # a second answer for a1
            "junk",
        ],
    }
    got = _parse_positions_batch(doc, ["a1", "a2", "a3", "a4"])
    assert [p.quantity for p in got.results["a1"].accepted] == [Decimal("1.5")]  # the first answer counts
    assert got.failures == {
        "a2": "venue error: 'no account a2'",
        "a3": "'positions' is missing or not a list",
        "a4": "missing from the batch response",
    }
    assert [r.reason for r in got.rejected] == [
        "batch account_id 'zz' was not requested",
        "batch account_id 'a1' appears twice in the batch",
        "batch entry 'junk' was not requested",
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "top level is list, expected an object"),
        ('{"as_of": "2025-03-01T11:59:00Z"}', "'results' is missing or not a list"),
        ("nope", "body is not JSON"),
    ],
)
def test_a_wholly_malformed_batch_raises(text: str, reason: str) -> None:
    with pytest.raises(MalformedResponse, match=reason):
        parse_batch(text, id_key="account_id", requested=["a1"], parse_one=lambda entry, key: entry)
