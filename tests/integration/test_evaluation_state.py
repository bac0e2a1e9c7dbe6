"""State that must survive a restart (P&L marks), the book loader's sources, and bounded-rate history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from models.risk import Limit, LimitType, Scope
from services import database
from services.book_loader import BookCache, LoadedBook, load_book
from services.evaluation import HistoryState, run_evaluation
from services.limits_store import current_limits, sync_limits
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
DRAWDOWN = Limit("acct-drawdown", LimitType.DRAWDOWN, per_account=True, warn=Decimal("0.1"), critical=Decimal("0.2"))


def test_the_high_water_mark_survives_a_restart(fresh_engine: Engine, fresh_database_url: str) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.balances("ex", "acct", {"USD": "10000"}, T0, collected=T0)
    with fresh_engine.begin() as conn:
        sync_limits(conn, [DRAWDOWN], now=T0 - timedelta(days=1), changed_by="test")
        limits = current_limits(conn)
    assert run_evaluation(fresh_engine, limits, T0 + timedelta(seconds=1)).events == []
    fresh_engine.dispose()

    # "restart": a new engine and no in-process state; equity falls 15 % below the mark set before
    restarted = database.make_engine(fresh_database_url, pool_size=1)
    try:
        at = T0 + timedelta(minutes=1)
        Venues.on(restarted).balances("ex", "acct", {"USD": "8500"}, at, collected=at)
        result = run_evaluation(restarted, limits, at + timedelta(seconds=1))
        with restarted.connect() as conn:
            hwm = conn.scalar(text("SELECT high_water_mark FROM pnl_marks WHERE scope = 'ex:acct'"))
    finally:
        restarted.dispose()
    [event] = result.events
    assert (event.alert.limit_name, event.alert.severity.value) == ("acct-drawdown", "warning")
    assert event.alert.observed_value == Decimal("0.15")
    assert hwm == Decimal(10000)


def test_book_loader_takes_groups_and_falls_back_to_collection_runs_for_freshness(fresh_engine: Engine) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.balances("ex", "a", {"USD": "1"}, T0 - timedelta(seconds=5), collected=T0)
    v.balances("ex", "b", {"USD": "1"}, T0 - timedelta(seconds=5), collected=T0 + timedelta(seconds=1))
    v.prices("md", {"BTC-USD": "1"}, T0 + timedelta(seconds=2))
    loaded = load_book(fresh_engine, groups={"desk": ("ex:a", "ex:zz")})
    book = loaded.book
    assert set(book.accounts) == {"ex:a", "ex:b"}
    assert book.groups == {"desk": ("ex:a",)}
    # finished_at of the newest successful run per (venue, kind); the later balance run wins
    assert book.freshness[("ex", "balances")] == T0 + timedelta(seconds=1)
    assert book.freshness[("md", "prices")] == T0 + timedelta(seconds=2)
    injected = load_book(fresh_engine, freshness=lambda: {("ex", "positions"): T0})
    assert injected.book.freshness[("ex", "positions")] == T0
    assert loaded.data_as_of == T0 + timedelta(seconds=2)


def test_group_limits_use_the_groups_given_to_the_evaluation(fresh_engine: Engine) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.prices("md", {"BTC-USD": "100"}, T0)
    for account in ("a", "b", "c"):
        v.positions("ex", account, {"BTC-USD": ("1", "100")}, T0, collected=T0)
    limit = Limit("desk-gross", LimitType.GROSS_NOTIONAL, scope=Scope.GROUP, scope_ref="desk", warn=Decimal(150))
    with fresh_engine.begin() as conn:
        sync_limits(conn, [limit], now=T0, changed_by="test")
        limits = current_limits(conn)
    result = run_evaluation(fresh_engine, limits, T0 + timedelta(seconds=1), groups={"desk": ("ex:a", "ex:b")})
    [event] = result.events
    assert (event.alert.subject, event.alert.observed_value) == ("scope=group:desk", Decimal(200))


def test_risk_history_is_written_only_when_due_and_only_for_changed_accounts(fresh_engine: Engine) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    for account in ("a", "b"):
        v.balances("ex", account, {"USD": "100"}, T0, collected=T0)
    history = HistoryState(every_s=60)
    assert run_evaluation(fresh_engine, [], T0, history=history).history_rows == 2
    assert run_evaluation(fresh_engine, [], T0 + timedelta(seconds=30), history=history).history_rows == 0  # not due
    v.balances("ex", "a", {"USD": "150"}, T0 + timedelta(seconds=40), collected=T0 + timedelta(seconds=40))
    assert run_evaluation(fresh_engine, [], T0 + timedelta(seconds=61), history=history).history_rows == 1
    with fresh_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT ac.external_id, h.equity FROM account_risk_history h JOIN accounts ac ON ac.id = h.account_id"
                " ORDER BY h.recorded_at, ac.external_id"
            )
        ).all()
    assert [tuple(r) for r in rows] == [("a", Decimal(100)), ("b", Decimal(100)), ("a", Decimal(150))]


def test_a_cached_read_rebuilds_only_moved_accounts_and_equals_a_fresh_read(fresh_engine: Engine) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    for n, account in enumerate(("a", "b", "c", "d", "e")):
        v.positions("ex", account, {"BTC-USD": (str(n + 1), "100")}, T0, collected=T0)
        v.balances("ex", account, {"USD": "100"}, T0, collected=T0)
    cache = BookCache()
    first = load_book(fresh_engine, cache=cache)
    kept = cache.positions[first.account_ids["ex:b"]][1]
    later = T0 + timedelta(seconds=5)
    v.positions("ex", "a", {"BTC-USD": ("7", "100"), "ETH-USD": ("-2", "10")}, later, collected=later)
    v.positions("ex", "c", {}, later, collected=later)  # all closed: an empty book, not the cached one

    cached = load_book(fresh_engine, cache=cache)
    uncached = load_book(fresh_engine)

    def book(loaded: LoadedBook) -> dict[str, list[tuple[str, Decimal]]]:
        return {a: sorted((p.symbol, p.quantity) for p in ps) for a, ps in loaded.book.positions.items()}

    assert book(cached) == book(uncached)
    assert book(cached) == {
        "ex:a": [("BTC-USD", Decimal(7)), ("ETH-USD", Decimal(-2))],
        "ex:b": [("BTC-USD", Decimal(2))],
        "ex:d": [("BTC-USD", Decimal(4))],
        "ex:e": [("BTC-USD", Decimal(5))],
    }
    # 2 of 5 heads moved: only those were fetched; an unchanged head's rows are reused, not rebuilt
    assert cache.positions[first.account_ids["ex:b"]][1] is kept
    assert cached.data_times == uncached.data_times
    assert cached.data_times["ex:a"] == later
