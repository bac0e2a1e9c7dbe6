"""The snapshot write path: one collection run = one transaction (run row, COPY of the batch, heads,
rejected records), so a run is all-or-nothing and a retried run cannot duplicate rows.

Speed comes from a text COPY straight into the snapshot table, formatted by ``services.copy_text``
(cheaper in CPU than psycopg's binary COPY: benchmarks/write.py), and one array-based statement for
the heads; benchmarks/ingest.py measures the whole path against a bare COPY of the same rows.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine, text

from services.copy_text import CopyText, Refused, array_literal

log = logging.getLogger(__name__)

# Column order of each snapshot table's COPY, after (account key, collected_at) and before run_id.
SNAPSHOT_TABLES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # kind: (table, columns, binary COPY types: the benchmarks' baselines copy in binary)
    "positions": (
        "position_snapshots",
        ("account_id", "collected_at", "symbol", "quantity", "avg_price", "mark_price", "realized_pnl",
         "observed_at", "run_id"),
        ("int4", "timestamptz", "text", "numeric", "numeric", "numeric", "numeric", "timestamptz", "int8"),
    ),
    "balances": (
        "balance_snapshots",
        ("account_id", "collected_at", "asset", "available", "locked", "total", "observed_at", "run_id"),
        ("int4", "timestamptz", "text", "numeric", "numeric", "numeric", "timestamptz", "int8"),
    ),
    "custody_balances": (
        "custody_balance_snapshots",
        ("custodian_account_id", "collected_at", "account_id", "asset", "total", "observed_at", "run_id"),
        ("int4", "timestamptz", "int4", "text", "numeric", "timestamptz", "int8"),
    ),
}  # fmt: skip
SNAPSHOT_KINDS = tuple(SNAPSHOT_TABLES)
CLEARED = "CLEARED"  # status of a settlement the custodian no longer lists as pending
# price_latest from the rows a run just copied, each found by its primary key (venue, symbol,
# collected_at): one index probe per symbol. Filtering the day's partition on venue and collected_at
# instead read the whole day's partition (a seq or lossy BRIN scan: 137-421 ms at 2M rows). LIMIT 1 keeps
# the per-symbol subquery a probe: joined flat, the planner picked that BRIN scan again. Older
# observed_at never overwrites newer.
PRICE_LATEST_UPSERT = (
    "INSERT INTO price_latest (venue_id, symbol, price, volume, observed_at, collected_at, run_id)"
    " SELECT p.venue_id, p.symbol, p.price, p.volume, p.observed_at, p.collected_at, p.run_id"
    " FROM unnest(CAST(:symbols AS text[])) AS s(symbol)"
    " CROSS JOIN LATERAL (SELECT * FROM price_snapshots"
    " WHERE venue_id = :venue AND symbol = s.symbol AND collected_at = :at LIMIT 1) AS p"
    " ON CONFLICT (venue_id, symbol) DO UPDATE SET price = excluded.price,"
    " volume = excluded.volume, observed_at = excluded.observed_at,"
    " collected_at = excluded.collected_at, run_id = excluded.run_id"
    " WHERE price_latest.observed_at <= excluded.observed_at"
)


class DuplicateBatch(RuntimeError):
    """The batch was already written (a retry of a committed run): nothing was changed."""

    def __init__(self, venue_id: str, kind: str, collected_at: datetime) -> None:
        super().__init__(f"{kind} batch of {venue_id} at {collected_at.isoformat()} is already stored")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a collection run reports about itself; stored in ``collection_runs``."""

    job: str
    venue_id: str
    kind: str
    started_at: datetime
    finished_at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that failed validation: the raw payload as received and why."""

    payload: Any
    reason: str


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account's rows of one kind, in the kind's column order (without account, time and run)."""

    account_id: int
    observed_at: datetime
    rows: Sequence[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class SettlementUpsert:
    """One pending settlement as the ``settlements`` table holds it (account resolved to its id)."""

    settlement_id: str
    account_id: int
    asset: str
    quantity: Decimal
    status: str
    initiated_at: datetime
    expected_settlement_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    run_id: int
    accepted: int
    rejected: int
    status: str


def _json_default(value: object) -> str:
    return str(value)  # Decimal, datetime: keep the exact text the venue sent


def _jsonb(payload: Any) -> Jsonb:
    return Jsonb(payload, dumps=lambda obj: json.dumps(obj, default=_json_default))


@dataclass
class SnapshotStore:
    engine: Engine
    _accounts: dict[tuple[str, str], int] = field(default_factory=dict)

    # --- reference data ------------------------------------------------------------------------------

    def ensure_venue(self, venue_id: str, kind: str, base_url: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO venues (id, kind, base_url) VALUES (:id, :kind, :url)"
                    " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, base_url = excluded.base_url"
                ),
                {"id": venue_id, "kind": kind, "url": base_url},
            )

    def account_ids(self, venue_id: str, external_ids: Iterable[str]) -> dict[str, int]:
        """Compact ids for venue accounts, created on first sight (cached; one statement for the misses)."""
        wanted = list(dict.fromkeys(external_ids))
        missing = [e for e in wanted if (venue_id, e) not in self._accounts]
        if missing:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    text(
                        "INSERT INTO accounts (venue_id, external_id)"
                        " SELECT :venue, unnest(CAST(:ids AS text[]))"
                        " ON CONFLICT (venue_id, external_id) DO UPDATE SET last_seen_at = now()"
                        " RETURNING external_id, id"
                    ),
                    {"venue": venue_id, "ids": missing},
                )
                for external_id, account_id in rows:
                    self._accounts[(venue_id, external_id)] = account_id
        return {e: self._accounts[(venue_id, e)] for e in wanted}

    # --- runs ------------------------------------------------------------------------------------------

    def record_failed_run(self, run: RunRecord, rejected: Sequence[Rejection] = ()) -> int:
        """A run that produced no batch (venue down, malformed response): kept with its reason, and with
        the records it did receive and refuse (their reasons must outlive the failure)."""
        with self.engine.begin() as conn:
            run_id = self._insert_run(conn, run, "failed", 0, len(rejected))
            self._insert_rejections(conn, run, run_id, rejected)
            return run_id

    def write_snapshots(
        self,
        run: RunRecord,
        collected_at: datetime,
        accounts: Sequence[AccountSnapshot],
        rejected: Sequence[Rejection] = (),
    ) -> WriteResult:
        """Write one run's batch of ``run.kind`` in one transaction and move each account's head to it.

        A row holding a value the table must not take (NaN, a time without offset) is rejected with a
        reason, like a record the payload validation refused; the rest of the batch is written.
        """
        table, columns, _ = SNAPSHOT_TABLES[run.kind]
        total = sum(len(a.rows) for a in accounts)
        try:
            with self.engine.begin() as conn:
                run_id = self._insert_run(conn, run, _status(run, rejected), total, len(rejected))
                cursor = _driver(conn).cursor()
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    bad, refused_of = _copy_snapshot_rows(copy, columns, collected_at, accounts, run_id)
                if bad:
                    rejected = [*rejected, *bad]
                    self._recount_run(conn, run, run_id, total - len(bad), len(rejected))
                # An account none of whose rows could be written keeps its head: not an empty (flat) book.
                moved = [a for a in accounts if not a.rows or refused_of[a.account_id] < len(a.rows)]
                self._move_heads(conn, run.kind, collected_at, moved, run_id)
                self._insert_rejections(conn, run, run_id, rejected)
        except psycopg.errors.UniqueViolation:
            raise DuplicateBatch(run.venue_id, run.kind, collected_at) from None
        return WriteResult(run_id, total - len(bad), len(rejected), _status(run, rejected))

    def write_prices(
        self,
        run: RunRecord,
        collected_at: datetime,
        prices: Sequence[tuple[str, Any, Any, datetime]],
        rejected: Sequence[Rejection] = (),
    ) -> WriteResult:
        """Snapshot (symbol, price, volume, observed_at) rows of one market-data source."""
        with self.engine.begin() as conn:
            run_id = self._insert_run(conn, run, _status(run, rejected), len(prices), len(rejected))
            cursor = _driver(conn).cursor()
            columns = "venue_id, collected_at, symbol, price, volume, observed_at, run_id"
            with cursor.copy(f"COPY price_snapshots ({columns}) FROM STDIN") as copy:
                symbols, bad = _copy_price_rows(copy, run.venue_id, collected_at, prices, run_id)
            if bad:
                rejected = [*rejected, *bad]
                self._recount_run(conn, run, run_id, len(symbols), len(rejected))
            if symbols:
                conn.execute(
                    text(PRICE_LATEST_UPSERT),
                    {"symbols": array_literal(symbols), "venue": run.venue_id, "at": collected_at},
                )
            self._insert_rejections(conn, run, run_id, rejected)
        return WriteResult(run_id, len(symbols), len(rejected), _status(run, rejected))

    def write_settlements(
        self,
        run: RunRecord,
        seen_at: datetime,
        settlements: Sequence[SettlementUpsert],
        rejected: Sequence[Rejection] = (),
        *,
        still_reported: Iterable[str] = (),
    ) -> WriteResult:
        """Upsert the custodian's pending settlements; the ones it no longer reports become CLEARED.

        ``still_reported`` names settlements the venue listed but that were not accepted (a rejected
        record): they are still pending, so they must not be cleared.
        """
        status = _status(run, rejected)
        reported = [s.settlement_id for s in settlements] + list(still_reported)
        with self.engine.begin() as conn:
            run_id = self._insert_run(conn, run, status, len(settlements), len(rejected))
            if settlements:
                conn.execute(
                    text(
                        "INSERT INTO settlements (custodian_id, settlement_id, account_id, asset, quantity, status,"
                        " initiated_at, expected_settlement_at, first_seen_at, last_seen_at, run_id)"
                        " VALUES (:custodian, :id, :account, :asset, :quantity, :status, :initiated, :expected,"
                        " :seen, :seen, :run)"
                        " ON CONFLICT (custodian_id, settlement_id) DO UPDATE SET account_id = excluded.account_id,"
                        " asset = excluded.asset, quantity = excluded.quantity, status = excluded.status,"
                        " initiated_at = excluded.initiated_at,"
                        " expected_settlement_at = excluded.expected_settlement_at,"
                        " last_seen_at = excluded.last_seen_at, run_id = excluded.run_id"
                    ),
                    [
                        {
                            "custodian": run.venue_id,
                            "id": s.settlement_id,
                            "account": s.account_id,
                            "asset": s.asset,
                            "quantity": s.quantity,
                            "status": s.status,
                            "initiated": s.initiated_at,
                            "expected": s.expected_settlement_at,
                            "seen": seen_at,
                            "run": run_id,
                        }
                        for s in settlements
                    ],
                )
            # A settlement that left the pending list settled (the custodian lists only pending ones).
            conn.execute(
                text(
                    "UPDATE settlements SET status = :cleared, run_id = :run"
                    " WHERE custodian_id = :custodian AND status = 'PENDING'"
                    " AND settlement_id <> ALL(CAST(:reported AS text[]))"
                ),
                {"cleared": CLEARED, "run": run_id, "custodian": run.venue_id, "reported": reported},
            )
            self._insert_rejections(conn, run, run_id, rejected)
        return WriteResult(run_id, len(settlements), len(rejected), status)

    def find_accounts(self, venue_ids: Sequence[str], external_ids: Iterable[str]) -> dict[str, list[int]]:
        """Known accounts with these external ids at any of ``venue_ids`` (for records that name no venue)."""
        wanted = list(dict.fromkeys(external_ids))
        found: dict[str, list[int]] = {e: [] for e in wanted}
        if not wanted or not venue_ids:
            return found
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT external_id, id FROM accounts"
                    " WHERE venue_id = ANY(CAST(:venues AS text[])) AND external_id = ANY(CAST(:ids AS text[]))"
                    " ORDER BY id"
                ),
                {"venues": list(venue_ids), "ids": wanted},
            )
            for external_id, account_id in rows:
                found[external_id].append(int(account_id))
        return found

    def last_good_runs(self) -> dict[tuple[str, str], datetime]:
        """(venue, run kind) -> finished_at of its newest run that collected everything it was asked to."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT venue_id, kind, max(finished_at) FROM collection_runs"
                    " WHERE status IN ('succeeded', 'partial') AND error IS NULL AND finished_at IS NOT NULL"
                    " GROUP BY venue_id, kind"
                )
            )
            return {(str(venue), str(kind)): at for venue, kind, at in rows}

    # --- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _insert_run(conn: Connection, run: RunRecord, status: str, accepted: int, rejected: int) -> int:
        run_id: int = conn.execute(
            text(
                "INSERT INTO collection_runs (job, venue_id, kind, started_at, finished_at, status,"
                " records_accepted, records_rejected, error)"
                " VALUES (:job, :venue, :kind, :started, :finished, :status, :accepted, :rejected, :error)"
                " RETURNING id"
            ),
            {
                "job": run.job,
                "venue": run.venue_id,
                "kind": run.kind,
                "started": run.started_at,
                "finished": run.finished_at,
                "status": status,
                "accepted": accepted,
                "rejected": rejected,
                "error": run.error,
            },
        ).scalar_one()
        return run_id

    @staticmethod
    def _move_heads(
        conn: Connection, kind: str, collected_at: datetime, accounts: Sequence[AccountSnapshot], run_id: int
    ) -> None:
        if not accounts:
            return
        # One statement for all accounts; a head never moves backwards (an out-of-order retry is ignored).
        conn.execute(
            text(
                "INSERT INTO snapshot_heads (account_id, kind, collected_at, observed_at, run_id)"
                " SELECT a, :kind, :at, o, :run"
                " FROM unnest(CAST(:accounts AS int[]), CAST(:observed AS timestamptz[])) AS t(a, o)"
                " ON CONFLICT (account_id, kind) DO UPDATE SET collected_at = excluded.collected_at,"
                " observed_at = excluded.observed_at, run_id = excluded.run_id"
                " WHERE snapshot_heads.collected_at < excluded.collected_at"
            ),
            {
                "kind": kind,
                "at": collected_at,
                "run": run_id,
                # Whole arrays as one text parameter each: psycopg would dump them element by element.
                "accounts": array_literal([a.account_id for a in accounts]),
                "observed": array_literal([a.observed_at for a in accounts]),
            },
        )

    @staticmethod
    def _recount_run(conn: Connection, run: RunRecord, run_id: int, accepted: int, rejected: int) -> None:
        """Correct the run row's counts after rows were rejected during the COPY (rare)."""
        conn.execute(
            text(
                "UPDATE collection_runs SET records_accepted = :accepted, records_rejected = :rejected,"
                " status = 'partial' WHERE id = :id AND started_at = :started"
            ),
            {"accepted": accepted, "rejected": rejected, "id": run_id, "started": run.started_at},
        )

    @staticmethod
    def _insert_rejections(conn: Connection, run: RunRecord, run_id: int, rejected: Sequence[Rejection]) -> None:
        if not rejected:
            return
        cursor = _driver(conn).cursor()
        cursor.executemany(
            "INSERT INTO rejected_records (run_id, venue_id, kind, payload, reason) VALUES (%s, %s, %s, %s, %s)",
            [(run_id, run.venue_id, run.kind, _jsonb(r.payload), r.reason) for r in rejected],
        )


def _status(run: RunRecord, rejected: Sequence[Rejection]) -> str:
    # A run with rejected records or failed accounts (``run.error``) still wrote what it had: partial.
    return "partial" if rejected or run.error else "succeeded"


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy connection, inside the same transaction."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def latest_heads(conn: Connection, kind: str) -> Mapping[int, datetime]:
    """Account id -> collected_at of its newest accepted snapshot of ``kind``."""
    rows = conn.execute(text("SELECT account_id, collected_at FROM snapshot_heads WHERE kind = :kind"), {"kind": kind})
    return {int(account_id): at for account_id, at in rows}


# Rows per write to the COPY stream: large enough to amortise the call, small enough to stream.
_COPY_CHUNK = 2000
PRICE_COLUMNS = ("symbol", "price", "volume", "observed_at")


def _copy_snapshot_rows(
    copy: psycopg.Copy,
    columns: Sequence[str],
    collected_at: datetime,
    accounts: Sequence[AccountSnapshot],
    run_id: int,
) -> tuple[list[Rejection], Counter[int]]:
    """Stream the accounts' rows into ``copy`` as COPY text; return the rows it could not write, and how many
    of each account's rows those are."""
    formatter = CopyText()
    at = formatter.value(collected_at)
    end = f"\t{run_id}\n"
    rows: list[Sequence[object]] = []
    heads: list[str] = []
    owners: list[int] = []  # each row's account, for the rare refused row
    bad: list[Rejection] = []
    refused_of: Counter[int] = Counter()

    def flush() -> None:
        block, refused = formatter.block(rows, heads, end)
        copy.write(block)
        bad.extend(_rejection(columns[2:-1], rows, r, account_id=owners[r[0]]) for r in refused)
        refused_of.update(owners[r[0]] for r in refused)
        rows.clear()
        heads.clear()
        owners.clear()

    for account in accounts:
        start = len(rows)
        rows.extend(account.rows)
        heads.extend([f"{account.account_id}\t{at}\t"] * (len(rows) - start))
        owners.extend([account.account_id] * (len(rows) - start))
        if len(rows) >= _COPY_CHUNK:
            flush()
    if rows:
        flush()
    return bad, refused_of


def _copy_price_rows(
    copy: psycopg.Copy,
    venue_id: str,
    collected_at: datetime,
    prices: Sequence[tuple[str, Any, Any, datetime]],
    run_id: int,
) -> tuple[list[str], list[Rejection]]:
    """Stream the price rows into ``copy`` (venue, collected_at, *row, run); return the symbols
    written and the rows refused."""
    formatter = CopyText()
    prefix = f"{formatter.value(venue_id)}\t{formatter.value(collected_at)}\t"
    block, refused = formatter.block(prices, [prefix] * len(prices), f"\t{run_id}\n")
    copy.write(block)
    if not refused:
        return [row[0] for row in prices], []
    skipped = {index for index, _, _ in refused}
    symbols = [row[0] for index, row in enumerate(prices) if index not in skipped]
    return symbols, [_rejection(PRICE_COLUMNS, prices, r) for r in refused]


def _rejection(columns: Sequence[str], rows: Sequence[Sequence[Any]], refused: Refused, **key: object) -> Rejection:
    """A refused row as a rejected record: the row by column name, and why, naming the column."""
    row, column, why = refused
    payload = {**key, **dict(zip(columns, rows[row], strict=True))}
    # jsonb refuses NUL characters: the payload keeps them visible as an escape instead.
    safe = {k: v.replace("\x00", "\\u0000") if isinstance(v, str) else v for k, v in payload.items()}
    return Rejection(safe, f"{columns[column]} {why}")
