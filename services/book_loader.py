"""Read the current state (latest snapshots, prices, settlements, accounts, P&L marks) into a ``RiskBook``.

Everything is read in one REPEATABLE READ, read-only transaction, so the book is one consistent picture
even while collection batches commit. Rows become domain values directly (no ORM objects): this runs
every second over ~100k positions. Account key = ``"<venue_id>:<external_id>"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from models.risk import (
    AccountMeta,
    Balance,
    CustodyBalance,
    InstrumentKind,
    PendingSettlement,
    PnlMarks,
    Position,
    Price,
    RiskBook,
    build_book,
    split_symbol,
)

log = logging.getLogger(__name__)

Freshness = Mapping[tuple[str, str], datetime]
FreshnessSource = Callable[[], Freshness]
ZERO = Decimal(0)
# collection_runs.kind -> the data kinds of models.risk (stale_data limits); other kinds are not tracked.
RUN_KINDS = {
    "positions": "positions",
    "balances": "balances",
    "custody_balances": "custody",
    "custody": "custody",
    "prices": "prices",
}
# Snapshots carry no instrument kind; these venue conventions mark perpetual swaps (everything else is spot).
_PERPETUAL_SUFFIXES = ("-SWAP", "-PERP", "PERP")


@dataclass(frozen=True, slots=True)
class LoadedBook:
    book: RiskBook
    account_ids: Mapping[str, int]  # account key -> accounts.id
    data_times: Mapping[str, datetime]  # account key -> newest observed_at of its positions/balances/custody
    data_as_of: datetime | None  # newest observed_at of anything in the book
    skipped: int  # rows left out (a symbol that can't be split into base and quote)


def instrument_kind(symbol: str) -> InstrumentKind:
    upper = symbol.upper()
    return InstrumentKind.PERPETUAL if upper.endswith(_PERPETUAL_SUFFIXES) else InstrumentKind.SPOT


def freshness_from_runs(conn: Connection) -> dict[tuple[str, str], datetime]:
    """Fallback freshness: newest finished successful (or partial) collection run per (venue, kind)."""
    rows = conn.execute(
        text(
            "SELECT venue_id, kind, max(finished_at) FROM collection_runs"
            " WHERE status IN ('succeeded', 'partial') AND finished_at IS NOT NULL GROUP BY venue_id, kind"
        )
    )
    out: dict[tuple[str, str], datetime] = {}
    for venue, kind, finished in rows:
        mapped = RUN_KINDS.get(kind)
        if mapped is not None:
            key = (venue, mapped)
            if key not in out or finished > out[key]:
                out[key] = finished
    return out


def load_book(
    engine: Engine,
    *,
    groups: Mapping[str, tuple[str, ...]] | None = None,
    freshness: FreshnessSource | None = None,
    day_offset: timedelta = timedelta(0),
) -> LoadedBook:
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            return read_book(conn, groups=groups or {}, freshness=freshness, day_offset=day_offset)


def read_book(  # noqa: PLR0915  (one pass per table reads best as one function)
    conn: Connection,
    *,
    groups: Mapping[str, tuple[str, ...]],
    freshness: FreshnessSource | None,
    day_offset: timedelta,
) -> LoadedBook:
    keys: dict[int, str] = {}
    venues: dict[int, str] = {}
    for account_id, venue, external in conn.execute(
        text(
            "SELECT a.id, a.venue_id, a.external_id FROM accounts a JOIN venues v ON v.id = a.venue_id"
            " WHERE v.kind = 'exchange'"
        )
    ):
        keys[account_id] = f"{venue}:{external}"
        venues[account_id] = venue
    data_times: dict[str, datetime] = {}

    def seen(key: str, at: datetime) -> None:
        if key not in data_times or at > data_times[key]:
            data_times[key] = at

    pairs: dict[str, tuple[str, str] | None] = {}

    def pair_of(symbol: str) -> tuple[str, str] | None:
        if symbol not in pairs:
            try:
                pairs[symbol] = split_symbol(symbol)
            except ValueError:
                pairs[symbol] = None
        return pairs[symbol]

    skipped = 0
    positions: list[Position] = []
    for account_id, symbol, quantity, avg_price, mark_price, realized, observed_at in conn.execute(
        text(
            "SELECT account_id, symbol, quantity, avg_price, mark_price, realized_pnl, observed_at FROM position_latest"
        )
    ):
        key = keys.get(account_id)
        pair = pair_of(symbol)
        if key is None or pair is None:
            skipped += 1
            continue
        positions.append(
            Position(
                venues[account_id],
                key,
                symbol,
                quantity,
                # An unknown average price counts as the mark: zero unrealized P&L rather than a made-up one.
                avg_price if avg_price is not None else (mark_price if mark_price is not None else ZERO),
                observed_at,
                mark_price,
                realized,
                kind=instrument_kind(symbol),
                base=pair[0],
                quote=pair[1],
            )
        )
        seen(key, observed_at)
    balances: list[Balance] = []
    for account_id, asset, available, locked, total, observed_at in conn.execute(
        text("SELECT account_id, asset, available, locked, total, observed_at FROM balance_latest")
    ):
        key = keys.get(account_id)
        if key is None:
            skipped += 1
            continue
        balances.append(Balance(venues[account_id], key, asset, available, locked, total, observed_at))
        seen(key, observed_at)
    custody: list[CustodyBalance] = []
    custodians: dict[str, str] = {}
    for custodian, account_id, asset, total, observed_at in conn.execute(
        text(
            "SELECT ca.venue_id, c.account_id, c.asset, c.total, c.observed_at FROM custody_balance_latest c"
            " JOIN accounts ca ON ca.id = c.custodian_account_id"
        )
    ):
        key = keys.get(account_id)
        if key is None:
            skipped += 1
            continue
        custody.append(CustodyBalance(custodian, venues[account_id], key, asset, total, observed_at))
        custodians[key] = custodian
        seen(key, observed_at)
    prices: list[Price] = []
    for source, symbol, price, observed_at in conn.execute(
        text("SELECT venue_id, symbol, price, observed_at FROM price_latest")
    ):
        if pair_of(symbol) is None:
            skipped += 1
            continue
        prices.append(Price(symbol, price, observed_at, source))
    settlements = [
        PendingSettlement(settlement_id, keys[account_id], asset, quantity, initiated, expected.astimezone(UTC).date())
        for settlement_id, account_id, asset, quantity, initiated, expected in conn.execute(
            text(
                "SELECT settlement_id, account_id, asset, quantity, initiated_at, expected_settlement_at"
                " FROM settlements WHERE upper(status) = 'PENDING'"
            )
        )
        if account_id in keys
    ]
    marks = {
        scope: PnlMarks(hwm, day_start, day)
        for scope, hwm, day_start, day in conn.execute(
            text("SELECT scope, high_water_mark, day_start_equity, trading_day FROM pnl_marks")
        )
    }
    fresh: dict[tuple[str, str], datetime] = dict(freshness()) if freshness is not None else freshness_from_runs(conn)
    member_of: dict[str, set[str]] = {}
    for group, members in groups.items():
        for member in members:
            member_of.setdefault(member, set()).add(group)
    metas = [
        AccountMeta(key, venues[account_id], custodians.get(key), frozenset(member_of.get(key, ())))
        for account_id, key in keys.items()
    ]
    book = build_book(
        accounts=metas,
        positions=positions,
        balances=balances,
        prices=prices,
        custody=custody,
        settlements=settlements,
        freshness=fresh,
        marks=marks,
        day_offset=day_offset,
    )
    times: list[Any] = [*data_times.values(), *(p.observed_at for p in prices)]
    return LoadedBook(
        book=book,
        account_ids={key: account_id for account_id, key in keys.items()},
        data_times=data_times,
        data_as_of=max(times) if times else None,
        skipped=skipped,
    )
