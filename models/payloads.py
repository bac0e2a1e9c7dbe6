"""Parse and validate venue payloads (exchange, custodian, market data) into plain records.

Pure: stdlib only, no network, no clock (the caller passes `now`). A response whose envelope is
unusable raises `MalformedResponse`; inside a usable envelope each record is validated on its own,
so one bad position is rejected with a reason while its neighbours are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

DEFAULT_MAX_SKEW = timedelta(seconds=5)
"""How far a venue's clock may run ahead of ours before its timestamps count as 'in the future'."""

ACCOUNT_TYPES = frozenset({"SPOT", "MARGIN", "FUTURES"})
SYMBOL_RE = re.compile(r"[A-Z0-9]{1,20}([-/_]?[A-Z0-9]{1,20})?")
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_DECIMAL_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")
_NON_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
# Numeric(28, 10)-sized: anything beyond is a venue bug, not a position.
_MAX_MAGNITUDE = Decimal(10) ** 18
_MIN_EXPONENT = -18


class MalformedResponse(ValueError):
    """The response as a whole is unusable: not JSON, or not the documented top-level shape."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed venue response: {reason}")
        self.reason = reason


class InvalidRecord(ValueError):
    """One record failed validation; `reason` names the field and the offending value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account_id: str
    account_type: str | None  # SPOT | MARGIN | FUTURES on exchanges; None for custodian clients
    status: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PositionRecord:
    account_id: str
    symbol: str
    quantity: Decimal  # signed: negative is short, whatever `side` says
    avg_price: Decimal
    updated_at: datetime
    mark_price: Decimal | None = None
    realized_pnl: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BalanceRecord:
    account_id: str
    asset: str
    available: Decimal
    locked: Decimal
    total: Decimal


@dataclass(frozen=True, slots=True)
class CustodyBalanceRecord:
    client_id: str
    asset: str
    available: Decimal
    locked: Decimal
    total: Decimal
    venue: str | None = None  # None for the master (omnibus) balance
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class SettlementRecord:
    settlement_id: str
    account_id: str
    asset: str
    quantity: Decimal  # signed: positive is owed to the account
    initiated_at: datetime
    expected_settlement_date: date
    status: str = "PENDING"


@dataclass(frozen=True, slots=True)
class PriceRecord:
    symbol: str
    price: Decimal
    timestamp: datetime
    source: str = ""
    volume: Decimal | None = None


R = TypeVar("R")
P = TypeVar("P")

# A body as it arrived (bytes/str), or an entry already decoded out of a batch response.
Payload = bytes | str | dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    raw: Any
    reason: str


@dataclass(frozen=True, slots=True)
class ParseResult(Generic[R]):
    accepted: list[R] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Context:
    now: datetime
    max_skew: timedelta


# -- field readers: each returns a clean value or raises InvalidRecord -------------------------------


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(raw: Mapping[str, Any], name: str, aliases: tuple[str, ...] = ()) -> Any:
    for key in (name, *aliases):
        if raw.get(key) is not None:
            return raw[key]
    return None


def _required(raw: Mapping[str, Any], name: str, aliases: tuple[str, ...] = ()) -> Any:
    value = _field(raw, name, aliases)
    if value is None:
        raise InvalidRecord(f"missing field '{name}'")
    return value


def _looks_numeric(text: str) -> bool:
    # Stricter than Decimal(): no "1_000", no non-ASCII digits; NaN/Infinity pass to be named as such.
    return text.lstrip("+-").lower() in _NON_FINITE or _DECIMAL_RE.fullmatch(text) is not None


def _to_decimal(name: str, value: object) -> Decimal:
    if isinstance(value, bool):
        raise InvalidRecord(f"{name} {_show(value)} is not a decimal")
    try:
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))  # shortest round-trip text, not the binary expansion
        elif isinstance(value, str) and _looks_numeric(value.strip()):
            number = Decimal(value.strip())
        else:
            raise InvalidRecord(f"{name} {_show(value)} is not a decimal")
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise InvalidRecord(f"{name} {_show(value)} is not a decimal") from exc
    if not number.is_finite():
        raise InvalidRecord(f"{name} {_show(value)} is not finite")
    if abs(number) >= _MAX_MAGNITUDE:
        raise InvalidRecord(f"{name} {_show(value)} is out of range")
    if number and int(number.as_tuple().exponent) < _MIN_EXPONENT:
        raise InvalidRecord(f"{name} {_show(value)} has more than {-_MIN_EXPONENT} decimal places")
    return number


def _decimal(raw: Mapping[str, Any], name: str, aliases: tuple[str, ...] = (), *, minimum: str = "") -> Decimal:
    """A required decimal; `minimum` is "" (any sign), "zero" (non-negative) or "positive"."""
    number = _to_decimal(name, _required(raw, name, aliases))
    if minimum == "zero" and number < 0:
        raise InvalidRecord(f"{name} {_show(number)} is negative")
    if minimum == "positive" and number <= 0:
        raise InvalidRecord(f"{name} {_show(number)} is not positive")
    return number


def _optional_decimal(raw: Mapping[str, Any], name: str, *, minimum: str = "") -> Decimal | None:
    return None if _field(raw, name) is None else _decimal(raw, name, minimum=minimum)


def _text(raw: Mapping[str, Any], name: str, aliases: tuple[str, ...] = (), *, pattern: re.Pattern[str]) -> str:
    value = _required(raw, name, aliases)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        kind = "symbol" if pattern is SYMBOL_RE else "identifier"
        raise InvalidRecord(f"{name} {_show(value)} is not a valid {kind}")
    return value


def _label(raw: Mapping[str, Any], name: str) -> str:
    value = _required(raw, name)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRecord(f"{name} {_show(value)} is not a short string")
    return value


def _timestamp(raw: Mapping[str, Any], name: str, ctx: _Context) -> datetime:
    value = _required(raw, name)
    return _to_timestamp(name, value, ctx)


def _to_timestamp(name: str, value: object, ctx: _Context) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRecord(f"{name} {_show(value)} is not an RFC 3339 timestamp") from None
    else:
        raise InvalidRecord(f"{name} {_show(value)} is not an RFC 3339 timestamp")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRecord(f"{name} {_show(value)} has no UTC offset")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRecord(f"{name} {_show(value)} is out of range") from None
    if moment > ctx.now + ctx.max_skew:
        raise InvalidRecord(f"{name} {_show(value)} is in the future")
    return moment


def _date(raw: Mapping[str, Any], name: str) -> date:
    value = _required(raw, name)
    if isinstance(value, str) and len(value) <= 40:
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value).date()
        except ValueError:
            pass
    raise InvalidRecord(f"{name} {_show(value)} is not a date")


# -- records ----------------------------------------------------------------------------------------


def _balance_amounts(raw: Mapping[str, Any]) -> tuple[str, Decimal, Decimal, Decimal]:
    asset = _text(raw, "asset", ("currency", "symbol"), pattern=SYMBOL_RE)
    available = _decimal(raw, "available", ("free",), minimum="zero")
    locked = (
        _decimal(raw, "locked", ("used",), minimum="zero")
        if _field(raw, "locked", ("used",)) is not None
        else Decimal(0)
    )
    total = available + locked if _field(raw, "total") is None else _decimal(raw, "total", minimum="zero")
    if total != available + locked:
        raise InvalidRecord(f"total {_show(total)} != available {_show(available)} + locked {_show(locked)}")
    return asset, available, locked, total


def _position(raw: Mapping[str, Any], account_id: str, ctx: _Context) -> PositionRecord:
    # `side` is informational only: the contract makes the sign of `quantity` authoritative.
    return PositionRecord(
        account_id=account_id,
        symbol=_text(raw, "symbol", pattern=SYMBOL_RE),
        quantity=_decimal(raw, "quantity", ("amount",)),
        avg_price=_decimal(raw, "avg_price", ("entry_price",), minimum="zero"),
        updated_at=_timestamp(raw, "updated_at", ctx),
        mark_price=_optional_decimal(raw, "mark_price", minimum="positive"),
        realized_pnl=_optional_decimal(raw, "realized_pnl"),
    )


def _settlement(raw: Mapping[str, Any], ctx: _Context) -> SettlementRecord:
    return SettlementRecord(
        settlement_id=_text(raw, "settlement_id", pattern=IDENTIFIER_RE),
        account_id=_text(raw, "account_id", pattern=IDENTIFIER_RE),
        asset=_text(raw, "asset", ("currency", "symbol"), pattern=SYMBOL_RE),
        quantity=_decimal(raw, "quantity", ("amount",)),
        initiated_at=_timestamp(raw, "initiated_at", ctx),
        expected_settlement_date=_date(raw, "expected_settlement_date"),
        status=_label(raw, "status") if _field(raw, "status") is not None else "PENDING",
    )


def parse_price(raw: Mapping[str, Any], *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW) -> PriceRecord:
    """One price (e.g. a converted gRPC `PriceUpdate`); raises `InvalidRecord`."""
    ctx = _Context(now, max_skew)
    source = _field(raw, "source")
    return PriceRecord(
        symbol=_text(raw, "symbol", pattern=SYMBOL_RE),
        price=_decimal(raw, "price", minimum="positive"),
        timestamp=_timestamp(raw, "timestamp", ctx),
        source=source if isinstance(source, str) else "",
        volume=_optional_decimal(raw, "volume", minimum="zero"),
    )


# -- envelopes --------------------------------------------------------------------------------------


def _load(body: Payload) -> Any:
    if isinstance(body, dict):
        return body  # one entry of a batch response: decoded once with the whole body
    try:
        # Decimal for floats *and* NaN/Infinity tokens: bad numbers are then rejected per record.
        return json.loads(body, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, RecursionError) as exc:
        raise MalformedResponse(f"body is not JSON ({type(exc).__name__})") from None


def _envelope(
    body: Payload,
    list_key: str,
    *,
    ctx: _Context,
    id_key: str | None = None,
    expected_id: str | None = None,
) -> tuple[dict[str, Any], list[Any], datetime | None]:
    doc = _load(body)
    if not isinstance(doc, dict):
        raise MalformedResponse(f"top level is {type(doc).__name__}, expected an object")
    items = doc.get(list_key)
    if not isinstance(items, list):
        raise MalformedResponse(f"'{list_key}' is missing or not a list")
    if id_key is not None:
        got = doc.get(id_key)
        if not isinstance(got, str) or not IDENTIFIER_RE.fullmatch(got):
            raise MalformedResponse(f"{id_key} {_show(got)} is not a valid identifier")
        if expected_id is not None and got != expected_id:
            raise MalformedResponse(f"{id_key} {_show(got)} does not match the requested {expected_id!r}")
    as_of = None
    if id_key is not None or "as_of" in doc:
        if doc.get("as_of") is None:
            raise MalformedResponse("missing field 'as_of'")
        try:
            as_of = _to_timestamp("as_of", doc.get("as_of"), ctx)
        except InvalidRecord as exc:
            raise MalformedResponse(exc.reason) from None
    return doc, items, as_of


def _collect(items: list[Any], parse_one: Callable[[Mapping[str, Any]], R]) -> tuple[list[R], list[Rejected]]:
    accepted: list[R] = []
    rejected: list[Rejected] = []
    for item in items:
        if not isinstance(item, dict):
            rejected.append(Rejected(item, f"record {_show(item)} is not an object"))
            continue
        try:
            accepted.append(parse_one(item))
        except InvalidRecord as exc:
            rejected.append(Rejected(item, exc.reason))
    return accepted, rejected


def parse_exchange_accounts(body: Payload, *, now: datetime) -> ParseResult[AccountRecord]:
    _, items, as_of = _envelope(body, "accounts", ctx=_Context(now, DEFAULT_MAX_SKEW))

    def one(raw: Mapping[str, Any]) -> AccountRecord:
        account_type = _label(raw, "account_type")
        if account_type not in ACCOUNT_TYPES:
            raise InvalidRecord(f"account_type {_show(account_type)} is not one of SPOT, MARGIN, FUTURES")
        return AccountRecord(_text(raw, "account_id", pattern=IDENTIFIER_RE), account_type, _label(raw, "status"))

    return ParseResult(*_collect(items, one), as_of=as_of)


def parse_client_accounts(body: Payload, *, now: datetime) -> ParseResult[AccountRecord]:
    _, items, as_of = _envelope(body, "accounts", ctx=_Context(now, DEFAULT_MAX_SKEW))

    def one(raw: Mapping[str, Any]) -> AccountRecord:
        name = _field(raw, "name")
        return AccountRecord(
            _text(raw, "client_id", pattern=IDENTIFIER_RE),
            None,
            _label(raw, "status"),
            name if isinstance(name, str) else None,
        )

    return ParseResult(*_collect(items, one), as_of=as_of)


def parse_positions(
    body: Payload, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW, account_id: str | None = None
) -> ParseResult[PositionRecord]:
    ctx = _Context(now, max_skew)
    doc, items, as_of = _envelope(body, "positions", ctx=ctx, id_key="account_id", expected_id=account_id)
    return ParseResult(*_collect(items, lambda raw: _position(raw, doc["account_id"], ctx)), as_of=as_of)


def parse_balances(
    body: Payload, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW, account_id: str | None = None
) -> ParseResult[BalanceRecord]:
    ctx = _Context(now, max_skew)
    doc, items, as_of = _envelope(body, "balances", ctx=ctx, id_key="account_id", expected_id=account_id)

    def one(raw: Mapping[str, Any]) -> BalanceRecord:
        return BalanceRecord(doc["account_id"], *_balance_amounts(raw))

    return ParseResult(*_collect(items, one), as_of=as_of)


def parse_master_balance(
    body: Payload, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW, client_id: str | None = None
) -> ParseResult[CustodyBalanceRecord]:
    ctx = _Context(now, max_skew)
    doc, items, as_of = _envelope(body, "balances", ctx=ctx, id_key="client_id", expected_id=client_id)

    def one(raw: Mapping[str, Any]) -> CustodyBalanceRecord:
        return CustodyBalanceRecord(doc["client_id"], *_balance_amounts(raw))

    return ParseResult(*_collect(items, one), as_of=as_of)


def parse_segregated_balances(
    body: Payload, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW, client_id: str | None = None
) -> ParseResult[CustodyBalanceRecord]:
    """Flattens `accounts[].balances[]`; a bad account entry is rejected whole, a bad balance alone."""
    ctx = _Context(now, max_skew)
    doc, groups, as_of = _envelope(body, "accounts", ctx=ctx, id_key="client_id", expected_id=client_id)
    accepted: list[CustodyBalanceRecord] = []
    rejected: list[Rejected] = []
    for group in groups:
        try:
            if not isinstance(group, dict):
                raise InvalidRecord(f"account entry {_show(group)} is not an object")
            venue = _text(group, "venue", pattern=IDENTIFIER_RE)
            account_id = _text(group, "account_id", pattern=IDENTIFIER_RE)
            balances = group.get("balances")
            if not isinstance(balances, list):
                raise InvalidRecord(f"balances of {venue}/{account_id} is missing or not a list")
        except InvalidRecord as exc:
            rejected.append(Rejected(group, exc.reason))
            continue

        def one(raw: Mapping[str, Any], venue: str = venue, account_id: str = account_id) -> CustodyBalanceRecord:
            asset, available, locked, total = _balance_amounts(raw)
            return CustodyBalanceRecord(doc["client_id"], asset, available, locked, total, venue, account_id)

        good, bad = _collect(balances, one)
        accepted.extend(good)
        rejected.extend(Rejected(r.raw, f"{venue}/{account_id}: {r.reason}") for r in bad)
    return ParseResult(accepted, rejected, as_of)


def parse_settlements(
    body: Payload, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW
) -> ParseResult[SettlementRecord]:
    ctx = _Context(now, max_skew)
    _, items, as_of = _envelope(body, "settlements", ctx=ctx)
    return ParseResult(*_collect(items, lambda raw: _settlement(raw, ctx)), as_of=as_of)


# -- batches ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[P]):
    """One batch response split per requested id: parsed results, per-id failures, stray entries."""

    results: dict[str, P] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # requested id -> why it has no result
    rejected: list[Rejected] = field(default_factory=list)  # entries for ids nobody asked for, or repeated


def parse_batch(
    body: Payload, *, id_key: str, requested: list[str], parse_one: Callable[[dict[str, Any], str], P]
) -> BatchResult[P]:
    """Split `{"as_of", "results": [doc | {id_key, "error": {...}}]}` into one result per requested id.

    Each entry is the document the single-id endpoint would answer with, so `parse_one` is that endpoint's
    parser. An entry the venue marks as an error, an entry that is malformed as a whole, and an id the venue
    left out each become a failure of that id alone: the rest of the batch is kept.
    """
    doc = _load(body)
    if not isinstance(doc, dict):
        raise MalformedResponse(f"top level is {type(doc).__name__}, expected an object")
    entries = doc.get("results")
    if not isinstance(entries, list):
        raise MalformedResponse("'results' is missing or not a list")
    wanted = set(requested)
    out: BatchResult[P] = BatchResult()
    seen: set[str] = set()
    for entry in entries:
        key = entry.get(id_key) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or key not in wanted or key in seen:
            why = "was not requested" if key not in wanted else "appears twice in the batch"
            shown = f"{id_key} {_show(key)}" if isinstance(entry, dict) else f"entry {_show(entry)}"
            out.rejected.append(Rejected(entry, f"batch {shown} {why}"))
            continue
        seen.add(key)
        error = entry.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            out.failures[key] = f"venue error: {_show(message)}"
            continue
        try:
            out.results[key] = parse_one(entry, key)
        except MalformedResponse as exc:
            out.failures[key] = exc.reason
    for key in requested:
        if key not in seen:
            out.failures.setdefault(key, "missing from the batch response")
    return out
