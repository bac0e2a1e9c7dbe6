"""Start the sandbox venues on loopback and drive them: `start()` returns a `RunningSandbox`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.documents import CustodianDocuments, ExchangeDocuments, NotFound
from sandbox.faults import ANY, Fault, FaultBook
from sandbox.http_server import ControlServer, VenueServer
from sandbox.market_data import VENUE as MARKET_DATA
from sandbox.market_data import MarketDataServer
from sandbox.world import SandboxWorld


class RunningSandbox:
    """Live sandbox: URLs of every venue, the world, the fault book and the control methods."""

    def __init__(self, config: SandboxConfig, *, control_port: int = 0) -> None:
        self.config = config
        self.world = SandboxWorld(config)
        self.faults = FaultBook()
        self._stopping = threading.Event()
        host = config.host
        self.exchanges = {
            name: VenueServer(name, ExchangeDocuments(self.world, name), self.faults, self._stopping, host=host)
            for name in config.exchanges
        }
        self.custodians = {
            name: VenueServer(name, CustodianDocuments(self.world, name), self.faults, self._stopping, host=host)
            for name in config.custodians
        }
        self.market_data = MarketDataServer(self.world, self.faults, host=host)
        self.control_server = ControlServer(self.control, host=host, port=control_port)
        self._stepper: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> RunningSandbox:
        for server in (*self.exchanges.values(), *self.custodians.values()):
            server.up()
        self.market_data.up()
        self.control_server.up()
        if self.config.step_interval:
            self._stepper = threading.Thread(target=self._step_forever, name="sandbox-stepper", daemon=True)
            self._stepper.start()
        return self

    def _step_forever(self) -> None:
        interval = self.config.step_interval or 1.0
        while not self._stopping.wait(interval):
            self.world.step()

    def stop(self) -> None:
        self._stopping.set()  # also wakes handlers sleeping in an injected delay
        self.control_server.down()
        self.market_data.down()
        for server in (*self.exchanges.values(), *self.custodians.values()):
            server.down()
        if self._stepper is not None:
            self._stepper.join(timeout=5)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def exchange_urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.exchanges.items()}

    @property
    def custodian_urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.custodians.items()}

    @property
    def market_data_target(self) -> str:
        return self.market_data.target

    @property
    def control_url(self) -> str:
        return self.control_server.url

    def describe(self) -> dict[str, Any]:
        return {
            "exchanges": self.exchange_urls,
            "custodians": self.custodian_urls,
            "market_data": self.market_data_target,
            "control": self.control_url,
            "seed": self.config.seed,
        }

    # -- faults and outages (Python control surface) ------------------------------------------------

    def slow(self, venue: str, seconds: float, *, endpoint: str = ANY, count: int | None = None) -> None:
        self.faults.add(Fault("delay", venue, endpoint, count, seconds=seconds))

    def fail(self, venue: str, status: int = 500, *, endpoint: str = ANY, count: int | None = None) -> None:
        self.faults.add(Fault("error", venue, endpoint, count, status=status))

    def malform(self, venue: str, mode: str, *, endpoint: str = ANY, count: int | None = None) -> None:
        self.faults.add(Fault("malformed", venue, endpoint, count, mode=mode))

    def hits(self, venue: str, endpoint: str) -> int:
        """Requests the venue has received on `endpoint` (retries included)."""
        return self.faults.hits[venue, endpoint]

    def clear_faults(self, venue: str = ANY) -> None:
        self.faults.clear(venue)

    def take_down(self, venue: str) -> None:
        self._venue(venue).down()

    def bring_up(self, venue: str) -> None:
        self._venue(venue).up()

    def _venue(self, name: str) -> VenueServer | MarketDataServer:
        if name == MARKET_DATA:
            return self.market_data
        server = self.exchanges.get(name) or self.custodians.get(name)
        if server is None:
            raise NotFound(f"unknown venue {name!r}")
        return server

    # -- HTTP control surface -----------------------------------------------------------------------

    def control(self, method: str, action: str, params: dict[str, Any]) -> Any:
        """`POST /control/<action>` with a JSON object; `GET /control/state`. See docs/venue-api.md."""
        if method == "GET":
            if action != "state":
                raise NotFound(f"no GET /control/{action}")
            return self.state()
        p = _Params(params)
        world = self.world
        actions: dict[str, Callable[[], Any]] = {
            "step": lambda: world.step(int(p.get("n", 1))),
            "price": lambda: world.set_price(p["symbol"], p.decimal("price")),
            "shock": lambda: world.shock(p.decimal("percent"), p.get("symbol")),
            "position": lambda: world.set_position(
                p["venue"], p["account_id"], p["symbol"], p.decimal("quantity"), p.decimal("avg_price")
            ),
            "trade": lambda: world.trade(
                p["venue"], p["account_id"], p["symbol"], p.decimal("quantity"), p.optional_decimal("price")
            ),
            "balance": lambda: world.set_balance(
                p["venue"], p["account_id"], p["asset"], p.decimal("available"), p.decimal("locked", "0")
            ),
            "custody-balance": lambda: world.set_custody_balance(
                p["custodian"],
                p["client_id"],
                p["asset"],
                p.decimal("available"),
                p.decimal("locked", "0"),
                venue=p.get("venue"),
                account_id=p.get("account_id"),
            ),
            "settlement": lambda: {
                "settlement_id": world.add_settlement(
                    p["custodian"],
                    p["account_id"],
                    p["asset"],
                    p.decimal("quantity"),
                    expected_settlement_date=p.date("expected_settlement_date"),
                )
            },
            "settle": lambda: world.settle(p["custodian"], p["settlement_id"]),
            "delay": lambda: self.slow(
                p["venue"], float(p["seconds"]), endpoint=p.get("endpoint", ANY), count=p.count()
            ),
            "error": lambda: self.fail(
                p["venue"], int(p.get("status", 500)), endpoint=p.get("endpoint", ANY), count=p.count()
            ),
            "malformed": lambda: self.malform(p["venue"], p["mode"], endpoint=p.get("endpoint", ANY), count=p.count()),
            "clear": lambda: self.clear_faults(p.get("venue", ANY)),
            "down": lambda: self.take_down(p["venue"]),
            "up": lambda: self.bring_up(p["venue"]),
            "stream": lambda: self._stream_control(p["action"]),
            "trading": lambda: self._trading_control(p["state"]),
        }
        if action not in actions:
            raise NotFound(f"no POST /control/{action}")
        return actions[action]()

    def _trading_control(self, state: str) -> None:
        if state not in ("paused", "on"):
            raise ValueError("trading state must be 'paused' or 'on'")
        with self.world.lock:
            self.world.trading = state == "on"

    def _stream_control(self, action: str) -> None:
        if action == "pause":
            self.market_data.pause_stream()
        elif action == "resume":
            self.market_data.resume_stream()
        else:
            raise ValueError("stream action must be 'pause' or 'resume'")

    def state(self) -> dict[str, Any]:
        with self.world.locked():
            prices = {s: str(q.price) for s, q in self.world.quotes.items()}
            steps = self.world.steps
        venues = {name: self._venue(name).is_up for name in [*self.exchanges, *self.custodians, MARKET_DATA]}
        return {
            **self.describe(),
            "steps": steps,
            "prices": prices,
            "up": venues,
            "faults": [asdict(f) for f in self.faults.active()],
        }


class _Params:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def __getitem__(self, key: str) -> Any:
        if self.raw.get(key) is None:
            raise ValueError(f"missing parameter {key!r}")
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def decimal(self, key: str, default: str | None = None) -> Decimal:
        value = self.raw.get(key, default)
        if value is None:
            raise ValueError(f"missing parameter {key!r}")
        return Decimal(str(value))

    def optional_decimal(self, key: str) -> Decimal | None:
        return None if self.raw.get(key) is None else self.decimal(key)

    def date(self, key: str) -> date | None:
        value = self.raw.get(key)
        return None if value is None else date.fromisoformat(str(value))

    def count(self) -> int | None:
        count = self.raw.get("count")
        return None if count is None else int(count)


def start(config: SandboxConfig | None = None, *, control_port: int = 0, **overrides: Any) -> RunningSandbox:
    """Start every venue on loopback (ports chosen by the OS) and return the running sandbox.

    `overrides` replace fields of `config` (e.g. `seed=3, step_interval=0.5`).
    """
    config = replace(config or SandboxConfig(), **overrides)
    return RunningSandbox(config, control_port=control_port).start()
