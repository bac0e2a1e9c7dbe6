"""One demo session: the sandbox venues, a real Monitor on the embedded PostgreSQL, and a probe of it."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import platformdirs

from demo.control import SandboxControl
from demo.probe import MonitorProbe, wait_until
from sandbox import RunningSandbox, SandboxConfig, start
from services import config
from services.app import Monitor
from services.config import Settings
from services.venue_settings import VenueSettings

HERE = Path(__file__).resolve().parent
MONITOR_TOML = HERE / "monitor.toml"
LIMITS_TOML = HERE / "limits.toml"
CUSTODIAN = "custodian-a"
CLIENT = "client-1"
MARKET_DATA = "market-data"

# Calm markets and light trading: normal trading must never trip demo/limits.toml on its own.
SANDBOX = SandboxConfig(seed=7, volatility=0.0005, trade_probability=0.1, step_interval=0.5)
# What every sandbox account starts with (sandbox/world.py); custody is aligned to it at start.
START_USDT = "1000000"
START_BTC_AVAILABLE, START_BTC_LOCKED = "2", "0.5"


def demo_settings(sandbox: RunningSandbox, data_dir: Path) -> Settings:
    # env={}: a RISK_MONITOR_DATABASE_URL meant for a real deployment must not point the demo at it.
    base = config.load(str(MONITOR_TOML), env={})
    venues = (
        *(VenueSettings(name, "exchange", url=url) for name, url in sandbox.exchange_urls.items()),
        *(VenueSettings(name, "custodian", url=url) for name, url in sandbox.custodian_urls.items()),
        VenueSettings(MARKET_DATA, "market_data", target=sandbox.market_data_target),
    )
    return base.with_overrides(
        venues=venues, limits_file=str(LIMITS_TOML), database_url="", embedded_data_dir=str(data_dir / "postgres")
    )


def kept_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("risk-monitor")) / "demo"


@dataclass
class DemoSession:
    """Start order: sandbox, custody aligned, monitor, probe. `stop()` undoes whatever started."""

    keep_data: bool = False
    sandbox: RunningSandbox | None = None
    monitor: Monitor | None = None
    probe: MonitorProbe | None = None
    control: SandboxControl | None = None
    data_dir: Path = field(default_factory=Path)
    _temp: bool = False

    def start(self) -> DemoSession:
        try:
            if self.keep_data:
                self.data_dir = kept_data_dir()
                self.data_dir.mkdir(parents=True, exist_ok=True)
            else:
                self.data_dir = Path(tempfile.mkdtemp(prefix="risk-monitor-demo-"))
                self._temp = True
            self.sandbox = start(SANDBOX)
            self.control = SandboxControl(self.sandbox.control_url)
            self.align_custody()
            self.monitor = Monitor(demo_settings(self.sandbox, self.data_dir))
            self.monitor.start()
            self.probe = MonitorProbe(self.grpc_target, self.http_url)
            self.probe.start()
        except BaseException:
            self.stop()
            raise
        return self

    def align_custody(self) -> None:
        """Segregated custody starts at 250k USDT per account, the exchanges at 1M + 2.5 BTC: make them agree,
        or the reconciliation limit fires before any scenario has run."""
        assert self.sandbox is not None
        assert self.control is not None
        for exchange in self.sandbox.config.exchanges:
            for account in self.accounts(exchange):
                for asset, available, locked in (
                    ("USDT", START_USDT, "0"),
                    ("BTC", START_BTC_AVAILABLE, START_BTC_LOCKED),
                ):
                    self.control.post(
                        "custody-balance",
                        custodian=CUSTODIAN,
                        client_id=CLIENT,
                        asset=asset,
                        available=available,
                        locked=locked,
                        venue=exchange,
                        account_id=account,
                    )

    def accounts(self, exchange: str) -> list[str]:
        assert self.sandbox is not None
        return [f"{exchange}-acc-{i + 1}" for i in range(self.sandbox.config.accounts_per_exchange)]

    @property
    def account_keys(self) -> list[str]:
        """The monitor's account keys ("<venue>:<account id>") of every sandbox account."""
        assert self.sandbox is not None
        return [f"{ex}:{acc}" for ex in self.sandbox.config.exchanges for acc in self.accounts(ex)]

    @property
    def grpc_target(self) -> str:
        assert self.monitor is not None
        return f"{self.monitor.settings.grpc_host}:{self.monitor.grpc_port}"

    @property
    def http_url(self) -> str:
        assert self.monitor is not None
        assert self.monitor.http is not None
        return f"http://{self.monitor.settings.http_host}:{self.monitor.http.port}"

    @property
    def evaluation_interval_s(self) -> float:
        assert self.monitor is not None
        return self.monitor.settings.evaluation_interval_s

    def postgres_pid(self) -> int | None:
        """The embedded PostgreSQL's postmaster pid (postmaster.pid in its data directory)."""
        pid_file = self.data_dir / "postgres" / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Every account evaluated and no alert active: the baseline the scenarios start from."""
        probe = self.probe
        assert probe is not None
        keys = set(self.account_keys)

        def ready() -> bool:
            if not keys <= set(probe.compliance()) or probe.active_alerts():
                return False
            try:  # StreamTicks' state (behind GetRiskSummary) is seeded from the first snapshots
                return all(probe.risk(key).positions is not None for key in keys)
            except grpc.RpcError:
                return False

        return wait_until(ready, timeout, 0.5)

    def stop(self) -> None:
        """Probe, monitor (which stops the embedded PostgreSQL), sandbox; then the temporary data."""
        if self.probe is not None:
            self.probe.close()
        if self.monitor is not None:
            self.monitor.stop()
        if self.control is not None:
            self.control.close()
        if self.sandbox is not None:
            self.sandbox.stop()
        if self._temp:
            shutil.rmtree(self.data_dir, ignore_errors=True)
