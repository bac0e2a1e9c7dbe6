"""Protobuf <-> live-risk values: ticks, level changes, risk summaries and order checks."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf.duration_pb2 import Duration
from riskmonitor.v1 import risk_monitor_pb2 as pb

from models.risk import (
    Check,
    InstrumentKind,
    Position,
    PositionTick,
    Price,
    PriceTick,
    canonical_symbol,
    daily_pnl,
    drawdown,
)
from models.risk.exposure import gross_by_asset, net_by_asset
from models.risk.incremental import LevelChange
from services.errors import InvalidArgumentError
from services.live_risk import AccountRisk, Fill, LiveTick, Order, OrderCheck, Rejected
from services.rpc.convert import LEVEL_TO_PB, dec, from_ts, optional_decimal, parse_decimal, ts

_SIDE = {pb.ORDER_SIDE_BUY: Decimal(1), pb.ORDER_SIDE_SELL: Decimal(-1)}


# Ticks repeat a few hundred symbols millions of times: parse each spelling once.
_canonical = functools.lru_cache(maxsize=65_536)(canonical_symbol)


def symbol(text: str, field: str) -> str:
    try:
        return _canonical(text)
    except ValueError:
        raise InvalidArgumentError(f"{field} is not a symbol this monitor can read: {text[:40]!r}") from None


def _kind(text: str, field: str) -> InstrumentKind:
    try:
        return InstrumentKind(text or "spot")
    except ValueError:
        kinds = ", ".join(k.value for k in InstrumentKind)
        raise InvalidArgumentError(f"{field} must be one of {kinds}") from None


def _account(text: str, field: str) -> str:
    if ":" not in text:
        raise InvalidArgumentError(f"{field} must be an account key '<venue>:<external id>'")
    return text


def _tick(tick: pb.Tick, now: datetime) -> LiveTick:
    which = tick.WhichOneof("update")
    if which == "price":
        p = tick.price
        symbol(p.symbol, "price.symbol")
        price = parse_decimal(p.price, "price.price", positive=True)
        return PriceTick(Price(p.symbol, price, from_ts(p, p.observed_at, "observed_at") or now, p.source or "ticks"))
    if which == "position":
        u = tick.position
        quantity = parse_decimal(u.quantity, "position.quantity")
        avg = parse_decimal(u.avg_price, "position.avg_price")
        if avg < 0:
            raise InvalidArgumentError("position.avg_price must not be negative")
        account = _account(u.account, "position.account")
        position = Position(
            venue=account.partition(":")[0],
            account=account,
            symbol=symbol(u.symbol, "position.symbol"),
            quantity=quantity,
            avg_price=avg,
            observed_at=from_ts(u, u.observed_at, "observed_at") or now,
            mark_price=optional_decimal(u.mark_price, "position.mark_price", positive=True),
            kind=_kind(u.kind, "position.kind"),
        )
        return PositionTick(position)
    if which == "fill":
        f = tick.fill
        if f.side not in _SIDE:
            raise InvalidArgumentError("fill.side is required (BUY or SELL)")
        quantity = parse_decimal(f.quantity, "fill.quantity", positive=True)
        price = parse_decimal(f.price, "fill.price", positive=True)
        return Fill(
            account=_account(f.account, "fill.account"),
            symbol=symbol(f.symbol, "fill.symbol"),
            signed_quantity=_SIDE[f.side] * quantity,
            price=price,
            kind=_kind(f.kind, "fill.kind"),
            observed_at=from_ts(f, f.observed_at, "observed_at") or now,
        )
    raise InvalidArgumentError("tick is empty: set price, position or fill")


# Price texts and symbols of valid ticks seen recently: a plain dict lookup is the cheapest check there is, and
# a stream repeats both. Bounded: cleared when full (a rebuild costs a few milliseconds). Errors aren't kept.
_PRICES: dict[str, Decimal] = {}
_SYMBOLS: set[str] = set()
_CACHE_SIZE = 65_536


def _price_value(text: str) -> Decimal:
    value = _PRICES.get(text)
    if value is None:
        value = parse_decimal(text, "price.price", positive=True)
        if len(_PRICES) >= _CACHE_SIZE:
            _PRICES.clear()
        _PRICES[text] = value
    return value


def _price_symbol(text: str) -> str:
    if text not in _SYMBOLS:
        symbol(text, "price.symbol")  # validates; the tick keeps the venue's spelling
        if len(_SYMBOLS) >= _CACHE_SIZE:
            _SYMBOLS.clear()
        _SYMBOLS.add(text)
    return text


def ticks_from_pb(ticks: Sequence[pb.Tick], now: datetime) -> tuple[list[tuple[int, LiveTick]], list[pb.TickError]]:
    """Valid ticks with their batch index, and an error per invalid one (the rest of the batch applies).

    Price ticks (most of a stream) take a short path, inlined because it runs for every tick: cached symbol
    and price checks, and only the newest price per (source, symbol) of each run of consecutive price ticks
    becomes a value, in the order of first appearance: exactly what `LiveRisk.apply` keeps of such a run
    anyway. Every tick is still validated, symbol first, as `_tick` does.
    """
    out: list[tuple[int, LiveTick]] = []
    errors: list[pb.TickError] = []
    run: dict[tuple[str, str], tuple[int, str, Decimal, datetime]] = {}
    prices, symbols = _PRICES, _SYMBOLS
    for index, tick in enumerate(ticks):
        try:
            if tick.HasField("price"):
                p = tick.price
                name = p.symbol
                if name not in symbols:
                    _price_symbol(name)
                text = p.price
                value = prices.get(text)
                if value is None:
                    value = _price_value(text)
                at = p.observed_at.ToDatetime(tzinfo=UTC) if p.HasField("observed_at") else now
                run[(p.source or "ticks", name)] = (index, name, value, at)
                continue
            parsed = _tick(tick, now)
        except InvalidArgumentError as exc:
            message = str(exc)
            errors.append(pb.TickError(index=index, field=message.split(" ", 1)[0], reason=message))
            continue
        _flush(run, out)
        out.append((index, parsed))
    _flush(run, out)
    return out, errors


def _flush(run: dict[tuple[str, str], tuple[int, str, Decimal, datetime]], out: list[tuple[int, LiveTick]]) -> None:
    for (source, _), (index, name, price, at) in run.items():
        out.append((index, PriceTick(Price(name, price, at, source))))
    run.clear()


def rejected_to_pb(r: Rejected) -> pb.TickError:
    return pb.TickError(index=r.index, field=r.field, reason=r.reason)


def change_to_pb(change: LevelChange) -> pb.LevelChange:
    check = change.check
    threshold = check.limit.threshold(change.level) if change.level.value != "ok" else check.clear
    return pb.LevelChange(
        fingerprint=check.fingerprint,
        limit_name=check.limit.name,
        limit_type=check.limit.type.value,
        account=check.subject.account or "",
        subject=check.subject.key,
        symbol=check.subject.symbol or "",
        previous_level=LEVEL_TO_PB[change.previous.value],
        level=LEVEL_TO_PB[change.level.value],
        value=dec(change.value),
        threshold=dec(threshold),
        utilisation=dec(change.value / check.limit.top) if change.value is not None else "",
    )


def _utilisation(check: Check) -> pb.LimitUtilisation:
    return pb.LimitUtilisation(
        limit_name=check.limit.name,
        limit_type=check.limit.type.value,
        subject=check.subject.key,
        value=dec(check.value),
        warn=dec(check.limit.warn),
        critical=dec(check.limit.critical),
        utilisation=dec(check.utilisation),
        level=LEVEL_TO_PB[check.level.value],
    )


def summary_to_pb(risk: AccountRisk) -> pb.RiskSummary:
    e, marks = risk.exposure, risk.marks
    notional = {p.instrument: n for p, n in e.legs}
    positions = [
        pb.PositionSummary(
            symbol=p.pair,
            kind=p.kind.value,
            quantity=dec(p.quantity),
            avg_price=dec(p.avg_price),
            mark_price=dec(p.mark_price if p.mark_price is not None else risk.book.prices.pair_prices.get(p.pair)),
            notional_usd=dec(notional.get(p.instrument)),
        )
        for p in risk.book.positions.get(risk.account, ())
    ]
    gross, net = gross_by_asset(e), net_by_asset(e)
    return pb.RiskSummary(
        account=risk.account,
        as_of=ts(risk.at),
        equity_usd=dec(e.equity),
        gross_exposure_usd=dec(e.gross),
        net_exposure_usd=dec(e.net),
        leverage=dec(e.leverage),
        unrealized_pnl_usd=dec(e.unrealized_pnl),
        realized_pnl_usd=dec(e.realized_pnl),
        daily_pnl_usd=dec(daily_pnl(marks, e.equity) if marks else Decimal(0)),
        drawdown=dec(drawdown(marks, e.equity) if marks else Decimal(0)),
        positions=positions,
        exposures=[pb.AssetExposure(asset=a, gross_usd=dec(gross[a]), net_usd=dec(net[a])) for a in sorted(gross)],
        limits=[_utilisation(c) for c in risk.checks],
        unpriced=list(e.unpriced),
    )


def order_from_pb(r: pb.CheckOrderRequest) -> Order:
    if not r.account:
        raise InvalidArgumentError("account is required")
    if not r.symbol:
        raise InvalidArgumentError("symbol is required")
    if r.side not in _SIDE:
        raise InvalidArgumentError("side is required (BUY or SELL)")
    quantity = parse_decimal(r.quantity, "quantity", positive=True)
    price = parse_decimal(r.price, "price", positive=True)
    return Order(r.account, symbol(r.symbol, "symbol"), _SIDE[r.side] * quantity, price, _kind(r.kind, "kind"))


def _impact(before: Check | None, after: Check) -> pb.LimitImpact:
    top = after.limit.top
    return pb.LimitImpact(
        limit_name=after.limit.name,
        limit_type=after.limit.type.value,
        subject=after.subject.key,
        current_value=dec(before.value if before else Decimal(0)),
        projected_value=dec(after.value),
        projected_level=LEVEL_TO_PB[after.level.value],
        threshold=dec(top),
        headroom=dec(top - after.value),
    )


def order_check_to_pb(result: OrderCheck, elapsed: Duration) -> pb.CheckOrderResponse:
    impacts = [_impact(b, a) for b, a in result.impacts]
    return pb.CheckOrderResponse(
        decision=pb.DECISION_ALLOW if result.allowed else pb.DECISION_DENY,
        breaches=[i for i in impacts if i.projected_level != pb.LEVEL_OK],
        limits=impacts,
        processing_time=elapsed,
    )
