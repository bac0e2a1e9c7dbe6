"""Limit definitions and the limit check levels: one shape for every limit type."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from models.risk.values import ZERO, InstrumentKind, canonical_symbol


class LimitType(StrEnum):
    POSITION_QUANTITY = "position_quantity"
    POSITION_NOTIONAL = "position_notional"
    GROSS_NOTIONAL = "gross_notional"
    NET_NOTIONAL = "net_notional"
    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    LEVERAGE = "leverage"
    DELTA = "delta"
    CONCENTRATION = "concentration"
    STALE_DATA = "stale_data"
    RECONCILIATION = "reconciliation"
    UNSETTLED_EXPOSURE = "unsettled_exposure"
    PRICE_DEVIATION = "price_deviation"


class Scope(StrEnum):
    FIRM = "firm"
    GROUP = "group"
    ACCOUNT = "account"


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"


class Side(StrEnum):
    LONG = "long"
    SHORT = "short"


class Dimension(StrEnum):
    ASSET = "asset"
    VENUE = "venue"
    CUSTODIAN = "custodian"


class Measure(StrEnum):
    VALUE = "value"
    COUNT = "count"


FIRM_KEY = "firm"
FRACTION_TYPES = frozenset({LimitType.DRAWDOWN, LimitType.CONCENTRATION, LimitType.PRICE_DEVIATION})
# Which optional filters each type understands; anything else set on a limit is rejected.
ALLOWED_FILTERS: dict[LimitType, frozenset[str]] = {
    LimitType.POSITION_QUANTITY: frozenset({"symbol", "asset", "venue", "kind", "side"}),
    LimitType.POSITION_NOTIONAL: frozenset({"symbol", "asset", "venue", "kind"}),
    LimitType.GROSS_NOTIONAL: frozenset({"asset", "venue"}),
    LimitType.NET_NOTIONAL: frozenset({"asset", "venue"}),
    LimitType.DAILY_LOSS: frozenset(),
    LimitType.DRAWDOWN: frozenset(),
    LimitType.LEVERAGE: frozenset({"venue"}),
    LimitType.DELTA: frozenset({"asset", "venue"}),
    LimitType.CONCENTRATION: frozenset({"dimension", "venue"}),
    LimitType.STALE_DATA: frozenset({"venue", "kind"}),
    LimitType.RECONCILIATION: frozenset({"asset", "venue", "abs_tolerance", "rel_tolerance"}),
    LimitType.UNSETTLED_EXPOSURE: frozenset({"asset", "measure"}),
    LimitType.PRICE_DEVIATION: frozenset({"symbol", "reference"}),
}
REQUIRED_FILTERS: dict[LimitType, frozenset[str]] = {
    LimitType.POSITION_QUANTITY: frozenset({"side"}),
    LimitType.CONCENTRATION: frozenset({"dimension"}),
    LimitType.PRICE_DEVIATION: frozenset({"symbol", "reference"}),
}
FIRM_ONLY = frozenset({LimitType.STALE_DATA, LimitType.PRICE_DEVIATION})
DATA_KINDS = frozenset({"positions", "balances", "prices", "custody"})


class InvalidLimit(ValueError):
    """A limit that can't be evaluated; `key` names the offending field so a file loader can locate it."""

    def __init__(self, name: str, key: str | None, reason: str) -> None:
        super().__init__(f"limit {name!r} {reason}")
        self.name = name
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limit:
    """Every limit is "higher is worse": values are losses, absolute amounts, ages or fractions.

    A value strictly above a threshold breaches it. `clear` (hysteresis) defaults to the lowest threshold;
    an alert resolves only once the value is below it.
    """

    name: str
    type: LimitType
    warn: Decimal | None = None
    critical: Decimal | None = None
    clear: Decimal | None = None
    scope: Scope = Scope.FIRM
    scope_ref: str | None = None
    per_account: bool = False  # firm/group scope: check every account alone instead of the aggregate
    enabled: bool = True
    version: int = 1
    symbol: str | None = None  # canonical after construction ("BTCUSDT" -> "BTC-USDT")
    asset: str | None = None
    venue: str | None = None
    kind: str | None = None  # instrument kind, or data kind for stale_data
    side: Side | None = None
    dimension: Dimension | None = None
    measure: Measure = Measure.VALUE
    abs_tolerance: Decimal = ZERO
    rel_tolerance: Decimal = ZERO
    reference: Decimal | None = None
    clear_at: Decimal = field(init=False, compare=False, repr=False)
    top: Decimal = field(init=False, compare=False, repr=False)  # the threshold utilisation is against

    def __post_init__(self) -> None:
        _validate(self)
        thresholds = [t for t in (self.warn, self.critical) if t is not None]
        object.__setattr__(self, "clear_at", self.clear if self.clear is not None else min(thresholds))
        object.__setattr__(self, "top", self.critical if self.critical is not None else thresholds[0])
        if self.symbol is not None:
            object.__setattr__(self, "symbol", canonical_symbol(self.symbol))

    @property
    def scope_key(self) -> str:
        if self.scope is Scope.FIRM:
            return FIRM_KEY
        if self.scope is Scope.GROUP:
            return f"group:{self.scope_ref}"
        return str(self.scope_ref)

    def level(self, value: Decimal) -> Level:
        if self.critical is not None and value > self.critical:
            return Level.CRITICAL
        if self.warn is not None and value > self.warn:
            return Level.WARN
        return Level.OK

    def threshold(self, level: Level) -> Decimal | None:
        if level is Level.CRITICAL:
            return self.critical
        if level is Level.WARN:
            return self.warn
        return None


def _validate(limit: Limit) -> None:  # noqa: PLR0912  (one flat list of rules reads best)
    name = limit.name
    if not name:
        raise InvalidLimit(name, "name", "has an empty name")
    if limit.warn is None and limit.critical is None:
        raise InvalidLimit(name, "warn", "needs a warn or a critical threshold")
    for key in ("warn", "critical", "clear"):
        value = getattr(limit, key)
        if value is not None and not (value.is_finite() and value > ZERO):
            raise InvalidLimit(name, key, f"has {key} = {value}; thresholds must be positive numbers")
    if limit.warn is not None and limit.critical is not None and limit.warn > limit.critical:
        raise InvalidLimit(name, "warn", f"has warn {limit.warn} above critical {limit.critical}")
    lowest = min(t for t in (limit.warn, limit.critical) if t is not None)
    if limit.clear is not None and limit.clear > lowest:
        raise InvalidLimit(name, "clear", f"has clear {limit.clear} above its lowest threshold {lowest}")
    if limit.scope is Scope.FIRM and limit.scope_ref is not None:
        raise InvalidLimit(name, "scope_ref", "has a scope_ref but firm scope takes none")
    if limit.scope is not Scope.FIRM and not limit.scope_ref:
        raise InvalidLimit(name, "scope_ref", f"has {limit.scope.value} scope but no scope_ref")
    if limit.type in FIRM_ONLY and (limit.scope is not Scope.FIRM or limit.per_account):
        raise InvalidLimit(name, "scope", f"of type {limit.type.value!r} must have firm scope")
    allowed = ALLOWED_FILTERS[limit.type]
    defaults = {"measure": Measure.VALUE, "abs_tolerance": ZERO, "rel_tolerance": ZERO}
    for key in ("symbol", "asset", "venue", "kind", "side", "dimension", "reference", *defaults):
        value = getattr(limit, key)
        if value is not None and value != defaults.get(key) and key not in allowed:
            raise InvalidLimit(name, key, f"of type {limit.type.value!r} does not take {key!r}")
    for key in REQUIRED_FILTERS.get(limit.type, frozenset()):
        if getattr(limit, key) is None:
            raise InvalidLimit(name, None, f"of type {limit.type.value!r} requires {key!r}")
    if limit.kind is not None:
        kinds = DATA_KINDS if limit.type is LimitType.STALE_DATA else {k.value for k in InstrumentKind}
        if limit.kind not in kinds:
            raise InvalidLimit(name, "kind", f"has unknown kind {limit.kind!r} (one of {sorted(kinds)})")
    if limit.reference is not None and limit.reference <= ZERO:
        raise InvalidLimit(name, "reference", "has a reference price that is not positive")
    if limit.abs_tolerance < ZERO or limit.rel_tolerance < ZERO:
        raise InvalidLimit(name, "abs_tolerance", "has a negative tolerance")
    if limit.type in FRACTION_TYPES and max(t for t in (limit.warn, limit.critical) if t is not None) > 1:
        raise InvalidLimit(name, "critical", "is a fraction: thresholds must not exceed 1")
    if limit.symbol is not None:
        try:
            canonical_symbol(limit.symbol)
        except ValueError as exc:
            raise InvalidLimit(name, "symbol", str(exc)) from None
