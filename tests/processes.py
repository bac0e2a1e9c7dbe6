"""Real `risk-monitor serve` processes for replica and fault tests: config, start, ports, scrape, stop.

stderr goes to a file, not a pipe: a long-running process logging to an unread pipe would block once the
pipe buffer fills, which is exactly the kind of hang these tests must not cause themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sandbox import RunningSandbox

ROOT = Path(__file__).resolve().parents[1]

# Every limit breaches on the sandbox book: evaluation opens (and keeps) alerts on every pass.
ALWAYS_BREACHING_LIMITS = """
[[limit]]
name = "account-gross"
type = "gross_notional"
per_account = true
warn = "1"
critical = "2"

[[limit]]
name = "firm-gross"
type = "gross_notional"
warn = "1"
critical = "2"
"""


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def write_config(path: Path, sandbox: RunningSandbox, **keys: dict[str, object]) -> Path:
    """A TOML config with every sandbox venue and the given ``[section]`` tables."""
    lines: list[str] = []
    for section, values in keys.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    for venue, url in sandbox.exchange_urls.items():
        lines += ["[[venues]]", f'id = "{venue}"', 'kind = "exchange"', f'url = "{url}"']
    for venue, url in sandbox.custodian_urls.items():
        lines += ["[[venues]]", f'id = "{venue}"', 'kind = "custodian"', f'url = "{url}"']
    lines += ["[[venues]]", 'id = "market-data"', 'kind = "market_data"', f'target = "{sandbox.market_data_target}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Replica:
    """One `serve` process; ``log`` is its stderr (JSON lines)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    http_port: int = 0
    grpc_port: int = 0

    def wait_for_ports(self, timeout: float = 60) -> None:
        def found() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "http_port" in entry:
                    self.http_port, self.grpc_port = int(entry["http_port"]), int(entry["grpc_port"])
                    return True
            return False

        wait_for(found, timeout, f"{self.name} reporting its ports")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as resp:
                body = resp.read()
                status = int(resp.status)
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        if path == "/metrics":
            return status, body.decode()
        return status, json.loads(body)

    def leads(self) -> set[str]:
        return set(self.get("/api/v1/health")[1].get("leads", []))

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from the live /metrics (0 when absent)."""
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("RISK_MONITOR_")}
    out.update(
        {
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}",
            "RISK_MONITOR_LOG_FORMAT": "json",
            "RISK_MONITOR_HTTP_PORT": "0",
            "RISK_MONITOR_GRPC_PORT": "0",
        }
    )
    out.update(extra)
    return out


def start_replica(name: str, config: Path, log_dir: Path, **extra_env: str) -> Replica:
    log = log_dir / f"{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "--config", str(config), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env(RISK_MONITOR_SERVICE_INSTANCE=name, **extra_env),
            cwd=ROOT,
        )
    replica = Replica(name, proc, log)
    replica.wait_for_ports()
    return replica


def audit_verify(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(RISK_MONITOR_DATABASE_URL=database_url),
        cwd=ROOT,
        check=False,
    )
