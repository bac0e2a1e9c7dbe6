"""The ``[[venues]]`` array of tables of the configuration file: which venues the monitor collects from."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.errors import ConfigError

VENUE_KINDS = ("exchange", "custodian", "market_data")
_VENUE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET_RE = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")


@dataclass(frozen=True)
class VenueSettings:
    """One venue to collect from. The API key is read from the variable ``api_key_env`` names, never the file."""

    id: str
    kind: str  # exchange | custodian | market_data
    url: str = ""  # REST base URL (exchange, custodian)
    target: str = ""  # gRPC host:port (market_data)
    api_key_env: str = ""
    api_key: str = field(default="", repr=False)  # resolved from api_key_env at load
    symbols: tuple[str, ...] = ()  # market data: empty streams every quoted symbol
    connect_timeout_s: float | None = None  # None: collection.connect_timeout_s
    read_timeout_s: float | None = None  # None: collection.read_timeout_s
    concurrency: int | None = None  # None: collection.concurrency
    batch: int | None = None  # accounts per request on the venue's batched endpoints; None: one per request

    @property
    def address(self) -> str:
        return self.url or self.target

    def describe(self) -> str:
        """One line for ``config show``: the key itself is masked, the variable it came from is named."""
        parts = [f"kind={self.kind}", f"address={self.address}"]
        if self.api_key_env:
            parts.append(f"api_key={'***' if self.api_key else '(unset)'} from ${self.api_key_env}")
        if self.symbols:
            parts.append("symbols=" + ",".join(self.symbols))
        for name in ("connect_timeout_s", "read_timeout_s", "concurrency", "batch"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)}")
        return " ".join(parts)


def _venue_text(pattern: re.Pattern[str], what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value.strip()):
            raise TypeError(what)
        return value.strip()

    return parse


def _parse_kind(value: object) -> str:
    if not isinstance(value, str) or value.strip() not in VENUE_KINDS:
        raise TypeError("one of " + ", ".join(VENUE_KINDS))
    return value.strip()


def _parse_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise TypeError("a positive number of seconds")
    return float(value)


def _parse_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise TypeError("a whole number from 1 to 1024")
    return value


def _parse_url(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value.strip()):
        raise TypeError("an http:// or https:// URL")
    return value.strip().rstrip("/")


def _parse_symbols(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError("a list of symbols")
    return tuple(value)


_VENUE_PARSERS: dict[str, Callable[[object], Any]] = {
    "id": _venue_text(_VENUE_ID_RE, "an identifier (letters, digits, . _ : -)"),
    "kind": _parse_kind,
    "url": _parse_url,
    "target": _venue_text(_TARGET_RE, "a gRPC target host:port"),
    "api_key_env": _venue_text(_ENV_NAME_RE, "the NAME of an environment variable holding the key"),
    "symbols": _parse_symbols,
    "connect_timeout_s": _parse_seconds,
    "read_timeout_s": _parse_seconds,
    "concurrency": _parse_count,
    "batch": _parse_count,
}


def parse_venues(raw: object, source: str, env: Mapping[str, str]) -> tuple[VenueSettings, ...]:
    """The ``[[venues]]`` tables; every error is one line naming the venue entry, key and value."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{source}: 'venues' must be an array of tables ([[venues]])")
    venues: list[VenueSettings] = []
    for n, table in enumerate(raw):
        venue = _parse_venue(table, f"{source}: venues[{n}]", env)
        if any(v.id == venue.id for v in venues):
            raise ConfigError(f"{source}: venue '{venue.id}': duplicate venue id")
        venues.append(venue)
    return tuple(venues)


def _parse_venue(table: Mapping[str, Any], where: str, env: Mapping[str, str]) -> VenueSettings:
    unknown = sorted(set(table) - set(_VENUE_PARSERS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(_VENUE_PARSERS)})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        try:
            values[key] = _VENUE_PARSERS[key](value)
        except TypeError as exc:
            # A key pasted where its variable's NAME belongs must not be echoed into a log.
            shown = "(not shown)" if key == "api_key_env" else repr(value)
            raise ConfigError(f"{where}: '{key}' has value {shown}; expected {exc}") from None
    for key in ("id", "kind"):
        if key not in values:
            raise ConfigError(f"{where}: missing key '{key}'")
    where = f"{where.rsplit(': ', 1)[0]}: venue '{values['id']}'"
    needed, other = ("target", "url") if values["kind"] == "market_data" else ("url", "target")
    if needed not in values:
        raise ConfigError(f"{where}: a {values['kind']} venue needs '{needed}'")
    if other in values:
        raise ConfigError(f"{where}: a {values['kind']} venue takes '{needed}', not '{other}'")
    if "symbols" in values and values["kind"] != "market_data":
        raise ConfigError(f"{where}: 'symbols' applies to market_data venues only")
    if "batch" in values and values["kind"] == "market_data":
        raise ConfigError(f"{where}: 'batch' applies to exchange and custodian venues only")
    if "api_key_env" in values:
        values["api_key"] = env.get(values["api_key_env"], "")
        if not values["api_key"]:
            raise ConfigError(f"{where}: environment variable {values['api_key_env']} (api_key_env) is not set")
    return VenueSettings(**values)
