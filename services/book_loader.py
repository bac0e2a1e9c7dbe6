"""Read the current state (latest snapshots, prices, settlements, accounts, P&L marks) into a ``RiskBook``.

Everything is read in one REPEATABLE READ, read-only transaction, so the book is one consistent picture
even while collection batches commit. Rows become domain values directly (no ORM objects): this runs
every second over ~100k positions. Account key = ``"<venue_id>:<external_id>"``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, text

from models.risk import (
    AccountMeta,
    Balance,
    CustodyBalance,
    InstrumentKind,
    PendingSettlement,
    PnlMarks,
    Position,
    PositionSpec,
    Price,
    RiskBook,
    build_book,
    position_row,
    position_spec,
    update_book,
    with_mark,
)
from services.raw_rows import fetch_all

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

ACCOUNTS_SQL = (
    "SELECT a.id, a.venue_id, a.external_id FROM accounts a JOIN venues v ON v.id = a.venue_id"
    " WHERE v.kind = 'exchange'"
)
POSITIONS_SQL = (
    "SELECT account_id, symbol, quantity, avg_price, mark_price, realized_pnl, observed_at FROM position_latest"
)
BALANCES_SQL = "SELECT account_id, asset, available, locked, total, observed_at FROM balance_latest"
HEADS_SQL = "SELECT account_id, kind, collected_at FROM snapshot_heads WHERE kind IN ('positions', 'balances')"
CUSTODY_SQL = (
    "SELECT ca.venue_id, c.account_id, c.asset, c.total, c.observed_at FROM custody_balance_latest c"
    " JOIN accounts ca ON ca.id = c.custodian_account_id"
)
PRICES_SQL = "SELECT venue_id, symbol, price, observed_at FROM price_latest"
SETTLEMENTS_SQL = (
    "SELECT settlement_id, account_id, asset, quantity, initiated_at, expected_settlement_at"
    " FROM settlements WHERE upper(status) = 'PENDING'"
)
MARKS_SQL = "SELECT scope, high_water_mark, day_start_equity, trading_day FROM pnl_marks"
# Every query of a book read, in order: the benchmark's read-only floor runs exactly these.
BOOK_QUERIES = (
    ACCOUNTS_SQL,
    HEADS_SQL,
    POSITIONS_SQL,
    BALANCES_SQL,
    CUSTODY_SQL,
    PRICES_SQL,
    SETTLEMENTS_SQL,
    MARKS_SQL,
)


_Row = TypeVar("_Row", Position, Balance)


@dataclass(slots=True)
class Kept(Generic[_Row]):
    """One account's rows of one kind as the last read left them. A moved head with the same content updates
    ``head`` and ``newest`` in place (no new object per account and pass); every other field is fixed."""

    head: datetime  # the snapshot head (collected_at) they were read at
    # The fetched rows without account id and observed_at, NUMERICs as text (exact), in one flat tuple: rows
    # have a fixed width, so it compares like the rows would, and it is one object per account, not one per row
    # (each kept object is walked by the cyclic collector until it dies).
    content: tuple[Any, ...]
    items: tuple[_Row, ...]  # the domain rows built from the first snapshot that had this content
    newest: datetime | None  # newest observed_at of the rows at ``head``
    skipped: int  # rows left out (an unknown account key or a symbol that can't be split)


@dataclass
class BookCache:
    """The previous read, kept by one evaluation loop between passes (not thread-safe).

    Rows per (account id, kind) are kept while the account's snapshot head (``collected_at``) has not moved:
    snapshots are immutable, so reusing them is exact; only accounts with a new batch are fetched. A fetched
    account whose rows have the same contents as the kept ones (every column but ``observed_at``, NUMERICs
    compared as text, so with their scale; most polls bring nothing new) keeps its domain rows, the very same
    tuple: nothing is built, and `models.risk.update_book` sees the account unchanged. Their ``observed_at`` is
    then the time the content was first observed; the book's freshness, ``data_times`` and
    ``positions_as_of`` always come from the rows just read. The previous book is kept too, so the next one
    shares its unchanged mappings and the fast evaluation's index is patched for the changed accounts
    instead of rebuilt. A replica that takes over the job starts with an empty cache: one full read and index
    build."""

    positions: dict[int, Kept[Position]] = field(default_factory=dict)  # by account id
    balances: dict[int, Kept[Balance]] = field(default_factory=dict)
    book: RiskBook | None = None
    metas: list[AccountMeta] = field(default_factory=list)  # the accounts the book was built with
    meta_inputs: tuple[object, ...] = ()  # what `metas` was made from: the same again reuses them unbuilt


@dataclass(frozen=True, slots=True)
class LoadedBook:
    book: RiskBook
    account_ids: Mapping[str, int]  # account key -> accounts.id
    data_times: Mapping[str, datetime]  # account key -> newest observed_at of its positions/balances/custody
    data_as_of: datetime | None  # newest observed_at of anything in the book
    positions_as_of: Mapping[str, datetime]  # account key -> when its latest positions snapshot was taken
    skipped: int  # rows left out (a symbol that can't be split into base and quote)


def instrument_kind(symbol: str) -> InstrumentKind:
    upper = symbol.upper()
    return InstrumentKind.PERPETUAL if upper.endswith(_PERPETUAL_SUFFIXES) else InstrumentKind.SPOT


def freshness_from_runs(conn: Connection) -> dict[tuple[str, str], datetime]:
    """Fallback freshness: newest finished successful (or partial) collection run per (venue, kind)."""
    # One index probe per venue and kind (newest run first), not an aggregate over every run ever kept:
    # with several replicas this is the evaluation's freshness source on every pass.
    rows = conn.execute(
        text(
            "SELECT v.id, k.kind, r.finished_at FROM venues v"
            " CROSS JOIN unnest(CAST(:kinds AS text[])) AS k(kind)"
            " CROSS JOIN LATERAL (SELECT c.finished_at FROM collection_runs c"
            "   WHERE c.venue_id = v.id AND c.kind = k.kind AND c.status IN ('succeeded', 'partial')"
            "   AND c.finished_at IS NOT NULL ORDER BY c.started_at DESC LIMIT 1) AS r"
        ),
        {"kinds": list(RUN_KINDS)},
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
    cache: BookCache | None = None,
) -> LoadedBook:
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            # ~300k objects are created and none become garbage cycles: without the collector, its generational
            # passes over the growing heap (about a fifth of the load time, measured) are skipped.
            enabled = gc.isenabled()
            gc.disable()
            try:
                return read_book(
                    conn, groups=groups or {}, freshness=freshness, day_offset=day_offset, cache=cache or BookCache()
                )
            finally:
                if enabled:
                    gc.enable()


@dataclass
class _Reader:
    """One read: account keys, symbol parsing memo, newest data time per account, rows left out."""

    conn: Connection
    keys: dict[int, str]
    venues: dict[int, str]
    data_times: dict[str, datetime] = field(default_factory=dict)
    positions_as_of: dict[str, datetime] = field(default_factory=dict)  # account key -> its positions' head
    instruments: dict[str, PositionSpec | None] = field(default_factory=dict)
    row_times: dict[tuple[str, str], datetime] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)  # mark price text -> its Decimal (immutable: shared)
    skipped: int = 0

    def instrument(self, symbol: str) -> PositionSpec | None:
        """Parsed once per symbol, not per row."""
        if symbol not in self.instruments:
            try:
                self.instruments[symbol] = position_spec(symbol, instrument_kind(symbol))
            except ValueError:
                self.instruments[symbol] = None
        return self.instruments[symbol]

    def seen(self, key: str, at: datetime) -> None:
        if key not in self.data_times or at > self.data_times[key]:
            self.data_times[key] = at

    def venue_seen(self, source: str, kind: str, at: datetime | None) -> None:
        """Newest row time per (venue or source, data kind): the book's freshness from its rows."""
        if at is not None and ((source, kind) not in self.row_times or at > self.row_times[source, kind]):
            self.row_times[source, kind] = at

    def stale(self, cached: Mapping[int, Kept[Any]], heads: Mapping[int, datetime]) -> list[int] | None:
        """Accounts whose head moved since the cache; None = read everything (cheaper than a long id list)."""
        changed = [a for a, at in heads.items() if a not in cached or cached[a].head != at]
        return None if len(changed) > len(heads) // 2 else changed

    def fetch(
        self, sql: str, heads: Mapping[int, datetime], cached: Mapping[int, Kept[Any]]
    ) -> dict[int, list[tuple[Any, ...]]]:
        """The rows of every account whose head moved, by account id (NUMERICs as text, observed_at last)."""
        changed = self.stale(cached, heads)
        params = None
        if changed is not None:
            sql, params = sql + " WHERE account_id = ANY(%(ids)s)", {"ids": changed}
        fetched: dict[int, list[tuple[Any, ...]]] = {a: [] for a in (heads if changed is None else changed)}
        if changed is None or changed:
            for row in fetch_all(self.conn, sql, params, numeric_as_text=True):
                fetched[row[0]].append(row)
        return fetched

    def positions(self, heads: Mapping[int, datetime], cache: BookCache) -> dict[str, tuple[Position, ...]]:
        fetched = self.fetch(POSITIONS_SQL, heads, cache.positions)
        kept: dict[int, Kept[Position]] = {}
        for account_id, head in heads.items():
            rows = fetched.get(account_id)
            if rows is None:
                kept[account_id] = cache.positions[account_id]
                continue
            content = tuple(chain.from_iterable(map(_POSITION_CONTENT, rows)))
            newest = max(map(_POSITION_OBSERVED, rows), default=None)
            old = cache.positions.get(account_id)
            if old is not None and old.content == content:  # the same positions again: keep the built ones
                old.head, old.newest = head, newest
                kept[account_id] = old
            else:
                kept[account_id] = self.build_positions(account_id, head, content, rows, newest, old=old)
        cache.positions = kept
        out: dict[str, tuple[Position, ...]] = {}
        keys, venues = self.keys, self.venues
        for account_id, entry in kept.items():
            self.skipped += entry.skipped
            key = keys.get(account_id)
            if key is not None:
                self.positions_as_of[key] = entry.head
                if entry.newest is not None:
                    out[key] = entry.items
                    self.seen(key, entry.newest)
                    self.venue_seen(venues[account_id], "positions", entry.newest)
        return out

    def build_positions(
        self,
        account_id: int,
        head: datetime,
        content: tuple[Any, ...],
        rows: list[tuple[Any, ...]],
        newest: datetime | None,
        *,
        old: Kept[Position] | None,
    ) -> Kept[Position]:
        key = self.keys.get(account_id)
        venue = self.venues.get(account_id, "")  # none for a row left out (not an exchange account)
        items: list[Position] = []
        skipped = 0
        instruments, marks, make = self.instruments, self.marks, position_row
        # The kept rows line up with the fetched ones (same count, none left out, same account): a row whose
        # content differs only in its mark (marks move every poll) keeps the kept Position's other values.
        before: tuple[Any, ...] = ()
        kept_items: tuple[Position, ...] = ()
        if (
            old is not None
            and not old.skipped
            and len(old.content) == len(content)
            and key is not None
            and (not old.items or (old.items[0].account == key and old.items[0].venue == venue))
        ):
            before, kept_items = old.content, old.items
        for i, (_, symbol, quantity, avg_price, mark_price, realized, observed_at) in enumerate(rows):
            spec = instruments[symbol] if symbol in instruments else self.instrument(symbol)
            if key is None or spec is None:
                skipped += 1
                continue
            # inline (a call per row costs); a venue marks a symbol alike in every account: parse each text once
            if mark_price is None:
                mark = None
            elif mark_price in marks:
                mark = marks[mark_price]
            else:
                mark = marks[mark_price] = Decimal(mark_price)
            j = 5 * i  # this row in the kept content: symbol, quantity, avg_price, mark_price, realized_pnl
            if (
                before
                and avg_price is not None  # (an unknown average price is taken from the mark)
                and before[j + 1] == quantity
                and before[j + 2] == avg_price
                and before[j + 4] == realized
                and before[j] == symbol
            ):
                items.append(with_mark(kept_items[i], mark, observed_at))
                continue
            items.append(
                make(
                    spec,
                    venue,
                    key,
                    symbol,
                    observed_at,
                    quantity=Decimal(quantity),
                    # An unknown average price counts as the mark: zero unrealized P&L rather than a made-up one.
                    avg_price=Decimal(avg_price) if avg_price is not None else (mark if mark is not None else ZERO),
                    mark_price=mark,
                    realized_pnl=None if realized is None else Decimal(realized),
                )
            )
        return Kept(head, content, tuple(items), newest, skipped)

    def balances(self, heads: Mapping[int, datetime], cache: BookCache) -> dict[str, tuple[Balance, ...]]:
        fetched = self.fetch(BALANCES_SQL, heads, cache.balances)
        kept: dict[int, Kept[Balance]] = {}
        keys, venues = self.keys, self.venues
        for account_id, head in heads.items():
            rows = fetched.get(account_id)
            if rows is None:
                kept[account_id] = cache.balances[account_id]
                continue
            content = tuple(chain.from_iterable(map(_BALANCE_CONTENT, rows)))
            newest = max(map(_BALANCE_OBSERVED, rows), default=None)
            old = cache.balances.get(account_id)
            if old is not None and old.content == content:
                old.head, old.newest = head, newest
                kept[account_id] = old
                continue
            key = keys.get(account_id)
            items = (
                ()
                if key is None
                else tuple(
                    Balance(venues[account_id], key, asset, Decimal(available), Decimal(locked), Decimal(total), at)
                    for _, asset, available, locked, total, at in rows
                )
            )
            kept[account_id] = Kept(head, content, items, newest, len(rows) - len(items))
        cache.balances = kept
        out: dict[str, tuple[Balance, ...]] = {}
        for account_id, entry in kept.items():
            self.skipped += entry.skipped
            key = keys.get(account_id)
            if entry.newest is not None and key is not None:
                out[key] = entry.items
                self.seen(key, entry.newest)
                self.venue_seen(venues[account_id], "balances", entry.newest)
        return out


# Row shapes of POSITIONS_SQL / BALANCES_SQL: everything but account_id (the first column, the same for all of
# an account's rows) and observed_at (the last) is content.
_POSITION_CONTENT = itemgetter(1, 2, 3, 4, 5)
_POSITION_OBSERVED = itemgetter(6)
_BALANCE_CONTENT = itemgetter(1, 2, 3, 4)
_BALANCE_OBSERVED = itemgetter(5)


def _adopt(
    kept: dict[int, Kept[_Row]], rows: Mapping[str, tuple[_Row, ...]], keys: Mapping[int, str]
) -> dict[int, Kept[_Row]]:
    out: dict[int, Kept[_Row]] = {}
    for account_id, entry in kept.items():
        items = rows.get(keys.get(account_id, ""))
        out[account_id] = (
            entry
            if items is None or items is entry.items
            else Kept(entry.head, entry.content, items, entry.newest, entry.skipped)
        )
    return out


def _metas(
    keys: Mapping[int, str],
    venues: Mapping[int, str],
    custodians: Mapping[str, str],
    groups: Mapping[str, tuple[str, ...]],
    cache: BookCache,
) -> tuple[list[AccountMeta], tuple[object, ...]]:
    """The accounts' metadata, and what it was made from (keys in order: the book's account order)."""
    inputs = (tuple(keys.items()), venues, custodians, dict(groups))
    if cache.metas and inputs == cache.meta_inputs:  # a few C comparisons instead of 10k objects built
        return cache.metas, cache.meta_inputs
    member_of: dict[str, set[str]] = {}
    for group, members in groups.items():
        for member in members:
            member_of.setdefault(member, set()).add(group)
    metas = [
        AccountMeta(key, venues[account_id], custodians.get(key), frozenset(member_of.get(key, ())))
        for account_id, key in keys.items()
    ]
    # the same objects: fewer survivors (see _marks)
    return (cache.metas if metas == cache.metas else metas), inputs


def _marks(rows: list[Any], cache: BookCache) -> dict[str, PnlMarks]:
    """P&L marks by scope, keeping last pass's objects for rows that did not change.

    Objects that outlive a pass are what drives the cyclic collector's full collections (each one walks
    every object of the process); a steady pass should leave as few new ones behind as it can."""
    previous = cache.book.marks if cache.book is not None else {}
    out: dict[str, PnlMarks] = {}
    for scope, hwm, day_start, day in rows:
        old = previous.get(scope)
        same = old is not None and old.trading_day == day and _same_decimal(old.hwm, hwm)
        if same and old is not None and _same_decimal(old.day_start_equity, day_start):
            out[scope] = old
        else:
            out[scope] = PnlMarks(hwm, day_start, day)
    return out


def _same_decimal(a: Decimal, b: Decimal) -> bool:
    return not a.compare_total(b)  # same value and same exponent (== ignores the exponent)


def read_book(
    conn: Connection,
    *,
    groups: Mapping[str, tuple[str, ...]],
    freshness: FreshnessSource | None,
    day_offset: timedelta,
    cache: BookCache,
) -> LoadedBook:
    keys: dict[int, str] = {}
    venues: dict[int, str] = {}
    for account_id, venue, external in fetch_all(conn, ACCOUNTS_SQL):
        keys[account_id] = f"{venue}:{external}"
        venues[account_id] = venue
    reader = _Reader(conn, keys, venues)
    heads: dict[str, dict[int, datetime]] = {"positions": {}, "balances": {}}
    for account_id, kind, collected_at in fetch_all(conn, HEADS_SQL):
        heads[kind][account_id] = collected_at
    positions = reader.positions(heads["positions"], cache)
    balances = reader.balances(heads["balances"], cache)
    custody: list[CustodyBalance] = []
    custodians: dict[str, str] = {}
    for custodian, account_id, asset, total, observed_at in fetch_all(conn, CUSTODY_SQL):
        key = keys.get(account_id)
        if key is None:
            reader.skipped += 1
            continue
        custody.append(CustodyBalance(custodian, venues[account_id], key, asset, total, observed_at))
        custodians[key] = custodian
        reader.seen(key, observed_at)
        reader.venue_seen(custodian, "custody", observed_at)
    prices: list[Price] = []
    for source, symbol, price, observed_at in fetch_all(conn, PRICES_SQL):
        if reader.instrument(symbol) is None:
            reader.skipped += 1
            continue
        prices.append(Price(symbol, price, observed_at, source))
        reader.venue_seen(source, "prices", observed_at)
    settlements = [
        PendingSettlement(settlement_id, keys[account_id], asset, quantity, initiated, expected.astimezone(UTC).date())
        for settlement_id, account_id, asset, quantity, initiated, expected in fetch_all(conn, SETTLEMENTS_SQL)
        if account_id in keys
    ]
    marks = _marks(fetch_all(conn, MARKS_SQL), cache)
    fresh: dict[tuple[str, str], datetime] = dict(freshness()) if freshness is not None else freshness_from_runs(conn)
    for source_kind, at in reader.row_times.items():
        if source_kind not in fresh or at > fresh[source_kind]:
            fresh[source_kind] = at
    metas, meta_inputs = _metas(keys, venues, custodians, groups, cache)
    if cache.book is not None and cache.metas == metas and cache.book.day_offset == day_offset:
        book = update_book(
            cache.book,
            positions=positions,
            balances=balances,
            custody=custody,
            settlements=settlements,
            prices=prices,
            freshness=fresh,
            marks=marks,
        )
    else:
        book = build_book(
            accounts=metas,
            positions=chain.from_iterable(positions.values()),
            balances=chain.from_iterable(balances.values()),
            prices=prices,
            custody=custody,
            settlements=settlements,
            freshness=fresh,
            marks=marks,
            day_offset=day_offset,
        )
        # The book regrouped the rows into tuples of its own (equal, same order): keep those, so the next pass
        # hands `update_book` the very tuples of accounts whose content did not change.
        cache.positions = _adopt(cache.positions, book.positions, keys)
        cache.balances = _adopt(cache.balances, book.balances, keys)
    cache.book, cache.metas, cache.meta_inputs = book, metas, meta_inputs
    times: list[Any] = [*reader.data_times.values(), *(p.observed_at for p in prices)]
    return LoadedBook(
        book=book,
        account_ids={key: account_id for account_id, key in keys.items()},
        data_times=reader.data_times,
        data_as_of=max(times) if times else None,
        positions_as_of=reader.positions_as_of,
        skipped=reader.skipped,
    )
