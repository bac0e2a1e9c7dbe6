"""Page tokens, the tick-stream grouping, the WatchAlerts fan-out and the tick alert writer, without a server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from riskmonitor.v1 import risk_monitor_pb2 as pb

from services import page_tokens
from services.alert_queries import AlertEventView
from services.alert_watch import AlertEventPoller, SubscriberOverflow, replay_then_live
from services.errors import InvalidArgumentError
from services.rpc.convert import dec
from services.rpc.tick_stream import grouped
from services.tick_alerts import TickAlertWriter

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_page_tokens_round_trip_and_are_bound_to_their_filters() -> None:
    cursor = page_tokens.Cursor(T, 42)
    token = page_tokens.encode(cursor, ("acct", "leverage"))
    assert page_tokens.decode(token, ("acct", "leverage")) == cursor
    assert page_tokens.decode("", ("x",)) is None
    with pytest.raises(InvalidArgumentError, match="different filters"):
        page_tokens.decode(token, ("acct", "drawdown"))
    with pytest.raises(InvalidArgumentError, match="page_token"):
        page_tokens.decode(token[:-3] + "!!!", ("acct", "leverage"))


@pytest.mark.parametrize(
    ("value", "text"),
    [("1000.000000000000000000", "1000"), ("0.2500", "0.25"), ("-0", "0"), ("1E+3", "1000"), ("Infinity", "Infinity")],
)
def test_decimals_cross_the_wire_without_padding_or_exponents(value: str, text: str) -> None:
    from decimal import Decimal

    assert dec(Decimal(value)) == text


def test_batches_waiting_in_the_stream_are_grouped_in_order() -> None:
    gate = threading.Event()

    def requests() -> Iterator[pb.TickBatch]:
        yield pb.TickBatch(batch_id=1, ticks=[pb.Tick()])
        gate.wait(5)  # the rest arrive while group 1 is "being evaluated"
        for n in range(2, 6):
            yield pb.TickBatch(batch_id=n, ticks=[pb.Tick()] * 3)

    groups = grouped(requests(), max_ticks=7)
    assert [r.batch.batch_id for r in next(groups)] == [1]
    gate.set()
    time.sleep(0.2)
    rest = [[r.batch.batch_id for r in g] for g in groups]
    assert [b for g in rest for b in g] == [2, 3, 4, 5]
    assert max(len(g) for g in rest) == 3  # capped by max_ticks (3 batches of 3 ticks reach 7)


def _event(n: int, account: str = "v:a") -> AlertEventView:
    return AlertEventView(
        n, 1, "opened", T, "x", "critical", "open", None, None, {}, "0" * 64, "1" * 64, "f", "l", account
    )


def test_replay_then_live_has_no_gap_and_no_duplicate_around_the_subscription() -> None:
    log = [_event(n) for n in range(1, 11)]

    def fetch_after(after: int, limit: int) -> list[AlertEventView]:
        return [e for e in log if e.id > after][:limit]

    poller = AlertEventPoller(fetch_after, start_after=6, interval_s=60, queue_size=100)

    def subscribe():  # type: ignore[no-untyped-def]
        sub = poller.subscribe()
        poller.poll_once()  # events 7..10 reach the live queue too, as they would from the poller
        log.append(_event(11))
        poller.poll_once()
        sub.close()  # end the live part so the test finishes
        return sub

    got = [(e.id, replayed) for e, replayed in replay_then_live(subscribe, 2, fetch_after, page=3)]
    assert [i for i, _ in got] == list(range(3, 12))
    assert got[0][1]


def test_a_full_subscriber_queue_ends_its_stream_with_overflow() -> None:
    poller = AlertEventPoller(
        lambda a, n: [_event(i) for i in range(a + 1, a + 6)], start_after=0, interval_s=60, queue_size=2
    )
    sub = poller.subscribe()
    poller.poll_once()
    with pytest.raises(SubscriberOverflow):
        list(sub.events(poll_s=0.01))


def test_the_tick_writer_flushes_everything_on_stop_and_retries_failures() -> None:
    persisted: list[int] = []
    failures = [1]

    def persist(items):  # type: ignore[no-untyped-def]
        if failures:
            failures.pop()
            raise RuntimeError("database hiccup")
        persisted.extend(n for n, _ in items)

    writer = TickAlertWriter(persist, warn_depth=100, retry_s=0.01)  # type: ignore[arg-type]
    writer.start()
    for n in range(50):
        writer.submit(n, T)  # type: ignore[arg-type]
    writer.stop()
    assert persisted == list(range(50))
