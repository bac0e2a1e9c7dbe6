"""The request fan-out (bounded, ordered, context carried over) and the stable account-to-shard mapping."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from services.logs import current_context, log_context
from services.shards import shard_of
from services.venues.fan_out import FanOut


@pytest.fixture
def pool() -> Iterator[FanOut]:
    fan_out = FanOut("venue-x", 3)
    yield fan_out
    fan_out.close()


def test_results_come_back_in_item_order_with_at_most_workers_running_at_once(pool: FanOut) -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def call(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02 * (n % 3))  # later items finish first: order must still be the items'
        with lock:
            running -= 1
        return n * n

    assert pool.map(call, list(range(12))) == [n * n for n in range(12)]
    assert 1 < peak <= 3


def test_each_call_sees_the_callers_log_context(pool: FanOut) -> None:
    with log_context(job="collect.positions.venue-x"):
        seen = pool.map(lambda n: (n, current_context().get("job"), threading.current_thread().name), [1, 2, 3, 4])
    assert [(n, job) for n, job, _thread in seen] == [(n, "collect.positions.venue-x") for n in (1, 2, 3, 4)]
    assert all(thread.startswith("fetch-venue-x") for _n, _job, thread in seen)


def test_an_exception_reaches_the_caller_after_the_other_calls_ran(pool: FanOut) -> None:
    done: list[int] = []

    def call(n: int) -> int:
        if n == 2:
            raise ValueError("bad item")
        done.append(n)
        return n

    with pytest.raises(ValueError, match="bad item"):
        pool.map(call, [1, 2, 3])
    assert sorted(done) == [1, 3]


def test_a_shard_is_the_same_number_in_every_process_and_spreads_accounts() -> None:
    # crc32, not hash(): Python salts str hashes per process, which would move accounts between replicas.
    assert shard_of("exchange-a", "exchange-a-acc-1", 16) == shard_of("exchange-a", "exchange-a-acc-1", 16)
    assert shard_of("exchange-a", "acc-1", 16) == 1498170908 % 16  # zlib.crc32(b"exchange-a/acc-1")
    spread = Counter(shard_of("exchange-a", f"acc-{n}", 16) for n in range(1600))
    assert set(spread) == set(range(16))
    assert max(spread.values()) < 2 * min(spread.values())
