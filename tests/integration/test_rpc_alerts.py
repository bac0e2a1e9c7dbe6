"""ListAlerts, GetAlert, ListAlertEvents and GetComplianceStatus over real gRPC on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from riskmonitor.v1 import risk_monitor_pb2 as pb
from sqlalchemy import Engine

from tests.integration.rpc_harness import T0, Served, add_alert, add_event, new_account, serving, set_compliance

pytestmark = pytest.mark.integration


@pytest.fixture
def api(engine: Engine) -> Iterator[Served]:
    with serving(engine) as served:
        yield served


def _ts(minutes: int) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(T0 + timedelta(minutes=minutes))
    return out


def _all_pages(api: Served, request: pb.ListAlertsRequest) -> list[int]:
    ids: list[int] = []
    while True:
        response = api.stub.ListAlerts(request, timeout=10)
        ids += [a.id for a in response.alerts]
        if not response.next_page_token:
            return ids
        request.page_token = response.next_page_token


def test_filters_combine_and_results_are_ordered_by_opened_at(api: Served, engine: Engine) -> None:
    account_id, key = new_account(engine)
    at = [T0 + timedelta(minutes=m) for m in range(6)]
    lev = add_alert(engine, account_id, opened_at=at[3], limit_type="leverage", severity="warning")
    gross = add_alert(engine, account_id, opened_at=at[1], limit_type="gross_notional", state="acknowledged")
    pos = add_alert(engine, account_id, opened_at=at[2], limit_type="position_quantity", symbol="BTC-USDT")
    old = add_alert(engine, account_id, opened_at=at[0], limit_type="leverage", state="resolved")

    everything = api.stub.ListAlerts(pb.ListAlertsRequest(account=key), timeout=10)
    assert [a.id for a in everything.alerts] == [old, gross, pos, lev]
    first = everything.alerts[0]
    assert first.account == key
    assert first.observed_value == "150"  # NUMERIC(38, 18) padding removed
    assert first.opened_at.ToDatetime().replace(tzinfo=T0.tzinfo) == at[0]

    def ids(**filters: object) -> list[int]:
        return [a.id for a in api.stub.ListAlerts(pb.ListAlertsRequest(account=key, **filters), timeout=10).alerts]

    assert ids(limit_type="leverage") == [old, lev]
    assert ids(severity=pb.SEVERITY_WARNING) == [lev]
    assert ids(state=pb.ALERT_STATE_ACKNOWLEDGED) == [gross]
    assert ids(symbol="BTCUSDT") == [pos]  # venue spelling is canonicalised
    assert ids(opened_after=_ts(1), opened_before=_ts(3)) == [gross, pos]
    assert ids(limit_type="leverage", state=pb.ALERT_STATE_OPEN) == [lev]
    assert ids(newest_first=True) == [lev, pos, gross, old]
    nobody = api.stub.ListAlerts(pb.ListAlertsRequest(account="testvenue:nobody"), timeout=10)
    assert list(nobody.alerts) == []


def test_pages_neither_repeat_nor_skip_while_alerts_arrive(api: Served, engine: Engine) -> None:
    account_id, key = new_account(engine)
    original = [add_alert(engine, account_id, opened_at=T0 + timedelta(seconds=s)) for s in range(25)]
    request = pb.ListAlertsRequest(account=key, page_size=10)
    seen: list[int] = []
    arrived: list[int] = []
    while True:
        response = api.stub.ListAlerts(request, timeout=10)
        seen += [a.id for a in response.alerts]
        # New alerts arrive between pages: later ones (as in production) and one in the already-read past.
        arrived.append(add_alert(engine, account_id, opened_at=T0 + timedelta(hours=1, seconds=len(seen))))
        add_alert(engine, account_id, opened_at=T0 - timedelta(hours=1))
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert len(seen) == len(set(seen)), "a page repeated an alert"
    assert seen[:25] == original
    assert set(arrived[:-1]) <= set(seen), "an alert opened after the cursor was skipped"


def test_newest_first_pages_are_stable_too(api: Served, engine: Engine) -> None:
    account_id, key = new_account(engine)
    original = [add_alert(engine, account_id, opened_at=T0 + timedelta(seconds=s)) for s in range(7)]
    ids = _all_pages(api, pb.ListAlertsRequest(account=key, page_size=3, newest_first=True))
    assert ids == original[::-1]


def test_a_page_token_only_works_with_its_own_filters(api: Served, engine: Engine) -> None:
    account_id, key = new_account(engine)
    for s in range(3):
        add_alert(engine, account_id, opened_at=T0 + timedelta(seconds=s))
    token = api.stub.ListAlerts(pb.ListAlertsRequest(account=key, page_size=1), timeout=10).next_page_token
    assert token
    with pytest.raises(grpc.RpcError) as err:
        api.stub.ListAlerts(pb.ListAlertsRequest(account=key, page_size=1, page_token=token, newest_first=True))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        api.stub.ListAlerts(pb.ListAlertsRequest(page_token="not-a-token"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("ListAlerts", pb.ListAlertsRequest(page_size=-1), "page_size"),
        ("ListAlerts", pb.ListAlertsRequest(severity=7), "severity"),
        ("ListAlerts", pb.ListAlertsRequest(symbol="???"), "symbol"),
        ("GetAlert", pb.GetAlertRequest(), "alert_id"),
        ("ListAlertEvents", pb.ListAlertEventsRequest(alert_id=-3), "alert_id"),
        ("AcknowledgeAlert", pb.AcknowledgeAlertRequest(alert_id=1, actor="ann"), "comment"),
        ("AcknowledgeAlert", pb.AcknowledgeAlertRequest(alert_id=1, comment="on it"), "actor"),
        ("GetRiskSummary", pb.GetRiskSummaryRequest(), "account"),
        ("CheckOrder", pb.CheckOrderRequest(account="v:a", symbol="BTC-USDT", quantity="1", price="1"), "side"),
        (
            "CheckOrder",
            pb.CheckOrderRequest(account="v:a", symbol="BTC-USDT", side=pb.ORDER_SIDE_BUY, quantity="x", price="1"),
            "quantity",
        ),
    ],
)
def test_bad_arguments_are_invalid_argument_naming_the_field(
    api: Served, call: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(api.stub, call)(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(err.value.details())
    assert "Traceback" not in str(err.value.details())


def test_get_alert_returns_the_alert_with_its_hash_chained_history(api: Served, engine: Engine) -> None:
    account_id, key = new_account(engine)
    alert_id = add_alert(engine, account_id, opened_at=T0)
    first = add_event(engine, alert_id, event_type="opened", at=T0)
    second = add_event(engine, alert_id, event_type="escalated", at=T0 + timedelta(seconds=5))
    response = api.stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), timeout=10)
    assert response.alert.id == alert_id
    assert response.alert.account == key
    assert [e.id for e in response.events] == [first, second]
    assert [e.event_type for e in response.events] == ["opened", "escalated"]
    assert response.events[1].prev_hash == response.events[0].hash
    assert len(response.events[0].hash) == 64
    assert response.events[0].details_json == '{"n": 1}'


def test_unknown_alert_is_not_found(api: Served) -> None:
    with pytest.raises(grpc.RpcError) as err:
        api.stub.GetAlert(pb.GetAlertRequest(alert_id=987_654_321), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_alert_events_are_listed_by_time_range_in_pages(api: Served, engine: Engine) -> None:
    account_id, _ = new_account(engine)
    alert_id = add_alert(engine, account_id, opened_at=T0)
    base = T0 + timedelta(days=400)  # a range no other test writes to
    events = [add_event(engine, alert_id, at=base + timedelta(minutes=m)) for m in range(5)]
    request = pb.ListAlertEventsRequest(page_size=2)
    request.occurred_after.FromDatetime(base + timedelta(minutes=1))
    request.occurred_before.FromDatetime(base + timedelta(minutes=4))
    ids: list[int] = []
    pages = 0
    while True:
        response = api.stub.ListAlertEvents(request, timeout=10)
        pages += 1
        ids += [e.id for e in response.events]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert ids == events[1:4]
    assert pages == 2
    only = api.stub.ListAlertEvents(pb.ListAlertEventsRequest(alert_id=alert_id), timeout=10)
    assert [e.id for e in only.events] == events


def test_compliance_status_per_account_and_for_all(api: Served, engine: Engine) -> None:
    first_id, first = new_account(engine)
    second_id, second = new_account(engine)
    set_compliance(engine, first_id, "breach", T0)
    set_compliance(engine, second_id, "compliant", T0 + timedelta(minutes=3))
    one = api.stub.GetComplianceStatus(pb.GetComplianceStatusRequest(account=first), timeout=10)
    assert [(s.account, s.state) for s in one.statuses] == [(first, pb.COMPLIANCE_STATE_BREACH)]
    assert one.statuses[0].changed_at.ToDatetime().replace(tzinfo=T0.tzinfo) == T0
    every = api.stub.GetComplianceStatus(pb.GetComplianceStatusRequest(), timeout=10)
    accounts = [s.account for s in every.statuses]
    assert {first, second} <= set(accounts)
    assert accounts == sorted(accounts)
    with pytest.raises(grpc.RpcError) as err:
        api.stub.GetComplianceStatus(pb.GetComplianceStatusRequest(account="testvenue:ghost"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
