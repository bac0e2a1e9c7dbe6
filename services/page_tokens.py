"""Opaque page tokens for keyset pagination: the last row's key, bound to the filters it was issued for."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.errors import InvalidArgumentError


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: its (time, id) key. ``time`` is unused for id-only keys."""

    time: datetime | None
    id: int


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode(cursor: Cursor, bound_to: Sequence[str]) -> str:
    body = {"t": cursor.time.isoformat() if cursor.time else None, "i": cursor.id, "f": _digest(bound_to)}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str, bound_to: Sequence[str], *, field: str = "page_token") -> Cursor | None:
    """None for an empty token; InvalidArgumentError naming the field for a garbled or foreign one."""
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        time = datetime.fromisoformat(body["t"]) if body["t"] is not None else None
        cursor = Cursor(time, int(body["i"]))
        digest = body["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"{field} is not a token this server issued") from exc
    if digest != _digest(bound_to):
        raise InvalidArgumentError(f"{field} was issued for different filters or order")
    return cursor
