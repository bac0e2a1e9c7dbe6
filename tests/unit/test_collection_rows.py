"""Venue records -> snapshot rows: the pure mapping of services.collection_rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from models.payloads import BalanceRecord, CustodyBalanceRecord, PositionRecord, Rejected, SettlementRecord
from services.collection_rows import (
    balance_rows,
    custody_rows,
    failure_summary,
    position_rows,
    rejections,
    settlement_upserts,
    stale_symbols,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _position(symbol: str, qty: str) -> PositionRecord:
    return PositionRecord("acc-1", symbol, Decimal(qty), Decimal(100), T0, Decimal(101), Decimal("-2.5"))


def test_position_rows_follow_the_snapshot_column_order() -> None:
    rows, rejected = position_rows([_position("BTC-USDT", "-1.25"), _position("ETH-USDT", "3")])
    assert rows == [
        ("BTC-USDT", Decimal("-1.25"), Decimal(100), Decimal(101), Decimal("-2.5"), T0),
        ("ETH-USDT", Decimal(3), Decimal(100), Decimal(101), Decimal("-2.5"), T0),
    ]
    assert rejected == []


def test_a_second_position_in_one_symbol_is_rejected_not_fatal() -> None:
    rows, rejected = position_rows([_position("BTC-USDT", "1"), _position("BTC-USDT", "-1")])
    assert [r[1] for r in rows] == [Decimal(1)]
    [bad] = rejected
    assert bad.reason == "acc-1: duplicate position in BTC-USDT"
    assert bad.payload["quantity"] == Decimal(-1)


def test_balance_rows_carry_the_envelope_time() -> None:
    records = [
        BalanceRecord("acc-1", "USDT", Decimal(10), Decimal(2), Decimal(12)),
        BalanceRecord("acc-1", "USDT", Decimal(1), Decimal(0), Decimal(1)),
    ]
    rows, rejected = balance_rows(records, T0)
    assert rows == [("USDT", Decimal(10), Decimal(2), Decimal(12), T0)]
    assert [r.reason for r in rejected] == ["acc-1: duplicate balance in USDT"]


def test_custody_rows_map_master_and_segregated_balances_to_held_accounts() -> None:
    master = CustodyBalanceRecord("client-1", "BTC", Decimal(10), Decimal(0), Decimal(10))
    held = CustodyBalanceRecord("client-1", "USDT", Decimal(5), Decimal(0), Decimal(5), "ex-a", "ex-a-1")
    unknown = CustodyBalanceRecord("client-1", "USDT", Decimal(5), Decimal(0), Decimal(5), "ex-z", "ex-z-1")
    again = CustodyBalanceRecord("client-1", "USDT", Decimal(6), Decimal(0), Decimal(6), "ex-a", "ex-a-1")
    rows, rejected = custody_rows(
        [master, held, unknown, again], T0, master_account=7, held_accounts={("ex-a", "ex-a-1"): 42}
    )
    assert rows == [(7, "BTC", Decimal(10), T0), (42, "USDT", Decimal(5), T0)]
    assert [r.reason for r in rejected] == [
        "client-1: venue 'ex-z' is not a configured exchange",
        "client-1: duplicate ex-a/ex-a-1 balance in USDT",
    ]


def test_settlements_resolve_their_account_or_are_rejected_with_the_reason() -> None:
    def settlement(sid: str, account: str) -> SettlementRecord:
        return SettlementRecord(sid, account, "USDT", Decimal("-2500.75"), T0, date(2026, 3, 4))

    upserts, rejected = settlement_upserts(
        [settlement("s1", "a"), settlement("s2", "nobody"), settlement("s3", "twice")],
        {"a": [5], "twice": [6, 9]},
    )
    [one] = upserts
    assert (one.settlement_id, one.account_id, one.quantity) == ("s1", 5, Decimal("-2500.75"))
    assert one.expected_settlement_at == datetime(2026, 3, 4, tzinfo=UTC)
    assert one.expected_settlement_at.date() == date(2026, 3, 4)
    assert [r.reason for r in rejected] == [
        "settlement s2: account 'nobody' is not known at any configured exchange",
        "settlement s3: account 'twice' is ambiguous across exchanges",
    ]


def test_symbols_not_refreshed_within_the_window_are_polled() -> None:
    received = {"BTC-USDT": T0 - timedelta(seconds=1), "ETH-USDT": T0 - timedelta(seconds=5)}
    assert stale_symbols(["BTC-USDT", "ETH-USDT", "SOL-USDT"], received, now=T0, max_age=timedelta(seconds=3)) == [
        "ETH-USDT",
        "SOL-USDT",
    ]


def test_failure_summary_names_each_failure_and_stays_bounded() -> None:
    assert failure_summary({}, 3) is None
    assert failure_summary({"a": "HTTP 500"}, 3) == "1 of 3 accounts failed: a: HTTP 500"
    long = failure_summary({f"acc-{i}": "x" * 100 for i in range(100)}, 100)
    assert long is not None
    assert len(long) == 2000
    assert long.endswith("...")


def test_rejections_keep_the_raw_payload_and_prefix_the_reason() -> None:
    [r] = rejections([Rejected({"asset": "USDT", "available": "-5"}, "available -5 is negative")], "acc-1: ")
    assert (r.payload, r.reason) == ({"asset": "USDT", "available": "-5"}, "acc-1: available -5 is negative")
