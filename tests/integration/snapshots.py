"""Write venue data through the real collection write path (SnapshotStore), one run per call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine

from services.snapshot_store import AccountSnapshot, RunRecord, SnapshotStore


def _run(venue: str, kind: str, at: datetime) -> RunRecord:
    return RunRecord(f"collect_{kind}", venue, kind, at - timedelta(milliseconds=50), at)


@dataclass
class Venues:
    store: SnapshotStore

    @classmethod
    def on(cls, engine: Engine) -> Venues:
        return cls(SnapshotStore(engine))

    def venue(self, venue: str, kind: str = "exchange") -> None:
        self.store.ensure_venue(venue, kind)

    def account_id(self, venue: str, account: str) -> int:
        return self.store.account_ids(venue, [account])[account]

    def positions(
        self, venue: str, account: str, rows: Mapping[str, tuple[str, str]], at: datetime, *, collected: datetime
    ) -> None:
        """rows: symbol -> (quantity, avg_price); mark prices come from market data."""
        data = [(symbol, Decimal(q), Decimal(avg), None, None, at) for symbol, (q, avg) in rows.items()]
        account_id = self.account_id(venue, account)
        self.store.write_snapshots(
            _run(venue, "positions", collected), collected, [AccountSnapshot(account_id, at, data)]
        )

    def balances(
        self, venue: str, account: str, totals: Mapping[str, str], at: datetime, *, collected: datetime
    ) -> None:
        data = [(asset, Decimal(t), Decimal(0), Decimal(t), at) for asset, t in totals.items()]
        account_id = self.account_id(venue, account)
        self.store.write_snapshots(
            _run(venue, "balances", collected), collected, [AccountSnapshot(account_id, at, data)]
        )

    def custody(
        self,
        custodian: str,
        client: str,
        held: tuple[str, str],
        totals: Mapping[str, str],
        at: datetime,
        *,
        collected: datetime,
    ) -> None:
        custodian_account = self.account_id(custodian, client)
        held_id = self.account_id(*held)
        data = [(held_id, asset, Decimal(t), at) for asset, t in totals.items()]
        self.store.write_snapshots(
            _run(custodian, "custody_balances", collected),
            collected,
            [AccountSnapshot(custodian_account, at, data)],
        )

    def prices(self, source: str, prices: Mapping[str, str], at: datetime) -> None:
        rows = [(symbol, Decimal(p), None, at) for symbol, p in prices.items()]
        self.store.write_prices(_run(source, "prices", at), at, rows)
