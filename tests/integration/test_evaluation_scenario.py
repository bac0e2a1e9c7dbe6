"""A hand-computed book through the database: snapshots in via SnapshotStore, one evaluation, exact alerts.

Book (prices from market data "md": BTC-USDT 50000, ETH-USDT 2000, USDT-USD 0.99, so 1 USDT = 0.99 USD):
- binance:a1  long 2 BTC-USDT-SWAP @ 48000, 20000 USDT
    gross = 2 × 50000 × 0.99 = 99000; uPnL = 2 × 2000 × 0.99 = 3960; equity = 19800 + 3960 = 23760
    leverage = 99000 / 23760 = 4.1666…                                   -> warning (warn 3, critical 4.5)
- binance:a2  short 30 ETH-USDT-SWAP @ 2100, 10000 USDT
    gross = 30 × 2000 × 0.99 = 59400; uPnL = 30 × 100 × 0.99 = 2970; equity = 9900 + 2970 = 12870
    leverage = 59400 / 12870 = 4.615…                                    -> critical
    short 30 ETH                                                         -> eth-short warning (warn 20)
- okx:b1  spot 1 BTC-USDT, balances 1 BTC + 10000 USDT; custodian copper holds 1 BTC + 9000 USDT for it
    gross 49500, equity 59400, leverage 0.83 (no alert)
    reconciliation USDT: |10000 − 9000| × 0.99 = 990 USD                -> warning (warn 500)
- firm gross = 99000 + 59400 + 49500 = 207900                            -> warning (warn 150000)
- USDT-USD deviation from 1.00 = 0.01                                    -> warning (warn 0.005)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from models.risk import RISK_CONTEXT, Limit
from services.evaluation import run_evaluation
from services.limits_file import parse_limits
from services.limits_store import current_limits, sync_limits
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
LIMITS = """
[[limit]]
name = "acct-leverage"
type = "leverage"
per_account = true
warn = "3"
critical = "4.5"
clear = "2.5"

[[limit]]
name = "firm-gross"
type = "gross_notional"
warn = "150000"
critical = "250000"

[[limit]]
name = "usdt-depeg"
type = "price_deviation"
symbol = "USDT-USD"
reference = "1"
warn = "0.005"
critical = "0.02"

[[limit]]
name = "custody-recon"
type = "reconciliation"
warn = "500"
critical = "5000"

[[limit]]
name = "eth-short"
type = "position_quantity"
per_account = true
symbol = "ETH-USDT"
side = "short"
warn = "20"
critical = "50"
"""


def install_limits(engine: Engine, document: str, now: datetime) -> list[Limit]:
    with engine.begin() as conn:
        sync_limits(conn, parse_limits(document), now=now, changed_by="test")
        return current_limits(conn)


def write_book(engine: Engine) -> None:
    v = Venues.on(engine)
    for venue, kind in (("binance", "exchange"), ("okx", "exchange"), ("copper", "custodian"), ("md", "market_data")):
        v.venue(venue, kind)
    positions_at, balances_at = T0 - timedelta(seconds=2), T0 - timedelta(seconds=1)
    v.prices("md", {"BTC-USDT": "50000", "ETH-USDT": "2000", "USDT-USD": "0.99"}, T0 - timedelta(seconds=3))
    v.positions("binance", "a1", {"BTC-USDT-SWAP": ("2", "48000")}, positions_at, collected=T0)
    v.balances("binance", "a1", {"USDT": "20000"}, balances_at, collected=T0)
    v.positions("binance", "a2", {"ETH-USDT-SWAP": ("-30", "2100")}, positions_at, collected=T0)
    v.balances("binance", "a2", {"USDT": "10000"}, balances_at, collected=T0)
    v.positions("okx", "b1", {"BTC-USDT": ("1", "45000")}, positions_at, collected=T0)
    v.balances("okx", "b1", {"BTC": "1", "USDT": "10000"}, balances_at, collected=T0)
    v.custody("copper", "client-1", ("okx", "b1"), {"BTC": "1", "USDT": "9000"}, positions_at, collected=T0)


def test_hand_computed_book_raises_exactly_the_expected_alerts(fresh_engine: Engine) -> None:
    write_book(fresh_engine)
    limits = install_limits(fresh_engine, LIMITS, T0 - timedelta(hours=1))
    now = T0 + timedelta(seconds=3)

    result = run_evaluation(fresh_engine, limits, now)

    with fresh_engine.connect() as conn:
        alerts = conn.execute(
            text(
                "SELECT a.limit_name, a.limit_type, ac.venue_id || ':' || ac.external_id, a.symbol, a.severity,"
                " a.state, a.observed_value, a.threshold, a.limit_version, a.data_time, a.detection_latency_s"
                " FROM alerts a LEFT JOIN accounts ac ON ac.id = a.account_id ORDER BY a.limit_name, 3"
            )
        ).all()
        compliance: dict[str, str] = dict(
            conn.execute(
                text(
                    "SELECT ac.venue_id || ':' || ac.external_id, c.status FROM compliance_status c"
                    " JOIN accounts ac ON ac.id = c.account_id"
                )
            ).all()
        )
    with localcontext(RISK_CONTEXT):
        lev_a1 = Decimal(99000) / Decimal(23760)
        lev_a2 = Decimal(59400) / Decimal(12870)
    got = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in alerts]
    assert got == [
        ("acct-leverage", "leverage", "binance:a1", None, "warning", "open", lev_a1, Decimal(3)),
        ("acct-leverage", "leverage", "binance:a2", None, "critical", "open", lev_a2, Decimal("4.5")),
        ("custody-recon", "reconciliation", "okx:b1", None, "warning", "open", Decimal(990), Decimal(500)),
        ("eth-short", "position_quantity", "binance:a2", "ETH-USDT", "warning", "open", Decimal(30), Decimal(20)),
        ("firm-gross", "gross_notional", None, None, "warning", "open", Decimal(207900), Decimal(150000)),
        ("usdt-depeg", "price_deviation", None, "USDT-USD", "warning", "open", Decimal("0.01"), Decimal("0.005")),
    ]
    assert all(r.limit_version == 1 for r in alerts)
    by_account = {r[2]: r for r in alerts if r[0] == "acct-leverage"}
    # data time = newest input of that account (balances, 1 s before T0); latency = alert time − data time
    assert by_account["binance:a1"].data_time == T0 - timedelta(seconds=1)
    assert by_account["binance:a1"].detection_latency_s == pytest.approx(4.0)
    firm = next(r for r in alerts if r[0] == "firm-gross")
    assert firm.data_time == T0 - timedelta(seconds=1)  # the book's data_as_of
    assert compliance == {"binance:a1": "warning", "binance:a2": "breach", "okx:b1": "warning"}
    assert result.loaded.book.accounts["okx:b1"].custodian == "copper"
    assert result.loaded.book.accounts["binance:a1"].custodian is None
    assert len(result.events) == 6


def test_a_second_pass_over_unchanged_data_writes_no_events(fresh_engine: Engine) -> None:
    write_book(fresh_engine)
    limits = install_limits(fresh_engine, LIMITS, T0 - timedelta(hours=1))
    run_evaluation(fresh_engine, limits, T0 + timedelta(seconds=3))
    again = run_evaluation(fresh_engine, limits, T0 + timedelta(seconds=4))
    assert again.events == []
    assert again.compliance_changes == 0
    with fresh_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alert_events")) == 6
        assert conn.scalar(text("SELECT count(*) FROM evaluations")) == 2


def test_alert_metrics_label_the_symbol_only_when_the_limit_names_one(fresh_engine: Engine) -> None:
    write_book(fresh_engine)
    any_short = (
        '\n[[limit]]\nname = "any-short"\ntype = "position_quantity"\nper_account = true\nside = "short"\nwarn = "20"\n'
    )
    limits = install_limits(fresh_engine, LIMITS + any_short, T0 - timedelta(hours=1))

    def count(severity: str, breach_type: str, symbol: str) -> float:
        labels = {"severity": severity, "breach_type": breach_type, "symbol": symbol}
        return REGISTRY.get_sample_value("risk_alert_generated_total", labels) or 0.0

    before = (count("warning", "position_quantity", "ETH-USDT"), count("warning", "position_quantity", ""))
    result = run_evaluation(fresh_engine, limits, T0 + timedelta(seconds=3))
    [short] = [e.alert for e in result.events if e.alert.limit_name == "any-short"]
    assert short.symbol == "ETH-USDT"  # the subject names the instrument...
    assert count("warning", "position_quantity", "") == before[1] + 1  # ...the label doesn't: the limit names none
    assert count("warning", "position_quantity", "ETH-USDT") == before[0] + 1  # eth-short names ETH-USDT
