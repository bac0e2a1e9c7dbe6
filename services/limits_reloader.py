"""Hot reload of the limits file: a change (mtime, then content digest) is validated, synced to the
``limits`` table and put in force without a restart. An invalid file is rejected with ``file:line: reason``
logged and counted; the limits in force stay as they were (also across a restart: then they come from the
database)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from models.risk import Limit
from services import metrics
from services.limits_file import LimitsFileError, parse_groups, parse_limits
from services.limits_store import current_limits, sync_limits

log = logging.getLogger(__name__)

APPLIED = "applied"
UNCHANGED = "unchanged"
REJECTED = "rejected"


@dataclass
class LimitsReloader:
    """Holds the limits (with their database versions) and groups in force; ``reload()`` is the job."""

    engine: Engine
    path: str  # empty: no limits file, no limits
    clock: Callable[[], datetime]
    changed_by: str = ""
    last_error: str | None = None
    _limits: tuple[Limit, ...] = ()
    _groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _digest: str | None = None
    _loaded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.changed_by:
            self.changed_by = f"file:{self.path}@{os.uname().nodename}"

    def limits(self) -> tuple[Limit, ...]:
        return self._limits

    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return self._groups

    def reload(self) -> str:
        """Check the file; apply it if it changed and is valid. Returns applied, unchanged or rejected."""
        if not self.path:
            return UNCHANGED
        with self._lock:  # the scheduler never overlaps runs, but a manual reload might
            return self._reload()

    def _reload(self) -> str:
        try:
            stat = Path(self.path).stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return UNCHANGED
            content = Path(self.path).read_bytes()
        except OSError as exc:
            return self._reject(LimitsFileError(self.path, None, f"cannot read limits file: {exc.strerror}"))
        digest = hashlib.sha256(content).hexdigest()
        self._stamp = stamp
        if digest == self._digest:
            return UNCHANGED  # touched, not changed
        self._digest = digest  # a rejected file is reported once, not at every check
        try:
            source = content.decode("utf-8")
            limits = parse_limits(source, path=self.path)
            groups = parse_groups(source, path=self.path)
        except UnicodeDecodeError:
            return self._reject(LimitsFileError(self.path, None, "is not UTF-8 text"))
        except LimitsFileError as exc:
            return self._reject(exc)
        with self.engine.begin() as conn:
            result = sync_limits(conn, limits, now=self.clock(), changed_by=self.changed_by)
            in_force = current_limits(conn)
        self._limits, self._groups, self._loaded, self.last_error = tuple(in_force), groups, True, None
        metrics.LIMITS_IN_FORCE.set(len(in_force))
        metrics.LIMITS_RELOADS.labels(APPLIED).inc()
        log.info(
            "limits file %s applied: %d added, %d changed, %d closed, %d unchanged",
            self.path,
            len(result.added),
            len(result.changed),
            len(result.closed),
            result.unchanged,
        )
        return APPLIED

    def _reject(self, error: LimitsFileError) -> str:
        self.last_error = str(error)
        metrics.LIMITS_RELOADS.labels(REJECTED).inc()
        log.error("limits file rejected, the limits in force stay: %s", error)
        if not self._loaded:
            # Nothing loaded in this process yet (start with a broken file): the versions in force are the
            # ones the database holds from the last good file.
            with self.engine.connect() as conn:
                self._limits = tuple(current_limits(conn))
            self._loaded = True
        return REJECTED
