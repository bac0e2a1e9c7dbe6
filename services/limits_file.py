"""Load limits from a TOML file (`[[limit]]` tables, optional `[groups]`) with errors that name the file and line.

Groups live in the limits file, next to the group-scoped limits that use them, so one reviewed file (and one
hot reload) changes both: `[groups]` maps a group name to its member accounts, `"<venue>:<external id>"`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

from models.risk.limits import Dimension, InvalidLimit, Limit, LimitType, Measure, Scope, Side

_DECIMAL_KEYS = ("warn", "critical", "clear", "abs_tolerance", "rel_tolerance", "reference")
_TEXT_KEYS = ("name", "scope_ref", "symbol", "asset", "venue", "kind")
_KNOWN_KEYS = frozenset(
    {
        *_DECIMAL_KEYS,
        *_TEXT_KEYS,
        "type",
        "scope",
        "per_account",
        "enabled",
        "version",
        "side",
        "dimension",
        "measure",
    }
)
_TABLE_HEADER = re.compile(r"^\s*\[\[\s*limit\s*\]\]\s*(#.*)?$")


class LimitsFileError(ValueError):
    """One line: "limits.toml:23: limit 'btc-long' has unknown type 'positon_quantity'"."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}" if line else f"{self.path}: {reason}")


def load_limits(path: str | Path) -> list[Limit]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LimitsFileError(path, None, f"cannot read limits file: {exc.strerror}") from None
    return parse_limits(text, path=path.name)


def parse_limits(text: str, *, path: str | Path = "<limits>") -> list[Limit]:
    """Parse and validate a limits document. Raises LimitsFileError on the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LimitsFileError(path, _toml_error_line(exc), f"invalid TOML: {_toml_error_message(exc)}") from None
    lines = text.splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if _TABLE_HEADER.match(line)]
    extra = sorted(set(document) - {"limit", "groups"})
    if extra:
        raise LimitsFileError(path, _find_line(lines, 0, len(lines), extra[0]), f"unknown top-level key {extra[0]!r}")
    tables = document.get("limit", [])
    if not isinstance(tables, list):
        raise LimitsFileError(path, None, "'limit' must be an array of tables: [[limit]]")
    limits: list[Limit] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        start = starts[index] if index < len(starts) else None
        end = starts[index + 1] - 1 if index + 1 < len(starts) else len(lines)

        def fail(reason: str, key: str | None = None, *, start: int | None = start, end: int = end) -> LimitsFileError:
            line = _find_line(lines, start or 0, end, key) if key else None
            return LimitsFileError(path, line or start, reason)

        limit = _build(table, fail)
        if limit.name in seen:
            raise fail(f"limit {limit.name!r} is defined twice (first at line {seen[limit.name]})", "name")
        seen[limit.name] = start or 0
        limits.append(limit)
    return limits


_ACCOUNT_KEY = re.compile(r"^[^:\s]+:\S+$")


def parse_groups(text: str, *, path: str | Path = "<limits>") -> dict[str, tuple[str, ...]]:
    """The `[groups]` table: group name -> member account keys ("venue:external_id"). Empty if absent."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LimitsFileError(path, _toml_error_line(exc), f"invalid TOML: {_toml_error_message(exc)}") from None
    table = document.get("groups", {})
    lines = text.splitlines()
    if not isinstance(table, dict):
        raise LimitsFileError(path, _find_line(lines, 1, len(lines), "groups"), "'groups' must be a table")
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in table.items():
        line = _find_line(lines, 1, len(lines), name)
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise LimitsFileError(path, line, f"group {name!r} must be a list of account keys")
        bad = [m for m in members if not _ACCOUNT_KEY.match(m)]
        if bad:
            raise LimitsFileError(path, line, f'group {name!r} has {bad[0]!r}; expected "<venue>:<account id>"')
        groups[name] = tuple(dict.fromkeys(members))
    return groups


def _build(table: dict[str, Any], fail: Callable[..., LimitsFileError]) -> Limit:  # noqa: PLR0912  (one rule per field)
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise fail("limit has no 'name'")
    label = f"limit {name!r}"
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise fail(f"{label} has unknown key {unknown[0]!r}", unknown[0])
    kwargs: dict[str, Any] = {"name": name}
    raw_type = table.get("type")
    if raw_type is None:
        raise fail(f"{label} has no 'type'")
    try:
        kwargs["type"] = LimitType(str(raw_type))
    except ValueError:
        raise fail(f"{label} has unknown type {raw_type!r}", "type") from None
    enums: tuple[tuple[str, type[StrEnum]], ...] = (
        ("scope", Scope),
        ("side", Side),
        ("dimension", Dimension),
        ("measure", Measure),
    )
    for key, enum in enums:
        if key in table:
            try:
                kwargs[key] = enum(table[key])
            except ValueError:
                choices = ", ".join(e.value for e in enum)
                raise fail(f"{label} has {key} {table[key]!r}; expected one of {choices}", key) from None
    for key in _DECIMAL_KEYS:
        if key in table:
            try:
                kwargs[key] = _decimal(table[key])
            except ValueError as exc:
                raise fail(f"{label} {key} {exc}", key) from None
    for key in _TEXT_KEYS[1:]:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise fail(f"{label} {key} must be a non-empty string", key)
            kwargs[key] = table[key]
    for key in ("per_account", "enabled"):
        if key in table:
            if not isinstance(table[key], bool):
                raise fail(f"{label} {key} must be true or false", key)
            kwargs[key] = table[key]
    if "version" in table:
        if not isinstance(table["version"], int) or isinstance(table["version"], bool) or table["version"] < 1:
            raise fail(f"{label} version must be a positive integer", "version")
        kwargs["version"] = table["version"]
    try:
        return Limit(**kwargs)
    except InvalidLimit as exc:
        raise fail(str(exc), exc.key) from None


def _decimal(value: object) -> Decimal:
    """Thresholds may be strings ("0.1") or TOML numbers. Floats go through str(): Decimal(0.1) would
    carry binary noise (0.1000000000000000055...), str(0.1) is the shortest repr and reads back as 0.1."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a number or a numeric string, not {type(value).__name__}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"is not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"must be finite, not {value!r}")
    return number


def _find_line(lines: Sequence[str], start: int, end: int, key: str | None) -> int | None:
    """1-based line of `key = ...` inside the table spanning lines start..end (1-based, inclusive)."""
    if key is None:
        return None
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(max(start, 1), end + 1):
        if pattern.match(lines[number - 1]):
            return number
    return None


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python 3.14+; earlier versions only put it in the message
    if isinstance(lineno, int):
        return lineno
    match = re.search(r"at line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _toml_error_message(exc: tomllib.TOMLDecodeError) -> str:
    return re.sub(r"\s*\(at line \d+, column \d+\)$", "", str(exc))


def limits_digest(limits: Iterable[Limit]) -> str:
    """sha256 over the canonical content (sorted by name, Decimals normalised), independent of file order,
    formatting, comments and of "1.0" vs "1". Callers compare digests to detect a changed limits set."""
    canonical = []
    for limit in sorted(limits, key=lambda item: item.name):
        entry: dict[str, object] = {}
        for f in fields(limit):
            if not f.init:
                continue
            value = getattr(limit, f.name)
            if isinstance(value, Decimal):
                value = format(value.normalize(), "f")
            entry[f.name] = value
        canonical.append(entry)
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
