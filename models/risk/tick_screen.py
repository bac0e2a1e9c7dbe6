"""The tick path's float screen: price-independent float columns of a book, per-batch float sums, and the
zones of values against a limit's thresholds. Pure: no I/O. The error bound and how it is used are in
docs/risk-model.md ("Performance: float screen + exact confirm", "Incremental (tick) path")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

import numpy as np
import numpy.typing as npt

from models.risk.book import RiskBook
from models.risk.fast import SLACK, UNIT_ROUNDOFF
from models.risk.fast_index import DERIVATIVE, HUGE, OPTION, SPOT, TINY, NotScreenable, to_float
from models.risk.limits import Limit, LimitType, Scope
from models.risk.results import RISK_CONTEXT
from models.risk.values import InstrumentKind

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Zones = npt.NDArray[np.int8]

# Relative slack on top of the summation bound, the accepted magnitudes and `to_float` are the scheduled path's
# (models.risk.fast / fast_index): one error bound for both screens.
WIDEN = 4 * SLACK  # interval ends are widened by this before they are compared with float thresholds
UNKNOWN = -1  # zone not known exactly: the next batch confirms the subject
SCALAR_TYPES = frozenset({LimitType.GROSS_NOTIONAL, LimitType.NET_NOTIONAL, LimitType.LEVERAGE})
MARKED_TYPES = frozenset({LimitType.DAILY_LOSS, LimitType.DRAWDOWN})
POSITION_TYPES = frozenset({LimitType.POSITION_NOTIONAL, LimitType.POSITION_QUANTITY})


def to_floats(values: Sequence[Decimal | None]) -> Floats:
    """`to_float` of many values at once (None: NaN, unpriced); NotScreenable as `to_float` would raise it."""
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    magnitude = np.abs(out[~np.isnan(out)])
    if not (magnitude < HUGE).all() or ((magnitude > 0) & (magnitude <= TINY)).any():
        raise NotScreenable("a price beyond the float screen's range")
    for i in np.flatnonzero((out == 0.0) | np.isnan(out)):
        value = values[int(i)]
        if value is not None and (value.is_nan() or value):  # a NaN price, or underflow to zero
            raise NotScreenable(str(value))
    return out


def screened(limit: Limit) -> bool:
    """Per-account limits of the types the float screen covers; everything else runs the reference."""
    if not (limit.per_account or limit.scope is Scope.ACCOUNT):
        return False
    if limit.type in SCALAR_TYPES and limit.type is not LimitType.LEVERAGE:
        return limit.asset is None
    return limit.type in SCALAR_TYPES or limit.type in MARKED_TYPES or limit.type in POSITION_TYPES


@dataclass(slots=True)
class BookColumns:
    """Price-independent float columns of one book's positions and balances (rebuilt when they change)."""

    positions_map: object
    balances_map: object
    accounts_map: object
    accounts: list[str]
    rank: dict[str, int]
    p_acct: Ints
    p_pair: Ints
    p_quote: Ints
    p_kind: Ints
    p_own: Bools  # the venue's own mark price: notional = units × mark_price × USD(quote)
    p_a: Floats  # units, or units × mark_price
    p_cost: Floats
    p_qty: Floats
    p_inst: Ints
    inst_acct: Ints
    inst_key: list[tuple[str, str, str]]  # (account, pair, kind)
    inst_of: dict[tuple[str, str, str], int]
    inst_base: list[str]
    b_acct: Ints
    b_asset: Ints
    b_total: Floats
    pairs: list[str]
    assets: list[str]
    pair_of: dict[str, int]
    asset_of: dict[str, int]
    rho: float


def build_columns(book: RiskBook) -> BookColumns:
    accounts = list(book.accounts)
    pairs: dict[str, int] = {}
    assets: dict[str, int] = {}
    p_acct, p_pair, p_quote, p_kind, p_own, p_inst = [], [], [], [], [], []
    p_a: list[float] = []
    p_cost: list[float] = []
    p_qty: list[float] = []
    inst_acct: list[int] = []
    inst_key: list[tuple[str, str, str]] = []
    inst_base: list[str] = []
    inst_of: dict[tuple[str, str, str], int] = {}
    spot, option = InstrumentKind.SPOT, InstrumentKind.OPTION
    with localcontext(RISK_CONTEXT):
        for i, account in enumerate(accounts):
            for p in book.positions.get(account, ()):
                key = (account, p.pair, p.instrument[1])
                if key not in inst_of:
                    inst_of[key] = len(inst_key)
                    inst_key.append(key)
                    inst_acct.append(i)
                    inst_base.append(p.base)
                p_inst.append(inst_of[key])
                p_acct.append(i)
                p_pair.append(pairs.setdefault(p.pair, len(pairs)))
                p_quote.append(assets.setdefault(p.quote, len(assets)))
                assets.setdefault(p.base, len(assets))
                p_kind.append(SPOT if p.kind is spot else OPTION if p.kind is option else DERIVATIVE)
                p_own.append(p.mark_price is not None)
                p_a.append(to_float(p.units if p.mark_price is None else p.units * p.mark_price))
                p_cost.append(to_float(p.cost))
                p_qty.append(to_float(p.quantity))
        b_acct, b_asset, b_total = [], [], []
        for i, account in enumerate(accounts):
            for b in book.balances.get(account, ()):
                b_acct.append(i)
                b_asset.append(assets.setdefault(b.asset, len(assets)))
                b_total.append(to_float(b.total))
    terms = len(p_acct) + len(b_acct) + 1
    return BookColumns(
        positions_map=book.positions,
        balances_map=book.balances,
        accounts_map=book.accounts,
        accounts=accounts,
        rank={a: i for i, a in enumerate(accounts)},
        p_acct=np.array(p_acct, dtype=np.intp),
        p_pair=np.array(p_pair, dtype=np.intp),
        p_quote=np.array(p_quote, dtype=np.intp),
        p_kind=np.array(p_kind, dtype=np.intp),
        p_own=np.array(p_own, dtype=bool),
        p_a=np.array(p_a, dtype=np.float64),
        p_cost=np.array(p_cost, dtype=np.float64),
        p_qty=np.array(p_qty, dtype=np.float64),
        p_inst=np.array(p_inst, dtype=np.intp),
        inst_acct=np.array(inst_acct, dtype=np.intp),
        inst_key=inst_key,
        inst_of=inst_of,
        inst_base=inst_base,
        b_acct=np.array(b_acct, dtype=np.intp),
        b_asset=np.array(b_asset, dtype=np.intp),
        b_total=np.array(b_total, dtype=np.float64),
        pairs=list(pairs),
        assets=list(assets),
        pair_of=pairs,
        asset_of=assets,
        rho=2.0 * (terms + 4) * UNIT_ROUNDOFF + SLACK,
    )


@dataclass(slots=True)
class Sums:
    gross: Floats
    net: Floats
    equity: Floats
    equity_abs: Floats
    inst_n: Floats
    inst_abs: Floats
    inst_q: Floats
    inst_qabs: Floats
    inst_priced: Bools

    @staticmethod
    def of(ix: BookColumns, mark_f: Floats, usd_f: Floats) -> Sums:
        n_acc, n_inst = len(ix.accounts), len(ix.inst_key)
        q = usd_f[ix.p_quote]
        per_unit = np.where(ix.p_own, q, mark_f[ix.p_pair])
        priced = ~np.isnan(q) & ~np.isnan(per_unit)
        notional = np.where(priced, ix.p_a * per_unit, 0.0)  # NaN × finite is NaN, quietly; `where` drops it
        abs_n = np.abs(notional)
        derivative = priced & (ix.p_kind == DERIVATIVE)
        cost_q = np.where(derivative, ix.p_cost * q, 0.0)
        option = priced & (ix.p_kind == OPTION)
        eq_term = np.where(option, notional, 0.0) + np.where(derivative, notional - cost_q, 0.0)
        eq_abs = np.where(option | derivative, abs_n, 0.0) + np.abs(cost_q)
        b_usd = usd_f[ix.b_asset]
        b_value = np.where(np.isnan(b_usd), 0.0, ix.b_total * b_usd)
        qty = np.where(priced, ix.p_qty, 0.0)
        return Sums(
            gross=sums(ix.p_acct, abs_n, n_acc),
            net=sums(ix.p_acct, notional, n_acc),
            equity=sums(ix.p_acct, eq_term, n_acc) + sums(ix.b_acct, b_value, n_acc),
            equity_abs=sums(ix.p_acct, eq_abs, n_acc) + sums(ix.b_acct, np.abs(b_value), n_acc),
            inst_n=sums(ix.p_inst, notional, n_inst),
            inst_abs=sums(ix.p_inst, abs_n, n_inst),
            inst_q=sums(ix.p_inst, qty, n_inst),
            inst_qabs=sums(ix.p_inst, np.abs(qty), n_inst),
            inst_priced=sums(ix.p_inst, priced, n_inst) > 0,
        )


def sums(segments: Ints, weights: Floats | Bools, count: int) -> Floats:
    """Float sums per segment, in any order (the error bound does not depend on it)."""
    return np.bincount(segments, weights, count).astype(np.float64, copy=False)


def zones(values: Floats, limit: Limit) -> Zones:
    out = np.zeros(len(values), dtype=np.int8)
    out[values >= float(limit.clear_at)] = 1
    if limit.warn is not None:
        out[values > float(limit.warn)] = 2
    if limit.critical is not None:
        out[values > float(limit.critical)] = 3
    return out


def zone_of(value: Decimal, limit: Limit) -> int:
    if limit.critical is not None and value > limit.critical:
        return 3
    if limit.warn is not None and value > limit.warn:
        return 2
    return 1 if value >= limit.clear_at else 0
