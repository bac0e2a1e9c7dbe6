"""`risk-monitor alerts|compliance|risk` as a person runs them: a real process talking gRPC to a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models.risk import LimitType, Scope, build_book
from services.config import Settings
from services.rpc.api import acknowledge_with_store
from tests.factories import account, balance, limit, position, price
from tests.integration.rpc_harness import T0, Served, add_alert, add_event, new_account, serving, set_compliance

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operator-token-for-the-cli-tests"


def cli(api: Served, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISK_MONITOR_")}
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'proto'}",
        RISK_MONITOR_API_TARGET=f"127.0.0.1:{api.port}",
        RISK_MONITOR_API_TOKEN=token,
    )
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture
def served(engine: Engine) -> Iterator[tuple[Served, int, str]]:
    account_id, key = new_account(engine)
    book = build_book(
        accounts=[account(key)],
        positions=[position("2", px=None, account=key)],
        balances=[balance("USDT", "1000", account=key)],
        prices=[price("BTC-USDT", "100"), price("USDT-USD", "1")],
    )
    limits = [
        limit("cli-gross", LimitType.GROSS_NOTIONAL, warn="150", critical="400", scope=Scope.ACCOUNT, scope_ref=key)
    ]
    settings = Settings(grpc_tokens=f"operator:cli:{TOKEN}")
    with serving(
        engine, settings=settings, book=book, limits=limits, acknowledge=acknowledge_with_store(engine, channels=tuple)
    ) as api:
        yield api, account_id, key


def test_alerts_list_and_show_as_table_and_json(served: tuple[Served, int, str], engine: Engine) -> None:
    api, account_id, key = served
    first = add_alert(engine, account_id, opened_at=T0, limit_type="leverage")
    add_alert(engine, account_id, opened_at=T0 + timedelta(minutes=1))
    add_event(engine, first)
    table = cli(api, "alerts", "list", "--account", key)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "OPENED", "SEVERITY", "STATE"]
    assert len(lines) == 3
    assert lines[1].startswith(str(first))
    as_json = cli(api, "alerts", "list", "--account", key, "--limit-type", "leverage", "--json")
    [record] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (int(record["id"]), record["account"], record["severity"]) == (first, key, "SEVERITY_CRITICAL")
    paged = cli(api, "alerts", "list", "--account", key, "--page-size", "1", "--all", "--json")
    assert len(paged.stdout.splitlines()) == 2
    show = cli(api, "alerts", "show", str(first))
    assert show.returncode == 0, show.stderr
    assert "opened" in show.stdout
    assert key in show.stdout


def test_errors_are_one_line_with_the_status(served: tuple[Served, int, str]) -> None:
    api, _, _ = served
    missing = cli(api, "alerts", "ack", "999999999", "--actor", "ann", "--comment", "looking")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: NOT_FOUND: alert 999999999 does not exist"
    denied = cli(api, "alerts", "list", token="wrong-token-wrong-token")
    assert denied.returncode == 2
    assert denied.stderr.startswith("error: UNAUTHENTICATED")
    assert "Traceback" not in denied.stderr


def test_compliance_and_risk_commands(served: tuple[Served, int, str], engine: Engine) -> None:
    api, account_id, key = served
    set_compliance(engine, account_id, "warning", T0)
    compliance = cli(api, "compliance", key)
    assert compliance.returncode == 0, compliance.stderr
    assert compliance.stdout.splitlines()[1].split()[:2] == [key, "warning"]
    risk = cli(api, "risk", key, "--json")
    assert risk.returncode == 0, risk.stderr
    summary = json.loads(risk.stdout)
    assert summary["gross_exposure_usd"] == "200"
    assert summary["limits"][0]["utilisation"] == "0.5"
    table = cli(api, "risk", key)
    assert "cli-gross" in table.stdout
    assert "LEVEL_WARN" not in table.stdout
    assert " warn" in table.stdout  # 200 > warn 150


@pytest.mark.parametrize(
    "args",
    [
        ("alerts",),
        ("alerts", "list"),
        ("alerts", "show"),
        ("alerts", "ack"),
        ("alerts", "watch"),
        ("compliance",),
        ("risk",),
    ],
)
def test_every_client_command_has_help(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services", *args, "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}"},
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: risk-monitor")


def test_alerts_watch_resumes_and_prints_events_as_they_come(served: tuple[Served, int, str], engine: Engine) -> None:
    api, account_id, key = served
    alert_id = add_alert(engine, account_id, opened_at=T0)
    first = add_event(engine, alert_id)
    second = add_event(engine, alert_id, event_type="escalated")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISK_MONITOR_")}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'proto'}", RISK_MONITOR_API_TOKEN=TOKEN)
    command = ["alerts", "watch", "--target", f"127.0.0.1:{api.port}", "--resume-after", str(first), "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", *command, "--account", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert (int(line["event"]["id"]), line["event"]["event_type"], line["replayed"]) == (second, "escalated", True)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
