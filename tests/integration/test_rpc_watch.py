"""WatchAlerts: resume from an event id without gap or duplicate; slow subscribers are dropped."""

from __future__ import annotations

import threading
from datetime import timedelta

import grpc
import pytest
from riskmonitor.v1 import risk_monitor_pb2 as pb
from sqlalchemy import Engine

from services.config import Settings
from tests.integration.rpc_harness import T0, add_alert, add_event, new_account, serving

pytestmark = pytest.mark.integration


def test_resume_replays_what_was_missed_then_continues_live_without_gap_or_duplicate(engine: Engine) -> None:
    account_id, key = new_account(engine)
    alert_id = add_alert(engine, account_id, opened_at=T0)
    before = [add_event(engine, alert_id, at=T0 + timedelta(seconds=s)) for s in range(6)]
    # Small replay pages so catch-up takes several reads while live events are being appended.
    with serving(engine, settings=Settings(grpc_watch_poll_interval_s=0.02)) as api:
        stream = api.stub.WatchAlerts(
            pb.WatchAlertsRequest(resume_after_event_id=before[1], accounts=[key]), timeout=30
        )
        received: list[pb.WatchAlertsResponse] = []
        appended: list[int] = []
        done = threading.Event()

        def writer() -> None:
            for s in range(20):
                appended.append(add_event(engine, alert_id, at=T0 + timedelta(minutes=1, seconds=s)))
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        other_id, _ = new_account(engine)
        unrelated = add_alert(engine, other_id, opened_at=T0)
        add_event(engine, unrelated, at=T0)  # another account's event: filtered out
        for message in stream:
            received.append(message)
            if done.is_set() and message.event.id == appended[-1]:
                break
        stream.cancel()
        thread.join()
        expected = before[2:] + appended
    ids = [m.event.id for m in received]
    assert ids == expected, "gap, duplicate or reordering in the resumed stream"
    assert received[0].replayed
    assert not received[-1].replayed
    assert all(m.event.account == key for m in received)


def test_live_watch_without_resume_starts_at_the_present(engine: Engine) -> None:
    account_id, key = new_account(engine)
    alert_id = add_alert(engine, account_id, opened_at=T0)
    add_event(engine, alert_id)  # history: not replayed without a resume id
    with serving(engine, settings=Settings(grpc_watch_poll_interval_s=0.02)) as api:
        stream = api.stub.WatchAlerts(pb.WatchAlertsRequest(accounts=[key]), timeout=30)
        first = threading.Event()
        got: list[int] = []

        def reader() -> None:
            for message in stream:
                got.append(message.event.id)
                first.set()
                return

        thread = threading.Thread(target=reader)
        thread.start()
        # The subscription registers asynchronously: keep appending until one arrives.
        live: list[int] = []
        while not first.wait(0.2):
            live.append(add_event(engine, alert_id))
        thread.join(10)
        stream.cancel()
    assert got
    assert got[0] in live


def test_a_subscriber_that_falls_behind_gets_resource_exhausted(engine: Engine) -> None:
    account_id, _ = new_account(engine)
    alert_id = add_alert(engine, account_id, opened_at=T0)
    # A long poll interval: the test publishes by hand, in one burst larger than the queue.
    settings = Settings(grpc_watch_poll_interval_s=3600, grpc_watch_queue_size=1)
    with serving(engine, settings=settings) as api:
        stream = api.stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=30)
        while not api.api.poller._subscribers:  # wait until the stream has subscribed
            threading.Event().wait(0.01)
        for _ in range(200):
            add_event(engine, alert_id)
        api.api.poller.poll_once()
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resume" in str(err.value.details())


def test_stopping_the_server_ends_open_watches_cleanly(engine: Engine) -> None:
    with serving(engine) as api:
        stream = api.stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=30)
        while not api.api.poller._subscribers:
            threading.Event().wait(0.01)
        api.api.close_streams()
        assert list(stream) == []
        assert stream.code() == grpc.StatusCode.OK
