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
from services.venue_settings import VenueSettings, parse_venues

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


def _parse_positive_int(value: object) -> int:
    number = _parse_int(value)
    if number < 1:
        raise TypeError("a positive integer")
    return number


def _parse_shard_count(value: object) -> int:
    number = _parse_int(value)
    if not 0 <= number <= 1024:
        raise TypeError("an integer from 0 to 1024")
    return number


def _parse_non_negative_int(value: object) -> int:
    number = _parse_int(value)
    if number < 0:
        raise TypeError("a non-negative integer")
    return number


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


def _parse_ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("a number from 0 to 1")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise TypeError("a number from 0 to 1") from None
    if not 0.0 <= number <= 1.0:
        raise TypeError("a number from 0 to 1")
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


NOTIFICATION_CHANNELS = ("alertmanager", "webhook", "audit")


def _parse_channels(value: object) -> tuple[str, ...]:
    """A comma-separated list (or a TOML array) of known channel names, duplicates dropped, order kept."""
    if isinstance(value, list | tuple):
        names = [str(v).strip() for v in value]
    else:
        names = [part.strip() for part in _parse_str(value).split(",")]
    chosen = tuple(dict.fromkeys(n for n in names if n))
    unknown = [n for n in chosen if n not in NOTIFICATION_CHANNELS]
    if unknown:
        raise TypeError("channel names from " + ", ".join(NOTIFICATION_CHANNELS))
    return chosen


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
    # --- observability and notifications (issue 6) ---
    _Field("metrics.per_account", _parse_bool, "Also export P&L, gross and delta per account (more series)."),
    _Field(
        "notifications.channels",
        _parse_channels,
        "Enabled notification channels, comma-separated: alertmanager, webhook, audit (empty: none).",
    ),
    _Field("notifications.dispatch_interval_s", _parse_float, "Seconds between outbox dispatcher runs."),
    _Field("notifications.batch_size", _parse_int, "Outbox rows one dispatcher run claims per channel."),
    _Field("notifications.timeout_s", _parse_float, "HTTP timeout of one delivery attempt."),
    _Field("notifications.retry_base_s", _parse_float, "First retry delay; doubles per attempt, with jitter."),
    _Field("notifications.retry_max_s", _parse_float, "Cap of the retry delay."),
    _Field("notifications.alertmanager_url", _parse_str, "Alertmanager base URL (POST /api/v2/alerts)."),
    _Field(
        "notifications.alertmanager_resend_s",
        _parse_float,
        "Seconds between re-posts of active alerts, so Alertmanager does not expire them.",
    ),
    _Field("notifications.webhook_url", _parse_str, "Generic webhook URL (JSON event documents)."),
    _Field(
        "notifications.webhook_secret_env",
        _parse_str,
        "Name of the environment variable holding the webhook HMAC-SHA256 secret (empty: unsigned).",
        secret=True,
    ),
    _Field("notifications.audit_url", _parse_str, "Audit correlator base URL (POST /api/v1/audit/events)."),
    _Field(
        "tracing.otlp_endpoint",
        _parse_str,
        "OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces (empty: tracing off).",
        secret=True,  # a collector URL may carry credentials; shown with the password masked
    ),
    _Field(
        "tracing.sample_ratio", _parse_ratio, "Share of new traces recorded, 0-1 (a caller's sampled trace is kept)."
    ),
    _Field("tracing.service_name", _parse_str, "Service name on spans (empty: service.name)."),
    _Field("registry.enabled", _parse_bool, "Register this instance in the ecosystem's Redis service registry."),
    _Field("registry.redis_url", _parse_str, "Redis URL of the service registry.", secret=True),
    _Field("registry.ttl_s", _parse_int, "TTL of the registration key (seconds)."),
    _Field("registry.heartbeat_s", _parse_float, "Seconds between registration refreshes."),
    _Field("registry.advertise_host", _parse_str, "Address to register (empty: the bound or outbound address)."),
    _Field("config_service.url", _parse_str, "Configuration service base URL (empty: local configuration only)."),
    _Field("config_service.cache_ttl_s", _parse_float, "Seconds a configuration-service answer is reused."),
    _Field("config_service.timeout_s", _parse_float, "HTTP timeout of a configuration-service request."),
    # --- collection (issue 3) ---
    _Field("collection.prices_interval_s", _parse_float, "Seconds between price snapshots of the streamed cache."),
    _Field("collection.positions_interval_s", _parse_float, "Seconds between position collections per exchange."),
    _Field("collection.balances_interval_s", _parse_float, "Seconds between balance collections per venue."),
    _Field("collection.settlements_interval_s", _parse_float, "Seconds between pending-settlement collections."),
    _Field(
        "collection.price_refresh_intervals",
        _parse_positive_int,
        "Price intervals without a streamed update before a symbol is polled.",
    ),
    _Field("collection.max_skew_s", _parse_float, "Allowed venue clock lead before a timestamp is 'in the future'."),
    _Field("collection.connect_timeout_s", _parse_float, "Venue connect timeout (a venue may override it)."),
    _Field("collection.read_timeout_s", _parse_float, "Venue read timeout / gRPC deadline (a venue may override it)."),
    _Field("collection.workers", _parse_positive_int, "Threads per venue (bulkhead): a slow venue holds only its own."),
    _Field(
        "collection.concurrency",
        _parse_positive_int,
        "Per-account requests in flight per venue within its runs (and its connection pool size); "
        "a venue may override it.",
    ),
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
    # --- history partitions and retention (issue 8) ---
    _Field("retention.precreate_days", _parse_positive_int, "Days of daily history partitions created ahead of today."),
    _Field(
        "retention.snapshots_days",
        _parse_positive_int,
        "Days of position, balance, custody and price snapshots kept (whole days dropped; latest state kept).",
    ),
    _Field("retention.collection_runs_days", _parse_positive_int, "Days of collection_runs kept."),
    _Field("retention.rejected_records_days", _parse_positive_int, "Days of rejected_records kept."),
    _Field("retention.evaluations_days", _parse_positive_int, "Days of evaluations (one row per pass) kept."),
    _Field(
        "retention.account_risk_history_days",
        _parse_positive_int,
        "Days of account_risk_history (per-account risk figures over time) kept.",
    ),
    _Field(
        "retention.delivered_notifications_days",
        _parse_positive_int,
        "Days delivered outbox rows and their attempts are kept (notification_deliveries keeps every delivery).",
    ),
    _Field(
        "retention.maintenance_interval_s",
        _parse_float,
        "Seconds between partition maintenance runs (and one at start).",
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
    _Field("grpc.tick_queue_size", _parse_int, "StreamTicks: alert writer queue depth (batches) that logs a warning."),
    _Field("grpc.tick_state_resync_s", _parse_float, "StreamTicks: re-seed the in-memory state from snapshots."),
    # --- several replicas (issue 8) ---
    _Field(
        "leases.enabled",
        _parse_bool,
        "Run each scheduled job on one replica at a time (job leases in PostgreSQL); false: every process runs all.",
    ),
    _Field(
        "leases.ttl_s",
        _parse_float,
        "Seconds a job lease lives without renewal: a dead replica's jobs move to another after this.",
    ),
    _Field(
        "leases.account_shards",
        _parse_shard_count,
        "Account shards per per-account collection job, split across replicas (0: one replica collects all).",
    ),
    # --- interpreter (issue 8: scheduler lateness under load, docs/performance.md "Soak") ---
    _Field(
        "runtime.switch_interval_ms",
        _parse_float,
        "GIL switch interval of `serve` (Python's default is 5): how long a woken thread (a due job, a tick) waits.",
    ),
    _Field(
        "runtime.gc_gen0_threshold",
        _parse_non_negative_int,
        "Allocations between young-generation garbage collections of `serve` (0: Python's default, 700).",
    ),
    _Field(
        "runtime.workers",
        _parse_bool,
        "Run collection, evaluation and the tick path in worker processes, so the scheduler's jobs start on time.",
    ),
    _Field(
        "runtime.scheduler_realtime_priority",
        _parse_non_negative_int,
        "With runtime.workers: SCHED_RR priority (1-99) of the scheduler's threads, so due jobs start on time "
        "on a busy machine (needs CAP_SYS_NICE or RLIMIT_RTPRIO; refused: logged, normal class). 0: off.",
    ),
    _Field(
        "runtime.worker_nice",
        _parse_non_negative_int,
        "Nice increment of the worker processes: the scheduler and the API front preempt their bulk work.",
    ),
    _Field(
        "runtime.worker_call_timeout_s",
        _parse_float,
        "A job run in a worker process longer than this means the worker hangs: it is killed and restarted.",
    ),
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
    # --- observability and notifications (issue 6) ---
    metrics_per_account: bool = False
    notifications_channels: tuple[str, ...] = ()
    notifications_dispatch_interval_s: float = 1.0
    notifications_batch_size: int = 100
    notifications_timeout_s: float = 5.0
    notifications_retry_base_s: float = 1.0
    notifications_retry_max_s: float = 300.0
    notifications_alertmanager_url: str = ""
    notifications_alertmanager_resend_s: float = 60.0
    notifications_webhook_url: str = ""
    notifications_webhook_secret_env: str = ""
    notifications_audit_url: str = ""
    tracing_otlp_endpoint: str = ""
    tracing_sample_ratio: float = 1.0
    tracing_service_name: str = ""
    registry_enabled: bool = False
    registry_redis_url: str = "redis://127.0.0.1:6379/0"
    registry_ttl_s: int = 90
    registry_heartbeat_s: float = 30.0
    registry_advertise_host: str = ""
    config_service_url: str = ""
    config_service_cache_ttl_s: float = 60.0
    config_service_timeout_s: float = 2.0
    # --- collection (issue 3) ---
    collection_prices_interval_s: float = 1.0
    collection_positions_interval_s: float = 2.0
    collection_balances_interval_s: float = 5.0
    collection_settlements_interval_s: float = 30.0
    collection_price_refresh_intervals: int = 3
    collection_max_skew_s: float = 5.0
    collection_connect_timeout_s: float = 2.0
    collection_read_timeout_s: float = 5.0
    collection_workers: int = 2
    collection_concurrency: int = 16
    # --- history partitions and retention (issue 8) ---
    retention_precreate_days: int = 7
    retention_snapshots_days: int = 30
    retention_collection_runs_days: int = 90
    retention_rejected_records_days: int = 90
    retention_evaluations_days: int = 90
    retention_account_risk_history_days: int = 400
    retention_delivered_notifications_days: int = 30
    retention_maintenance_interval_s: float = 3600.0
    # --- several replicas (issue 8) ---
    leases_enabled: bool = True
    leases_ttl_s: float = 5.0
    leases_account_shards: int = 16
    # --- interpreter (issue 8) ---
    runtime_switch_interval_ms: float = 1.0
    runtime_gc_gen0_threshold: int = 0  # measured: 50,000 made each young pass ~100 ms (docs/performance.md)
    runtime_workers: bool = True
    runtime_scheduler_realtime_priority: int = 10
    runtime_worker_nice: int = 0
    runtime_worker_call_timeout_s: float = 120.0
    venues: tuple[VenueSettings, ...] = ()
    # --- evaluation (issue 4) ---
    limits_file: str = ""
    limits_reload_interval_s: float = 2.0
    evaluation_interval_s: float = 1.0
    evaluation_history_every_s: float = 60.0
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

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, str]:
        """Every key with its effective value, secrets masked (for ``config show``)."""
        out: dict[str, str] = {}
        for f in _FIELDS:
            value = getattr(self, f.attr)
            out[f.key] = mask_secret(f.key, value) if f.secret else render(value)
        for venue in self.venues:
            out[f"venues.{venue.id}"] = venue.describe()
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
    if key in ("registry.redis_url", "tracing.otlp_endpoint"):
        return _mask_url_password(text)
    return "***"


def _mask_url_password(text: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def secret_from_env(variable: str, env: Mapping[str, str] | None = None) -> str:
    """The secret held by the environment variable a ``*_secret_env`` key names ("" when none is named).

    Secrets live only in the environment; the configuration names the variable, so config files and
    ``config show`` never contain them."""
    if not variable:
        return ""
    env = os.environ if env is None else env
    value = env.get(variable, "")
    if not value:
        raise ConfigError(f"environment variable {variable} (named by a *_secret_env key) is not set")
    return value


def reference() -> tuple[tuple[str, str, str, str], ...]:
    """(key, env var, default, doc) for every setting: the README's configuration table."""
    defaults = Settings(service_instance="<hostname>", embedded_data_dir="<user data dir>/postgres")
    return tuple((f.key, f.env, render(getattr(defaults, f.attr)), f.doc) for f in _FIELDS)


def render(value: object) -> str:
    """A value as it would be written in the environment (lists comma-separated)."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


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
    venues: tuple[VenueSettings, ...] = ()
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        if "venues" in data:  # an array of tables, not a key: parsed on its own
            venues = parse_venues(data.pop("venues"), str(path), env)
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
    settings = Settings(config_file=str(path), venues=venues, **values)
    if settings.database_url:
        from services.database import normalize_url

        normalize_url(settings.database_url)  # reject a non-PostgreSQL or unparsable URL at load
    return settings
