"""Interpreter tuning of `serve` (services/runtime.py). Process-wide state: each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.processes import env

PROBE = """
import gc, json, sys
from services import runtime
runtime.tune(switch_interval_ms={switch}, gc_gen0_threshold={gen0})
before = gc.get_freeze_count()
runtime.freeze()
print(json.dumps([sys.getswitchinterval(), gc.get_threshold(), before, gc.get_freeze_count()]))
"""


def _run(switch: float, gen0: int) -> list[object]:
    code = PROBE.format(switch=switch, gen0=gen0)
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_tune_sets_the_switch_interval_and_young_threshold_and_freeze_exempts_start_up_objects() -> None:
    switch, thresholds, frozen_before, frozen_after = _run(0.5, 50_000)
    assert switch == 0.0005
    assert thresholds == [50_000, 10, 10]  # older generations keep Python's ratios
    assert frozen_before == 0
    assert isinstance(frozen_after, int)
    assert frozen_after > 1000  # modules, classes, config: start-up state


def test_zero_keeps_the_interpreters_collector_threshold() -> None:
    _, thresholds, _, _ = _run(5, 0)
    assert thresholds == [700, 10, 10]


REALTIME = """
import json, os, threading
from services import runtime
def policy(thread): return os.sched_getscheduler(thread.native_id)
before = threading.Thread(target=threading.Event().wait, daemon=True)
before.start()
with runtime.realtime_threads({priority}) as granted:
    inside = threading.Thread(target=threading.Event().wait, daemon=True)
    inside.start()  # started in the block: inherits the class
    during = os.sched_getscheduler(0)
after = threading.Thread(target=threading.Event().wait, daemon=True)
after.start()
print(json.dumps([granted, policy(before), policy(inside), os.sched_getparam(inside.native_id).sched_priority,
                  during, os.sched_getscheduler(0), policy(after)]))
"""


def _realtime_probe(priority: int) -> list[object]:
    done = subprocess.run(
        [sys.executable, "-c", REALTIME.replace("{priority}", str(priority))],
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_only_threads_started_inside_realtime_threads_stay_in_sched_rr() -> None:
    granted, before, inside, priority, during, caller_after, after = _realtime_probe(7)
    normal = os.SCHED_OTHER
    if not granted:  # neither root nor an RLIMIT_RTPRIO on this machine: refused, and nothing moved
        assert (before, inside, during, caller_after, after) == (normal,) * 5
        return
    assert (inside, priority, during) == (os.SCHED_RR, 7, os.SCHED_RR)
    assert (before, caller_after, after) == (normal,) * 3  # the caller is back; nothing else was moved


def test_a_refused_realtime_request_leaves_every_thread_normal() -> None:
    granted, before, inside, _, during, caller_after, after = _realtime_probe(100)  # the kernel accepts 1-99 only
    assert granted is False
    assert {before, inside, during, caller_after, after} == {os.SCHED_OTHER}
