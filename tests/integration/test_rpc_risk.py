"""StreamTicks, CheckOrder, GetRiskSummary and AcknowledgeAlert over real gRPC, with the real alert store."""

from __future__ import annotations

import itertools
import queue
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from riskmonitor.v1 import risk_monitor_pb2 as pb
from sqlalchemy import Engine, text

from models.risk import LimitType, Scope, build_book
from services.rpc.api import acknowledge_with_store
from services.tick_alerts import store_persist
from tests.factories import account, balance, limit, position, price
from tests.integration.rpc_harness import Served, new_account, serving

pytestmark = pytest.mark.integration


@pytest.fixture
def desk(engine: Engine) -> Iterator[tuple[Served, str, str]]:
    """One account holding 1 BTC (100 USDT) against a gross-notional limit warn 150 / critical 200."""
    account_id, key = new_account(engine)
    name = f"gross-{uuid.uuid4().hex[:6]}"
    book = build_book(
        accounts=[account(key)],
        positions=[position("1", px=None, avg="100", account=key)],
        balances=[balance("USDT", "1000", account=key)],
        prices=[price("BTC-USDT", "100"), price("USDT-USD", "1")],
    )
    gross = limit(name, LimitType.GROSS_NOTIONAL, warn="150", critical="200", scope=Scope.ACCOUNT, scope_ref=key)
    with serving(
        engine,
        book=book,
        limits=[gross],
        persist=store_persist(engine, {key: account_id}),
        acknowledge=acknowledge_with_store(engine, channels=tuple),
    ) as served:
        yield served, key, f"{name}|scope={key};account={key}"


def _price_batch(batch_id: int, px: str, count: int = 1) -> pb.TickBatch:
    ticks = [pb.Tick(price=pb.PriceUpdate(symbol="BTC-USDT", price=px, source="md")) for _ in range(count)]
    return pb.TickBatch(batch_id=batch_id, ticks=ticks)


def _one_by_one(api: Served, batches: list[pb.TickBatch]) -> list[pb.TickBatchResult]:
    """Send each batch only after the previous answer, so every batch is evaluated on its own."""
    outbox: queue.Queue[pb.TickBatch | None] = queue.Queue()
    stream = api.stub.StreamTicks(iter(outbox.get, None), timeout=30)
    results = []
    for batch in batches:
        outbox.put(batch)
        results.append(next(stream))
    outbox.put(None)
    assert list(stream) == []
    return results


def _alerts(engine: Engine, fingerprint: str) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, state, severity FROM alerts WHERE fingerprint = :fp ORDER BY id"), {"fp": fingerprint}
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def test_a_tick_crossing_a_limit_reports_the_breach_and_opens_exactly_one_alert(
    desk: tuple[Served, str, str], engine: Engine
) -> None:
    api, key, fingerprint = desk
    batches = [_price_batch(1, "120"), _price_batch(2, "250", count=3), _price_batch(3, "260"), _price_batch(4, "50")]
    results = _one_by_one(api, batches)
    assert [r.batch_id for r in results] == [1, 2, 3, 4]
    assert list(results[0].changes) == []  # 120 < warn 150: nothing to report
    [breach] = results[1].changes
    assert breach.fingerprint == fingerprint
    assert (breach.previous_level, breach.level) == (pb.LEVEL_OK, pb.LEVEL_CRITICAL)
    assert (breach.value, breach.threshold, breach.utilisation) == ("250", "200", "1.25")
    assert breach.account == key
    assert results[1].ticks_applied == 3
    assert results[1].processing_time.ToNanoseconds() > 0
    assert list(results[2].changes) == []  # still critical: no new transition, no second alert
    [cleared] = results[3].changes
    assert cleared.level == pb.LEVEL_OK
    api.api.flush()  # what a stopping server does; then the database has the whole story
    [(alert_id, state, severity)] = _alerts(engine, fingerprint)
    assert (state, severity) == ("resolved", "critical")
    history = api.stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), timeout=10)
    assert [e.event_type for e in history.events] == ["opened", "resolved"]
    assert {e.actor for e in history.events} == {"system:ticks"}


def test_a_breach_held_across_batches_and_streams_stays_one_alert(
    desk: tuple[Served, str, str], engine: Engine
) -> None:
    api, _, fingerprint = desk
    list(api.stub.StreamTicks(iter([_price_batch(1, "230")]), timeout=30))
    second = _one_by_one(api, [_price_batch(2, "240"), _price_batch(3, "170")])
    [deescalated] = second[1].changes
    assert (deescalated.previous_level, deescalated.level) == (pb.LEVEL_CRITICAL, pb.LEVEL_WARN)
    api.api.flush()
    assert [(s, sev) for _, s, sev in _alerts(engine, fingerprint)] == [("open", "warning")]


def test_batches_that_queue_up_are_evaluated_together_and_each_is_answered(
    desk: tuple[Served, str, str], engine: Engine
) -> None:
    api, _, fingerprint = desk
    batches = [_price_batch(n, px) for n, px in enumerate(["120", "250", "130", "260", "255"] * 20, 1)]
    results = list(api.stub.StreamTicks(iter(batches), timeout=30))
    assert [r.batch_id for r in results] == list(range(1, 101))
    assert all(r.ticks_applied == 1 for r in results)
    assert not results[-1].evaluated_with_next
    assert all(not r.changes for r in results if r.evaluated_with_next)
    # Whatever the grouping, the levels reported chain up and end where the last price puts them.
    levels = [(c.previous_level, c.level) for r in results for c in r.changes]
    assert levels[-1][1] == pb.LEVEL_CRITICAL
    assert all(a[1] == b[0] for a, b in itertools.pairwise(levels))
    api.api.flush()
    assert [s for _, s, _ in _alerts(engine, fingerprint)][-1] == "open"


def test_invalid_ticks_are_reported_and_the_rest_of_the_batch_applies(desk: tuple[Served, str, str]) -> None:
    api, key, _ = desk
    batch = pb.TickBatch(
        batch_id=9,
        ticks=[
            pb.Tick(price=pb.PriceUpdate(symbol="BTC-USDT", price="-5")),
            pb.Tick(price=pb.PriceUpdate(symbol="BTC-USDT", price="1e400")),
            pb.Tick(),
            pb.Tick(
                fill=pb.Fill(account="other:acct", symbol="BTC-USDT", side=pb.ORDER_SIDE_BUY, quantity="1", price="1")
            ),
            pb.Tick(fill=pb.Fill(account=key, symbol="BTC-USDT", side=pb.ORDER_SIDE_BUY, quantity="1", price="100")),
        ],
    )
    [result] = list(api.stub.StreamTicks(iter([batch]), timeout=30))
    assert result.ticks_applied == 1
    errors = sorted((e.index, e.field) for e in result.errors)
    assert errors == [(0, "price.price"), (1, "price.price"), (2, "tick"), (3, "account")]
    summary = api.stub.GetRiskSummary(pb.GetRiskSummaryRequest(account=key), timeout=10)
    assert [p.quantity for p in summary.positions] == ["2"]  # the fill applied: 1 + 1 BTC


def test_check_order_allows_within_limits_and_denies_a_breach_with_headroom(desk: tuple[Served, str, str]) -> None:
    api, key, _ = desk
    small = api.stub.CheckOrder(
        pb.CheckOrderRequest(account=key, symbol="BTCUSDT", side=pb.ORDER_SIDE_BUY, quantity="0.2", price="100"),
        timeout=10,
    )
    assert small.decision == pb.DECISION_ALLOW
    assert list(small.breaches) == []
    [impact] = small.limits
    assert (impact.current_value, impact.projected_value, impact.headroom) == ("100", "120", "80")
    big = api.stub.CheckOrder(
        pb.CheckOrderRequest(account=key, symbol="BTC-USDT", side=pb.ORDER_SIDE_BUY, quantity="1.5", price="100"),
        timeout=10,
    )
    assert big.decision == pb.DECISION_DENY
    [breach] = big.breaches
    assert (breach.projected_value, breach.projected_level, breach.headroom) == ("250", pb.LEVEL_CRITICAL, "-50")
    # A pre-trade check changes nothing: the position is still 1 BTC.
    summary = api.stub.GetRiskSummary(pb.GetRiskSummaryRequest(account=key), timeout=10)
    assert [p.quantity for p in summary.positions] == ["1"]
    with pytest.raises(grpc.RpcError) as err:
        api.stub.CheckOrder(
            pb.CheckOrderRequest(
                account="x:unknown", symbol="BTC-USDT", side=pb.ORDER_SIDE_SELL, quantity="1", price="1"
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_risk_summary_shows_positions_exposure_and_limit_utilisation(desk: tuple[Served, str, str]) -> None:
    api, key, _ = desk
    summary = api.stub.GetRiskSummary(pb.GetRiskSummaryRequest(account=key), timeout=10)
    assert summary.account == key
    assert summary.gross_exposure_usd == "100"
    assert summary.equity_usd == "1000"  # balances (spot holdings are in them; docs/risk-model.md)
    [pos] = summary.positions
    assert (pos.symbol, pos.quantity, pos.mark_price, pos.notional_usd) == ("BTC-USDT", "1", "100", "100")
    [lim] = [u for u in summary.limits if u.limit_type == "gross_notional"]
    assert (lim.value, lim.warn, lim.critical, lim.utilisation, lim.level) == ("100", "150", "200", "0.5", pb.LEVEL_OK)
    with pytest.raises(grpc.RpcError) as err:
        api.stub.GetRiskSummary(pb.GetRiskSummaryRequest(account="x:unknown"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_acknowledge_is_idempotent_and_refuses_resolved_or_unknown_alerts(
    desk: tuple[Served, str, str], engine: Engine
) -> None:
    api, _, fingerprint = desk
    list(api.stub.StreamTicks(iter([_price_batch(1, "300")]), timeout=30))
    api.api.flush()
    [(alert_id, _, _)] = _alerts(engine, fingerprint)
    request = pb.AcknowledgeAlertRequest(alert_id=alert_id, actor="ann", comment="reducing the position")
    first = api.stub.AcknowledgeAlert(request, timeout=10)
    again = api.stub.AcknowledgeAlert(request, timeout=10)
    assert first.changed
    assert not again.changed
    assert again.alert.state == pb.ALERT_STATE_ACKNOWLEDGED
    assert again.alert.acknowledged_by == "ann"
    events = api.stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), timeout=10).events
    assert [e.event_type for e in events] == ["opened", "acknowledged"]
    with pytest.raises(grpc.RpcError) as err:
        api.stub.AcknowledgeAlert(pb.AcknowledgeAlertRequest(alert_id=10**12, actor="a", comment="c"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_acknowledging_a_resolved_alert_is_failed_precondition(desk: tuple[Served, str, str], engine: Engine) -> None:
    api, _, fingerprint = desk
    _one_by_one(api, [_price_batch(1, "300"), _price_batch(2, "10")])  # each evaluated on its own
    api.api.flush()
    [(alert_id, state, _)] = _alerts(engine, fingerprint)
    assert state == "resolved"
    with pytest.raises(grpc.RpcError) as err:
        api.stub.AcknowledgeAlert(pb.AcknowledgeAlertRequest(alert_id=alert_id, actor="a", comment="c"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_tick_path_alert_carries_the_ticks_time_as_its_data_time(
    desk: tuple[Served, str, str], engine: Engine
) -> None:
    """Detection latency on the tick path is measured from the data that showed the breach, not from the
    moment the monitor evaluated it."""
    api, _, fingerprint = desk
    observed = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    tick = pb.Tick(price=pb.PriceUpdate(symbol="BTC-USDT", price="300", source="md"))
    tick.price.observed_at.FromDatetime(observed)
    [result] = list(api.stub.StreamTicks(iter([pb.TickBatch(batch_id=1, ticks=[tick])]), timeout=30))
    assert [c.level for c in result.changes] == [pb.LEVEL_CRITICAL]
    api.api.flush()
    [(alert_id, _, _)] = _alerts(engine, fingerprint)
    alert = api.stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), timeout=10).alert
    assert alert.data_time.ToDatetime(tzinfo=UTC) == observed
    assert alert.detection_latency_seconds >= 3
