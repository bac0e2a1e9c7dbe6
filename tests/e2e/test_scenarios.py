"""End to end: the demo's scenarios against a real monitor, embedded PostgreSQL and the sandbox venues,
then `python -m demo` (what `risk-monitor demo` runs) as a real process: a passing run exits 0, and
SIGINT leaves no embedded PostgreSQL and no bound port behind.

One demo session serves every scenario test of this module (starting one costs ~10 s); scenarios
restore the sandbox and wait for their alerts to resolve, so their order doesn't matter for the result.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.scenarios import NAMES, SCENARIOS, Context
from demo.session import DemoSession

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo() -> Iterator[Context]:
    session = DemoSession().start()
    try:
        assert session.wait_ready(), "no clean baseline: accounts not evaluated or an alert active"
        assert session.control is not None
        assert session.probe is not None
        yield Context(session.control, session.probe, session.account_keys, session.evaluation_interval_s)
    finally:
        session.stop()
    assert session.postgres_pid() is None  # the temporary data directory went with it


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=NAMES)
def test_scenario(demo: Context, scenario: object) -> None:
    outcome = scenario.run(demo)  # type: ignore[attr-defined]
    assert outcome.passed, outcome.problems
    if not outcome.expected.startswith("none"):
        assert outcome.raised
        assert outcome.latency_s is not None
        assert outcome.bound_s is not None
        assert outcome.latency_s <= outcome.bound_s


def _demo_process(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")]), "GRPC_VERBOSITY": "ERROR"}
    return subprocess.Popen(
        [sys.executable, "-m", "demo", "--no-ui", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(240)
def test_a_demo_run_exits_0_with_a_summary_when_its_scenarios_pass() -> None:
    proc = _demo_process("--scenario", "stablecoin-depeg", "--scenario", "settlement-delay")
    out, _ = proc.communicate(timeout=200)
    assert proc.returncode == 0, out
    assert re.search(r"^stablecoin-depeg +\| price_deviation.*\| yes +\| \d+\.\d{3}s .*\| passed", out, re.M), out
    assert re.search(r"^settlement-delay +\| unsettled_exposure.*\| passed", out, re.M), out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    """Something accepts connections on the port (a bind test would trip over TIME_WAIT instead)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(240)
def test_sigint_stops_the_demo_and_leaves_no_postgres_and_no_listener() -> None:
    proc = _demo_process("--scenario", "normal-trading", "--duration", "600")
    assert proc.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        banner.append(line)
        if "scenario Normal trading" in line or time.monotonic() > deadline:
            break
    text = "".join(banner)
    pid_match = re.search(r"embedded PostgreSQL pid (\d+)", text)
    assert pid_match, text
    pg_pid = int(pid_match.group(1))
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    assert len(ports) >= 3, text  # gRPC, HTTP, sandbox control
    assert _alive(pg_pid)
    assert all(_listening(p) for p in ports)

    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    deadline = time.monotonic() + 30
    while _alive(pg_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pg_pid), "the embedded PostgreSQL outlived the demo"
    assert not [p for p in ports if _listening(p)], "a listener outlived the demo"
