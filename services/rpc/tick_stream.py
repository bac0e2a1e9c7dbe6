"""Adaptive grouping of a StreamTicks request stream: while the monitor is evaluating, batches that arrive
queue up and are then evaluated together, so throughput grows with load instead of latency growing
without bound. A reader thread per stream feeds a bounded queue (gRPC flow control pushes back on the
client when it is full)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from riskmonitor.v1 import risk_monitor_pb2 as pb


@dataclass(frozen=True)
class Received:
    batch: pb.TickBatch
    at: float  # perf_counter() when the batch was read off the stream


_END = object()


def grouped(requests: Iterator[pb.TickBatch], *, max_ticks: int, depth: int = 64) -> Iterator[list[Received]]:
    """Groups of consecutive batches: everything already received, up to ``max_ticks`` ticks per group."""
    inbox: queue.Queue[object] = queue.Queue(depth)
    done = threading.Event()

    def put(item: object) -> None:
        while not done.is_set():
            try:
                inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for batch in requests:
                put(Received(batch, time.perf_counter()))
        except Exception:  # noqa: BLE001, S110 - the client went away or the RPC ended: nothing more to read
            pass
        put(_END)

    threading.Thread(target=read, name="tick-stream-reader", daemon=True).start()
    try:
        ended = False
        while not ended:
            first = inbox.get()
            if not isinstance(first, Received):
                return
            group, ticks = [first], len(first.batch.ticks)
            while ticks < max_ticks:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, Received):
                    ended = True
                    break
                group.append(item)
                ticks += len(item.batch.ticks)
            yield group
    finally:
        done.set()  # release a reader blocked on a full queue
