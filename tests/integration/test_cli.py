"""The command line as a user runs it: a real process, real exit codes, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISK_MONITOR_")}
    env.update({"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}", "RISK_MONITOR_LOG_FORMAT": "json"})
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [(), ("serve",), ("db",), ("db", "upgrade"), ("db", "check"), ("config",), ("config", "show"), ("sandbox",)],
)
def test_every_level_has_help(args: tuple[str, ...]) -> None:
    result = run_cli(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: risk-monitor")


def test_config_show_masks_the_database_password() -> None:
    result = run_cli("config", "show", "--json", RISK_MONITOR_DATABASE_URL="postgresql://u:hunter2@db/x")
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["database.url"] == "postgresql://u:***@db/x"
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "config_text", "message"),
    [
        ({"RISK_MONITOR_HTTP_PORT": "http"}, None, "'http.port' has value 'http'"),
        ({}, "[grpc]\nport = 1\nbogus = 2\n", "unknown key 'grpc.bogus'"),
        ({"RISK_MONITOR_DATABASE_URL": "mysql://u@h/db"}, None, "only PostgreSQL is supported"),
    ],
)
def test_bad_configuration_fails_fast_in_one_line(
    tmp_path: Path, env: dict[str, str], config_text: str | None, message: str
) -> None:
    args = ["serve"]
    if config_text is not None:
        cfg = tmp_path / "rm.toml"
        cfg.write_text(config_text)
        args = ["--config", str(cfg), "serve"]
    result = run_cli(*args, timeout=30, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_unreachable_database_fails_fast_in_one_line() -> None:
    started = time.monotonic()
    result = run_cli(
        "serve",
        timeout=30,
        RISK_MONITOR_DATABASE_URL="postgresql://risk:pw@127.0.0.1:1/risk",
        RISK_MONITOR_HTTP_PORT="0",
        RISK_MONITOR_GRPC_PORT="0",
        RISK_MONITOR_DATABASE_CONNECT_TIMEOUT_S="2",
    )
    assert result.returncode == 2
    assert time.monotonic() - started < 20
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: database postgresql+psycopg://risk:***@127.0.0.1:1/risk is unreachable")
    assert "Traceback" not in result.stderr
    assert "pw@" not in result.stderr


def test_db_check_is_clean_on_the_migrated_database(database_url: str) -> None:
    result = run_cli("db", "check", RISK_MONITOR_DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert "agree" in result.stdout


def _wait_for_ports(proc: subprocess.Popen[str], deadline_s: float = 60) -> tuple[int, int]:
    assert proc.stderr is not None
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}")
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "http_port" in entry:
            return int(entry["http_port"]), int(entry["grpc_port"])
    raise AssertionError("serve did not report its ports")


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@contextmanager
def _serve(**env: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(RISK_MONITOR_HTTP_PORT="0", RISK_MONITOR_GRPC_PORT="0", **env),
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def _assert_serves_then_stops_on_sigterm(proc: subprocess.Popen[str]) -> None:
    http_port, grpc_port = _wait_for_ports(proc)
    assert _http_status(http_port, "/api/v1/health") == 200
    assert _http_status(http_port, "/api/v1/ready") == 200
    assert _http_status(http_port, "/metrics") == 200
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_serve_on_a_configured_database_answers_and_stops_on_sigterm(database_url: str) -> None:
    with _serve(RISK_MONITOR_DATABASE_URL=database_url) as proc:
        _assert_serves_then_stops_on_sigterm(proc)


def test_serve_without_a_database_url_runs_on_the_embedded_postgres(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with _serve(RISK_MONITOR_EMBEDDED_DATA_DIR=str(data_dir)) as proc:
        _assert_serves_then_stops_on_sigterm(proc)
    assert (data_dir / "PG_VERSION").exists()
    # The embedded server is stopped with the monitor: no postmaster is left behind.
    assert not (data_dir / "postmaster.pid").exists()
