"""Sandbox configuration: venue names, starting prices, price-walk and trading parameters."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PRICES = {"BTC-USDT": "60000", "ETH-USDT": "3000", "SOL-USDT": "150", "USDT-USD": "1"}


@dataclass(frozen=True)
class SandboxConfig:
    seed: int = 7
    host: str = "127.0.0.1"
    exchanges: tuple[str, ...] = ("exchange-a", "exchange-b")
    # Exchanges listed here answer with the documented aliases (amount, entry_price, currency,
    # free/used) and JSON numbers instead of strings, so the monitor's alias handling gets exercised.
    alias_exchanges: tuple[str, ...] = ("exchange-b",)
    accounts_per_exchange: int = 3
    custodians: tuple[str, ...] = ("custodian-a",)
    prices: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    drift: float = 0.0  # log-return per step
    volatility: float = 0.002  # standard deviation of the log-return per step
    shock_probability: float = 0.0  # chance per symbol per step of an extra +/- shock_size move
    shock_size: float = 0.05
    trade_probability: float = 0.3  # chance per account per step of a trade
    step_interval: float | None = None  # seconds between background steps; None: step manually
    stream_interval_ms: int = 250  # default StreamPrices cadence when the client asks for 0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> SandboxConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown sandbox config keys: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> SandboxConfig:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.from_mapping(raw)
