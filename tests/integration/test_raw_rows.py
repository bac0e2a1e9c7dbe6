"""Bulk reads through the driver: every row, in order, across the GIL-friendly fetch chunks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine

from services.raw_rows import FETCH_CHUNK, fetch_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("count", [0, 1, FETCH_CHUNK, FETCH_CHUNK + 1, 2 * FETCH_CHUNK + 7])
def test_fetch_all_returns_every_row_in_order_across_chunks(engine: Engine, count: int) -> None:
    sql = "SELECT g, (g / 4.0)::numeric(38, 18) FROM generate_series(1, %(n)s) g ORDER BY g"
    with engine.connect() as conn:
        rows = fetch_all(conn, sql, {"n": count})
        as_text = fetch_all(conn, sql, {"n": min(count, 3)}, numeric_as_text=True)
    assert [g for g, _ in rows] == list(range(1, count + 1))
    assert all(isinstance(q, Decimal) and q == Decimal(g) / 4 for g, q in rows)
    assert [q for _, q in as_text] == [f"{g / 4:.18f}" for g in range(1, min(count, 3) + 1)]
