"""Invariants of the exposure arithmetic over generated books."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from models.risk import InstrumentKind, build_book, concentration, evaluate
from models.risk.exposure import gross_by_asset
from tests.factories import NOW, position, price

quantities = st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False)
marks = st.decimals(min_value="0.01", max_value=100000, places=2, allow_nan=False, allow_infinity=False)
legs = st.lists(
    st.tuples(
        quantities,
        marks,
        st.sampled_from(["BTC-USDT", "ETH-USDT", "SOL-USD"]),
        st.sampled_from(["a:1", "b:2", "c:3"]),
        st.sampled_from(list(InstrumentKind)),
    ),
    max_size=12,
)
PRICES = [price("USDT-USD", "0.9997")]


def positions(data):  # type: ignore[no-untyped-def]
    return [position(str(q), str(m), symbol=s, account=a, kind=k, delta="0.5") for q, m, s, a, k in data]


@settings(max_examples=60, deadline=None)
@given(legs)
def test_gross_is_at_least_the_absolute_net_in_every_scope(data) -> None:  # type: ignore[no-untyped-def]
    result = evaluate(build_book(positions=positions(data), prices=PRICES), [], NOW)
    for exposure in result.exposures.values():
        assert exposure.gross >= abs(exposure.net)


@settings(max_examples=60, deadline=None)
@given(legs)
def test_gross_is_unchanged_and_net_flips_when_every_position_flips_side(data) -> None:  # type: ignore[no-untyped-def]
    book = build_book(positions=positions(data), prices=PRICES)
    flipped = build_book(positions=[replace(p, quantity=-p.quantity) for p in positions(data)], prices=PRICES)
    a, b = evaluate(book, [], NOW).exposures["firm"], evaluate(flipped, [], NOW).exposures["firm"]
    assert (a.gross, a.net) == (b.gross, -b.net)


@settings(max_examples=60, deadline=None)
@given(legs)
def test_concentration_is_a_share_of_gross(data) -> None:  # type: ignore[no-untyped-def]
    firm = evaluate(build_book(positions=positions(data), prices=PRICES), [], NOW).exposures["firm"]
    key, share = concentration(gross_by_asset(firm))
    assert Decimal(0) <= share <= Decimal(1)
    assert (key is None) == (firm.gross == 0)


@settings(max_examples=60, deadline=None)
@given(legs)
def test_firm_totals_are_the_sum_of_account_totals(data) -> None:  # type: ignore[no-untyped-def]
    result = evaluate(build_book(positions=positions(data), prices=PRICES), [], NOW)
    accounts = [e for k, e in result.exposures.items() if k != "firm" and not k.startswith("group:")]
    firm = result.exposures["firm"]
    assert firm.gross == sum((e.gross for e in accounts), Decimal(0))
    assert firm.equity == sum((e.equity for e in accounts), Decimal(0))
