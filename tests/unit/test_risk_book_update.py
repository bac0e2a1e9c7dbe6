"""A book updated from the previous one (shared mappings, patched fast-path index) equals a fresh build.

The previous book is random and evaluated once (so it has an index); the next one keeps the very same row
tuples for some accounts and takes new random rows for the others, as the evaluation job's loader does when
some snapshot heads moved. Its index must equal a fresh build array for array, and its evaluation must
equal the reference on a freshly built book.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from itertools import chain
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.risk import PriceTick, RiskBook, apply_tick, build_book, evaluate, reference, update_book
from models.risk.fast_index import BookIndex, book_index, indexes
from tests.factories import NOW, balance, position, price
from tests.unit.test_risk_fast_path import ACCOUNTS, _assert_same, books, scenarios


def _fields(index: BookIndex) -> dict[str, Any]:
    skip = {
        "positions_map",
        "balances_map",
        "accounts_map",
        "custody_map",
        "subjects",
        "instrument_subjects",
        "reconciled",
        "memo",
    }
    return {name: getattr(index, name) for name in BookIndex.__slots__ if name not in skip}  # type: ignore[attr-defined]


def _assert_same_index(patched: BookIndex, fresh: BookIndex) -> None:
    got, want = _fields(patched), _fields(fresh)
    assert got.keys() == want.keys()
    # Codes are numbered in first-appearance order, so a patched index may number a pair differently from a
    # fresh build: compare what the codes mean, and every other array as it is.
    for name, expected in want.items():
        if name in ("pair_codes", "asset_codes"):
            continue
        mine, value = got[name], expected
        if name in ("p_pair", "inst_pair_code"):
            mine, value = [patched.pairs[c] for c in mine], [fresh.pairs[c] for c in value]
        elif name in ("p_quote", "p_base", "b_asset", "inst_base_code"):
            mine, value = [patched.assets[c] for c in mine], [fresh.assets[c] for c in value]
        if isinstance(value, np.ndarray):
            assert isinstance(mine, np.ndarray), name
            assert mine.dtype == value.dtype, name
            if value.dtype == object:
                assert [v.as_tuple() for v in mine] == [v.as_tuple() for v in value], name
            else:
                assert np.array_equal(mine, value), name
        else:
            assert mine == value, name


MARKS = st.sampled_from([None, Decimal("101.5"), Decimal("101.50"), Decimal("0.001"), Decimal("65000")])


@st.composite
def updates(draw: Any) -> tuple[Any, Any, Any, set[str], set[str], bool, dict[str, Decimal | None]]:
    before = draw(books())
    after, marks, limits = draw(scenarios())
    if draw(st.booleans()):  # same prices: exact figures of unmoved accounts carry over from the last run
        after = {**after, "prices": before["prices"]}
    moved_positions = draw(st.sets(st.sampled_from(ACCOUNTS)))
    moved_balances = draw(st.sets(st.sampled_from(ACCOUNTS)))
    restamped = draw(st.sets(st.sampled_from(ACCOUNTS)))  # a new snapshot, same contents, later time
    # a new snapshot whose positions differ only in the venue's mark price (set, moved or dropped)
    remarked = draw(st.dictionaries(st.sampled_from(ACCOUNTS), MARKS))
    return before, (after, marks, limits), restamped, moved_positions, moved_balances, draw(st.booleans()), remarked


def _by_account(rows: Any) -> dict[str, tuple[Any, ...]]:
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row.account, []).append(row)
    return {account: tuple(items) for account, items in out.items()}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(updates())
def test_an_updated_book_equals_a_fresh_build(update: Any) -> None:
    before, (after, marks, limits), restamped, moved_positions, moved_balances, new_custody, remarked = update
    previous = build_book(**before)
    evaluate(previous, limits, NOW)  # builds the index the update patches
    new_positions, new_balances = _by_account(after["positions"]), _by_account(after["balances"])
    later = NOW + timedelta(seconds=1)
    positions = {
        a: tuple(replace(p, observed_at=later) for p in rows) if a in restamped else rows
        for a, rows in previous.positions.items()
        if a not in moved_positions
    }
    positions.update(
        {a: tuple(replace(p, mark_price=mark) for p in positions[a]) for a, mark in remarked.items() if a in positions}
    )
    positions.update({a: new_positions[a] for a in moved_positions if a in new_positions})
    balances = {
        a: tuple(replace(b, observed_at=later) for b in rows) if a in restamped else rows
        for a, rows in previous.balances.items()
        if a not in moved_balances
    }
    balances.update({a: new_balances[a] for a in moved_balances if a in new_balances})
    custody = after["custody"] if new_custody else before["custody"]
    fresh = build_book(
        accounts=before["accounts"],
        positions=chain.from_iterable(positions.values()),
        balances=chain.from_iterable(balances.values()),
        prices=after["prices"],
        custody=custody,
        settlements=after["settlements"],
        marks=marks,
    )
    updated = update_book(
        previous,
        positions=positions,
        balances=balances,
        custody=custody,
        settlements=after["settlements"],
        prices=after["prices"],
        freshness=fresh.freshness,
        marks=marks,
    )
    assert updated == fresh
    assert dict(updated.accounts_by_asset) == dict(fresh.accounts_by_asset)
    assert dict(updated.accounts_by_pair) == dict(fresh.accounts_by_pair)
    _assert_same(evaluate(updated, limits, NOW), reference.evaluate(fresh, limits, NOW))
    # again: every exact figure now comes from the last run; then after one price moved
    _assert_same(evaluate(updated, limits, NOW), reference.evaluate(fresh, limits, NOW))
    tick = PriceTick(price("ETH-USDT", "1234.5"))
    _assert_same(
        evaluate(apply_tick(updated, tick), limits, NOW), reference.evaluate(apply_tick(fresh, tick), limits, NOW)
    )
    index = book_index(updated)
    assert indexes(index, updated)
    _assert_same_index(index, book_index(fresh))


def test_an_update_that_moves_nothing_shares_the_mappings_and_the_index() -> None:
    rows = [position("2", None, account=ACCOUNTS[0]), position("-1", "50", symbol="ETH-USDT", account=ACCOUNTS[1])]
    previous = build_book(positions=rows, balances=[balance(account=ACCOUNTS[0])])
    evaluate(previous, [], NOW)
    index = book_index(previous)
    updated = update_book(
        previous,
        positions=dict(previous.positions),  # a new mapping holding the same tuples: nothing moved
        balances=dict(previous.balances),
        custody=(),
        settlements=(),
        prices=[],
        freshness=previous.freshness,
        marks={},
    )
    assert updated.positions is previous.positions
    assert updated.balances is previous.balances
    assert book_index(updated) is index


def test_an_update_naming_an_unknown_account_is_refused() -> None:
    previous = build_book(positions=[position(account=ACCOUNTS[0])])
    stranger = position(account="kraken:new")
    with pytest.raises(ValueError, match="kraken:new"):
        update_book(
            previous,
            positions={**previous.positions, "kraken:new": (stranger,)},
            balances=previous.balances,
            custody=(),
            settlements=(),
            prices=[],
            freshness={},
            marks={},
        )


def test_a_book_kept_between_passes_does_not_keep_its_predecessors_alive() -> None:
    """The job keeps one book; every update replaces it. Nothing of an updated book may refer back to the
    book it came from (a lazy index once did: memory grew by a whole book per pass, 2.7 GB in a 10-minute soak)."""

    def books_alive() -> int:
        gc.collect()
        return sum(type(o) is RiskBook for o in gc.get_objects())

    before = books_alive()
    book = build_book(positions=[position("2", None, account=ACCOUNTS[0])], balances=[balance(account=ACCOUNTS[0])])
    for step in range(5):
        moved = position(str(step + 3), None, account=ACCOUNTS[0])
        book = update_book(
            book,
            positions={ACCOUNTS[0]: (moved,)},
            balances=dict(book.balances),
            custody=(),
            settlements=(),
            prices=[],
            freshness=book.freshness,
            marks={},
        )
        assert book.accounts_by_pair  # the lazy tick indexes are built (they are what held the old book)
        evaluate(book, [], NOW)
    assert books_alive() == before + 1  # this one
