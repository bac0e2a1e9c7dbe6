"""State that must survive a restart (P&L marks), the book loader's sources, and bounded-rate history."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from models.risk import Limit, LimitType, Position, Scope, evaluate, fast_index
from services import database
from services.book_loader import BookCache, LoadedBook, load_book
from services.evaluation import HistoryState, run_evaluation
from services.limits_store import current_limits, sync_limits
from services.snapshot_store import AccountSnapshot, RunRecord
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
    kept = cache.positions[first.account_ids["ex:b"]].items
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
    assert cache.positions[first.account_ids["ex:b"]].items is kept
    assert cached.data_times == uncached.data_times
    assert cached.data_times["ex:a"] == later


def test_a_moved_head_with_the_same_contents_keeps_the_rows_and_any_content_change_is_seen(
    fresh_engine: Engine,
) -> None:
    """The loader keeps an account's built rows when its new snapshot repeats the kept content (every column
    but observed_at). Anything else must be rebuilt: a different quantity at the very same observed_at, an
    average price alone, a locked balance with the same total."""
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.prices("md", {"BTC-USD": "100", "ETH-USD": "10"}, T0)
    for account in ("a", "b", "c", "d"):
        v.positions("ex", account, {"BTC-USD-SWAP": ("1.5", "90"), "ETH-USD-SWAP": ("-2", "11")}, T0, collected=T0)
        v.balances("ex", account, {"USD": "1000"}, T0, collected=T0)
    # low thresholds: every account's figures are emitted, so a stale row would show in the values
    limits = [
        Limit("gross", LimitType.GROSS_NOTIONAL, per_account=True, warn=Decimal(1)),
        Limit("leverage", LimitType.LEVERAGE, per_account=True, warn=Decimal("0.01")),
    ]
    cache = BookCache()
    first = load_book(fresh_engine, cache=cache)
    evaluate(first.book, limits, T0)  # builds the index the next book patches
    ids = first.account_ids
    before = {a: first.book.positions[a] for a in ("ex:a", "ex:b", "ex:c", "ex:d")}
    balances_before = first.book.balances["ex:d"]

    later, observed = T0 + timedelta(seconds=5), T0 + timedelta(seconds=4)
    same = {"BTC-USD-SWAP": ("1.5", "90"), "ETH-USD-SWAP": ("-2", "11")}
    v.positions("ex", "a", same, observed, collected=later)  # a new snapshot with the same content
    v.positions("ex", "b", {**same, "BTC-USD-SWAP": ("2.5", "90")}, T0, collected=later)  # same observed_at
    v.positions("ex", "c", {**same, "BTC-USD-SWAP": ("1.5", "95")}, observed, collected=later)  # avg price only
    v.balances("ex", "a", {"USD": "1000"}, observed, collected=later)  # same
    account_d = ids["ex:d"]
    v.store.write_snapshots(
        RunRecord("collect_balances", "ex", "balances", later, later),
        later,
        [AccountSnapshot(account_d, observed, [("USD", Decimal(1000), Decimal(400), Decimal(1000), observed)])],
    )

    cached = load_book(fresh_engine, cache=cache)
    fresh = load_book(fresh_engine)
    positions = cached.book.positions
    assert positions["ex:a"] is before["ex:a"]  # nothing built for a repeated content
    assert cached.book.balances["ex:a"] is first.book.balances["ex:a"]
    assert cached.data_times["ex:a"] == observed == fresh.data_times["ex:a"]  # times come from the new rows
    assert cached.positions_as_of["ex:a"] == later == fresh.positions_as_of["ex:a"]
    assert cached.book.freshness == fresh.book.freshness
    assert positions["ex:b"] is not before["ex:b"]
    assert [p.quantity for p in positions["ex:b"]] == [Decimal("2.5"), Decimal(-2)]
    assert [p.avg_price for p in positions["ex:c"]] == [Decimal(95), Decimal(11)]
    assert [(b.locked, b.available) for b in cached.book.balances["ex:d"]] == [(Decimal(400), Decimal(1000))]
    assert cached.book.balances["ex:d"] is not balances_before
    assert positions["ex:d"] is before["ex:d"]  # head not moved

    def content(loaded: LoadedBook) -> dict[str, list[tuple[object, ...]]]:
        return {
            a: [(p.symbol, p.quantity, p.avg_price, p.mark_price, p.realized_pnl, p.kind) for p in ps]
            for a, ps in loaded.book.positions.items()
        }

    assert content(cached) == content(fresh)
    assert [(b.asset, b.available, b.locked, b.total) for b in cached.book.balances["ex:d"]] == [
        (b.asset, b.available, b.locked, b.total) for b in fresh.book.balances["ex:d"]
    ]
    # the patched index of the kept book evaluates exactly like a fresh book
    kept_checks = evaluate(cached.book, limits, later).checks
    assert isinstance(cached.book.index_cache.get("fast"), fast_index.BookIndex)
    assert [(c.fingerprint, c.level, c.value) for c in kept_checks] == [
        (c.fingerprint, c.level, c.value) for c in evaluate(fresh.book, limits, later).checks
    ]
    values = {(c.limit.name, c.subject.scope_key): c.value for c in kept_checks}
    assert [values["gross", a] for a in ("ex:a", "ex:b", "ex:c")] == [Decimal(170), Decimal(270), Decimal(170)]
    # equity = 1000 + unrealized P&L of the perpetuals: 1017 with avg 90, 1009.5 with avg 95 (less equity)
    assert values["leverage", "ex:c"] > values["leverage", "ex:a"] > Decimal("0.167")


def test_positions_whose_marks_moved_keep_their_other_values_and_evaluate_like_a_fresh_read(
    fresh_engine: Engine,
) -> None:
    """Venues report marks that move every poll: a row that differs from the kept one only in its mark keeps
    the kept row's other values (the same Decimals); an average price taken from the mark, or any other
    changed column, is rebuilt. The kept book then evaluates exactly like a fresh read."""
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.prices("md", {"BTC-USD": "100", "ETH-USD": "10"}, T0)
    ids = {account: v.account_id("ex", account) for account in ("a", "b", "c")}

    def number(text: str | None) -> Decimal | None:
        return None if text is None else Decimal(text)

    def poll(at: datetime, rows: dict[str, list[tuple[str, str, str | None, str | None]]]) -> None:
        """rows: account -> (symbol, quantity, avg_price, mark_price)"""
        batch = [
            AccountSnapshot(ids[account], at, [(s, Decimal(q), number(a), number(m), None, at) for s, q, a, m in items])
            for account, items in rows.items()
        ]
        v.store.write_snapshots(RunRecord("collect_positions", "ex", "positions", at, at), at, batch)
        v.balances("ex", "a", {"USD": "1000"}, at, collected=at)

    poll(
        T0,
        {
            "a": [("BTC-USD-SWAP", "1.5", "90", "100.00"), ("ETH-USD-SWAP", "-2", "11", None)],
            "b": [("BTC-USD-SWAP", "1", None, "100")],  # no average price: the mark stands in
            "c": [("BTC-USD-SWAP", "1", "90", "100"), ("ETH-USD-SWAP", "3", "9", "10")],
        },
    )
    limits = [
        Limit("gross", LimitType.GROSS_NOTIONAL, per_account=True, warn=Decimal(1)),
        Limit("pnl", LimitType.DAILY_LOSS, per_account=True, warn=Decimal(1)),
    ]
    cache = BookCache()
    first = load_book(fresh_engine, cache=cache)
    evaluate(first.book, limits, T0)  # builds the index the next book patches
    before = first.book.positions

    later = T0 + timedelta(seconds=1)
    poll(
        later,
        {
            "a": [("BTC-USD-SWAP", "1.5", "90", "101.250"), ("ETH-USD-SWAP", "-2", "11", "12")],  # marks only
            "b": [("BTC-USD-SWAP", "1", None, "105")],
            "c": [("BTC-USD-SWAP", "2", "90", "101"), ("ETH-USD-SWAP", "3", "9", "11")],  # one quantity too
        },
    )
    cached = load_book(fresh_engine, cache=cache)
    fresh = load_book(fresh_engine)
    positions = cached.book.positions

    def content(loaded: LoadedBook) -> dict[str, list[tuple[object, ...]]]:
        """Every field, Decimals with their exponents (== ignores them)."""
        return {
            account: [tuple(repr(getattr(p, f.name)) for f in fields(Position)) for p in rows]
            for account, rows in loaded.book.positions.items()
        }

    assert content(cached) == content(fresh)
    a0, a1 = positions["ex:a"]
    assert (a0.mark_price, a1.mark_price, a0.observed_at) == (Decimal("101.250"), Decimal(12), later)
    assert a0.quantity is before["ex:a"][0].quantity
    assert a0.cost is before["ex:a"][0].cost
    assert positions["ex:b"][0].avg_price == Decimal(105)  # rebuilt from the new mark
    c0, c1 = positions["ex:c"]
    assert c0.quantity == Decimal(2)
    assert c0.quantity is not before["ex:c"][0].quantity
    assert c1.quantity is before["ex:c"][1].quantity
    kept_checks = evaluate(cached.book, limits, later).checks
    assert isinstance(cached.book.index_cache.get("fast"), fast_index.BookIndex)
    assert [(c.fingerprint, c.level, c.value) for c in kept_checks] == [
        (c.fingerprint, c.level, c.value) for c in evaluate(fresh.book, limits, later).checks
    ]
    values = {(c.limit.name, c.subject.scope_key): c.value for c in kept_checks}
    # venue marks price the positions: 1.5 × 101.25 + 2 × 12 (the ETH row had no mark before)
    assert values["gross", "ex:a"] == Decimal("175.875")
