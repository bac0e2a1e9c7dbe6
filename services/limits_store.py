"""Limits in the database: versioned rows synced from the limits file, and "which limits were in force at T".

A limit's content digest decides whether it changed: a change closes the current row (``valid_to``) and
inserts version + 1, a limit gone from the file is closed, an unchanged one is not touched. The database
numbers versions; a ``version`` key in the file is informational and not part of the digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from models.risk import Dimension, Limit, LimitType, Measure, Scope, Side

# Serializes concurrent syncs (several replicas reloading the same file): the unique index on the current
# version per name would otherwise fail one of them. Arbitrary constant, distinct from the alert chain's.
LIMITS_SYNC_LOCK = 0x6C696D697473  # "limits"

_FILTER_KEYS = ("symbol", "asset", "venue", "kind", "side", "dimension", "measure", "reference")
_FILTER_DECIMALS = ("abs_tolerance", "rel_tolerance")
_SELECT = (
    "SELECT id, name, version, type, scope, scope_ref, filters, warn, critical, clear, enabled, digest,"
    " valid_from, valid_to, changed_by FROM limits"
)


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    closed: tuple[str, ...]
    unchanged: int

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.closed)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def filters_of(limit: Limit) -> dict[str, Any]:
    """The type-specific fields as a JSON object (only those set), Decimals as normalized strings."""
    out: dict[str, Any] = {}
    for key in _FILTER_KEYS:
        value = getattr(limit, key)
        if value is not None and not (key == "measure" and value is Measure.VALUE):
            out[key] = _text(value) if isinstance(value, Decimal) else str(value)
    for key in _FILTER_DECIMALS:
        value = getattr(limit, key)
        if value:
            out[key] = _text(value)
    if limit.per_account:
        out["per_account"] = True
    return out


def limit_digest(limit: Limit) -> str:
    """sha256 of one limit's content (everything but its version), independent of formatting."""
    content = {
        "name": limit.name,
        "type": limit.type.value,
        "scope": limit.scope.value,
        "scope_ref": limit.scope_ref,
        "filters": filters_of(limit),
        "warn": _text(limit.warn),
        "critical": _text(limit.critical),
        "clear": _text(limit.clear),
        "enabled": limit.enabled,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def limit_from_row(row: Mapping[Any, Any]) -> Limit:
    filters: dict[str, Any] = dict(row["filters"] or {})
    kwargs: dict[str, Any] = {}
    for key in ("symbol", "asset", "venue", "kind"):
        if key in filters:
            kwargs[key] = filters[key]
    for key, enum in (("side", Side), ("dimension", Dimension), ("measure", Measure)):
        if key in filters:
            kwargs[key] = enum(filters[key])
    for key in ("reference", *_FILTER_DECIMALS):
        if key in filters:
            kwargs[key] = Decimal(filters[key])
    return Limit(
        name=row["name"],
        type=LimitType(row["type"]),
        warn=row["warn"],
        critical=row["critical"],
        clear=row["clear"],
        scope=Scope(row["scope"]),
        scope_ref=row["scope_ref"],
        per_account=bool(filters.get("per_account", False)),
        enabled=row["enabled"],
        version=row["version"],
        **kwargs,
    )


def current_limits(conn: Connection) -> list[Limit]:
    """The limits in force now (the open version of each), with their database versions."""
    rows = conn.execute(text(_SELECT + " WHERE valid_to IS NULL ORDER BY name"))
    return [limit_from_row(r._mapping) for r in rows]


def limits_in_force(conn: Connection, at: datetime) -> list[Limit]:
    """The limit versions in force at ``at``: valid_from <= at < valid_to (open-ended when valid_to is NULL)."""
    rows = conn.execute(
        text(_SELECT + " WHERE valid_from <= :at AND (valid_to IS NULL OR valid_to > :at) ORDER BY name"),
        {"at": at},
    )
    return [limit_from_row(r._mapping) for r in rows]


def sync_limits(conn: Connection, limits: Sequence[Limit], *, now: datetime, changed_by: str) -> SyncResult:
    """Make the open versions in ``limits`` match ``limits`` (inside the caller's transaction)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LIMITS_SYNC_LOCK})
    current = {
        r.name: (r.id, r.version, r.digest)
        for r in conn.execute(text("SELECT id, name, version, digest FROM limits WHERE valid_to IS NULL"))
    }
    wanted = {limit.name: limit for limit in limits}
    added: list[str] = []
    changed: list[str] = []
    unchanged = 0
    close_ids: list[int] = []
    inserts: list[tuple[Limit, int, str]] = []
    for name, limit in sorted(wanted.items()):
        digest = limit_digest(limit)
        seen = current.get(name)
        if seen is None:
            added.append(name)
            inserts.append((limit, _next_version(conn, name), digest))
        elif seen[2] != digest:
            changed.append(name)
            close_ids.append(seen[0])
            inserts.append((limit, seen[1] + 1, digest))
        else:
            unchanged += 1
    closed = sorted(set(current) - set(wanted))
    close_ids += [current[name][0] for name in closed]
    if close_ids:
        conn.execute(text("UPDATE limits SET valid_to = :now WHERE id = ANY(:ids)"), {"now": now, "ids": close_ids})
    for limit, version, digest in inserts:
        conn.execute(
            text(
                "INSERT INTO limits (name, version, type, scope, scope_ref, filters, warn, critical, clear, enabled,"
                " digest, valid_from, valid_to, changed_by) VALUES (:name, :version, :type, :scope, :scope_ref,"
                " CAST(:filters AS jsonb), :warn, :critical, :clear, :enabled, :digest, :now, NULL, :changed_by)"
            ),
            {
                "name": limit.name,
                "version": version,
                "type": limit.type.value,
                "scope": limit.scope.value,
                "scope_ref": limit.scope_ref,
                "filters": json.dumps(filters_of(limit), sort_keys=True),
                "warn": limit.warn,
                "critical": limit.critical,
                "clear": limit.clear,
                "enabled": limit.enabled,
                "digest": digest,
                "now": now,
                "changed_by": changed_by,
            },
        )
    return SyncResult(tuple(added), tuple(changed), tuple(closed), unchanged)


def _next_version(conn: Connection, name: str) -> int:
    """A limit removed and later re-added continues its version numbering (names are unique per version)."""
    latest = conn.scalar(text("SELECT max(version) FROM limits WHERE name = :name"), {"name": name})
    return int(latest or 0) + 1
