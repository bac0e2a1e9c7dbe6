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
first = threading.Thread(target=threading.Event().wait, daemon=True)
first.start()  # running before the call: moved too
granted = runtime.realtime({priority})
later = threading.Thread(target=threading.Event().wait, daemon=True)
later.start()  # started after it: inherits the class
policies = sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")})
param = os.sched_getparam(0).sched_priority
runtime.normal()
after = sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")})
print(json.dumps([granted, policies, param, after]))
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


def test_realtime_moves_every_thread_and_later_ones_into_sched_rr_and_normal_moves_them_back() -> None:
    granted, policies, priority, after = _realtime_probe(7)
    if not granted:  # neither root nor an RLIMIT_RTPRIO on this machine: refused, and nothing moved
        assert policies == after == [os.SCHED_OTHER]
        return
    assert policies == [os.SCHED_RR]
    assert priority == 7
    assert after == [os.SCHED_OTHER]


def test_a_refused_realtime_request_leaves_every_thread_normal() -> None:
    granted, policies, _, _ = _realtime_probe(100)  # the kernel refuses it (1-99), as it would without privilege
    assert granted is False
    assert policies == [os.SCHED_OTHER]
