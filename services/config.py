"""Settings: one TOML file, RISK_MONITOR_* environment variables override single keys.

Every key is declared once in ``_FIELDS``; the README's configuration table is generated from the same
declarations (``risk-monitor config keys``), so docs and code cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import ConfigError

ENV_PREFIX = "RISK_MONITOR_"
# Variables with the prefix that are not configuration keys.
_ENV_NOT_KEYS = {"RISK_MONITOR_CONFIG", "RISK_MONITOR_TEST_DATABASE_URL"}
_ENV_NOT_KEYS |= {"RISK_MONITOR_API_TARGET", "RISK_MONITOR_API_TOKEN"}  # the CLI's gRPC client (issue 5)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise TypeError("an integer") from None
    raise TypeError("an integer")


def _parse_port(value: object) -> int:
    port = _parse_int(value)
    if not 0 <= port <= 65535:
        raise TypeError("a port number 0-65535")
    return port


def _parse_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError("a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise TypeError("a number") from None
    else:
        raise TypeError("a number")
    if not number > 0 or number == float("inf"):
        raise TypeError("a positive number")
    return number


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise TypeError("a boolean (true/false)")


def _choice(*options: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.strip() not in options:
            raise TypeError("one of " + ", ".join(options))
        return value.strip()

    return parse


def _parse_level(value: object) -> str:
    return _choice(*_LOG_LEVELS)(value.upper() if isinstance(value, str) else value)


def _parse_optional_path(value: object) -> str:
    text = _parse_str(value)
    return str(Path(text).expanduser()) if text else ""


@dataclass(frozen=True)
class _Field:
    key: str  # dotted TOML key, e.g. "http.port"; env var is RISK_MONITOR_HTTP_PORT
    parse: Callable[[object], Any]
    doc: str
    secret: bool = False

    @property
    def attr(self) -> str:
        return self.key.replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()


_FIELDS: tuple[_Field, ...] = (
    _Field("service.name", _parse_str, "Service name in logs, health and registrations."),
    _Field("service.instance", _parse_str, "Instance id (default: host name)."),
    _Field("service.environment", _parse_str, "Deployment environment label (development, production, ...)."),
    _Field(
        "database.url",
        _parse_str,
        "PostgreSQL URL. Empty: start the embedded PostgreSQL and migrate it.",
        secret=True,
    ),
    _Field("database.pool_size", _parse_int, "Connections kept in the pool."),
    _Field("database.connect_timeout_s", _parse_float, "Connect timeout for the database."),
    _Field("database.statement_timeout_s", _parse_float, "Server-side statement timeout for every session."),
    _Field("embedded.data_dir", _parse_optional_path, "Data directory of the embedded PostgreSQL."),
    _Field("http.host", _parse_str, "HTTP listener address (health, readiness, /metrics)."),
    _Field("http.port", _parse_port, "HTTP listener port (0 picks a free port)."),
    _Field("grpc.host", _parse_str, "gRPC listener address."),
    _Field("grpc.port", _parse_port, "gRPC listener port (0 picks a free port)."),
    _Field("grpc.max_workers", _parse_int, "gRPC worker threads (every open stream holds one)."),
    _Field("log.level", _parse_level, "Log level."),
    _Field("log.format", _choice("json", "text", "auto"), "json, text, or auto (text on a terminal)."),
    _Field("shutdown.grace_s", _parse_float, "Seconds open RPCs get to finish on SIGTERM."),
    # --- evaluation (issue 4) ---
    _Field(
        "limits.file", _parse_optional_path, "Limits TOML file ([[limit]] tables, optional [groups]). Empty: no limits."
    ),
    _Field("limits.reload_interval_s", _parse_float, "Seconds between checks of the limits file for changes."),
    _Field("evaluation.interval_s", _parse_float, "Seconds between scheduled full evaluations."),
    _Field(
        "evaluation.history_every_s",
        _parse_float,
        "Per-account risk figures are written at most this often, and only for accounts whose figures changed.",
    ),
    _Field(
        "notifications.channels",
        _parse_str,
        "Comma-separated notification channels; each alert event gets one outbox row per channel.",
    ),
    # --- gRPC API (issue 5) ---
    _Field("grpc.tls_cert", _parse_optional_path, "PEM certificate chain; with grpc.tls_key the port serves TLS only."),
    _Field("grpc.tls_key", _parse_optional_path, "PEM private key of grpc.tls_cert."),
    _Field("grpc.tls_client_ca", _parse_optional_path, "PEM CA for client certificates: set it for mutual TLS."),
    _Field(
        "grpc.tokens",
        _parse_str,
        "Bearer tokens, comma-separated 'role:name:token' (role: reader or operator).",
        secret=True,
    ),
    _Field("grpc.tokens_file", _parse_optional_path, "File of bearer tokens, one 'role:name:token' per line."),
    _Field("grpc.max_message_bytes", _parse_int, "Largest gRPC message accepted or sent."),
    _Field("grpc.watch_poll_interval_s", _parse_float, "WatchAlerts: how often the alert event log is polled."),
    _Field("grpc.watch_queue_size", _parse_int, "WatchAlerts: events a subscriber may lag before it is dropped."),
    _Field("grpc.tick_queue_size", _parse_int, "StreamTicks: tick batches queued for the alert writer."),
    _Field("grpc.tick_state_resync_s", _parse_float, "StreamTicks: re-seed the in-memory state from snapshots."),
)
_BY_KEY = {f.key: f for f in _FIELDS}
_BY_ENV = {f.env: f for f in _FIELDS}


def _default_data_dir() -> str:
    import platformdirs

    return str(platformdirs.user_data_path("risk-monitor") / "postgres")


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Tests build it directly; the process calls ``load()`` once."""

    service_name: str = "risk-monitor"
    service_instance: str = field(default_factory=lambda: os.uname().nodename)
    service_environment: str = "development"
    database_url: str = ""
    database_pool_size: int = 10
    database_connect_timeout_s: float = 5.0
    database_statement_timeout_s: float = 30.0
    embedded_data_dir: str = field(default_factory=_default_data_dir)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_max_workers: int = 32
    log_level: str = "INFO"
    log_format: str = "auto"
    shutdown_grace_s: float = 5.0
    # --- evaluation (issue 4) ---
    limits_file: str = ""
    limits_reload_interval_s: float = 2.0
    evaluation_interval_s: float = 1.0
    evaluation_history_every_s: float = 60.0
    notifications_channels: str = ""
    # --- gRPC API (issue 5) ---
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_tls_client_ca: str = ""
    grpc_tokens: str = ""
    grpc_tokens_file: str = ""
    grpc_max_message_bytes: int = 8 * 1024 * 1024
    grpc_watch_poll_interval_s: float = 0.25
    grpc_watch_queue_size: int = 1000
    grpc_tick_queue_size: int = 10_000
    grpc_tick_state_resync_s: float = 30.0
    config_file: str = ""

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def notification_channels(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.notifications_channels.split(",") if c.strip())

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, str]:
        """Every key with its effective value, secrets masked (for ``config show``)."""
        out: dict[str, str] = {}
        for f in _FIELDS:
            value = getattr(self, f.attr)
            out[f.key] = mask_secret(f.key, value) if f.secret else str(value)
        return out


def mask_secret(key: str, value: object) -> str:
    """Mask a secret. A URL keeps its scheme, host and database; only the password is hidden."""
    text = str(value)
    if not text:
        return ""
    if key == "database.url":
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(text).render_as_string(hide_password=True)
        except ArgumentError:
            return "***"
    return "***"


def reference() -> tuple[tuple[str, str, str, str], ...]:
    """(key, env var, default, doc) for every setting: the README's configuration table."""
    defaults = Settings(service_instance="<hostname>", embedded_data_dir="<user data dir>/postgres")
    return tuple((f.key, f.env, str(getattr(defaults, f.attr)), f.doc) for f in _FIELDS)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _parse_value(f: _Field, raw: object, source: str) -> Any:
    try:
        return f.parse(raw)
    except TypeError as exc:
        shown = mask_secret(f.key, raw) if f.secret else repr(raw)
        raise ConfigError(f"{source}: '{f.key}' has value {shown}; expected {exc}") from None


def load(config_file: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from defaults, then the TOML file, then RISK_MONITOR_* variables.

    Raises ConfigError naming the key and value for an unknown key or a bad value.
    """
    env = os.environ if env is None else env
    path = config_file or env.get("RISK_MONITOR_CONFIG", "")
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in _flatten(data).items():
            if key not in _BY_KEY:
                raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(_BY_KEY))})")
            values[_BY_KEY[key].attr] = _parse_value(_BY_KEY[key], raw, path)
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        if name not in _BY_ENV:
            raise ConfigError(f"environment: unknown variable {name}")
        f = _BY_ENV[name]
        values[f.attr] = _parse_value(f, raw, f"environment {name}")
    settings = Settings(config_file=str(path), **values)
    if settings.database_url:
        from services.database import normalize_url

        normalize_url(settings.database_url)  # reject a non-PostgreSQL or unparsable URL at load
    return settings
