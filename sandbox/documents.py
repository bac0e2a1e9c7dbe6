"""Venue REST routes and the JSON documents they answer with, rendered from a `SandboxWorld`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sandbox.world import SandboxWorld, SimBalance, UnknownEntity

Document = dict[str, Any]
T = TypeVar("T")


MAX_BATCH = 1000  # ids per batched request; more is a 400, as a real venue would refuse


class BadRequest(ValueError):
    """The request itself is wrong (400)."""


class NotFound(LookupError):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class Route:
    endpoint: str  # fault-injection name, e.g. "positions"
    render: Callable[[], Document]


def batched(
    ids: list[str], id_key: str, render: Callable[[str], Document], clock: Callable[[], datetime]
) -> Callable[[], Document]:
    """A batched route: one entry per requested id, each the single-id document or an error entry."""
    if len(ids) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} {id_key} values per request, got {len(ids)}")

    def render_all() -> Document:
        results: list[Document] = []
        for key in ids:
            try:
                results.append(render(key))
            except NotFound as exc:
                results.append({id_key: key, "error": {"code": "NOT_FOUND", "message": exc.what}})
        return {"as_of": rfc3339(clock()), "results": results}

    return render_all


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExchangeDocuments:
    """`GET /api/v1/accounts[/{id}/positions|/{id}/balances]` of one exchange, and the batched
    `GET /api/v1/positions|balances?account_id=..&account_id=..`."""

    _PATH = re.compile(
        r"/api/v1/(?:accounts(?:/(?P<account>[^/]+)/(?P<what>positions|balances))?|(?P<batch>positions|balances))"
    )

    def __init__(self, world: SandboxWorld, name: str) -> None:
        self.world, self.name = world, name
        self.aliases = name in world.config.alias_exchanges

    def _number(self, value: Decimal) -> str | float:
        # Alias-dialect venues send plain JSON numbers; the contract allows both.
        return float(value) if self.aliases else str(value)

    def route(self, path: str, query: Mapping[str, list[str]]) -> Route:
        match = self._PATH.fullmatch(path)
        if not match:
            raise NotFound(path)
        if batch := match["batch"]:
            render = self.positions if batch == "positions" else self.balances
            ids = query.get("account_id", [])
            return Route(batch, batched(ids, "account_id", render, self.world.clock))
        account, what = match["account"], match["what"]
        if account is None:
            return Route("accounts", self.accounts)
        if what == "positions":
            return Route("positions", lambda: self.positions(account))
        return Route("balances", lambda: self.balances(account))

    def accounts(self) -> Document:
        with self.world.locked():
            accounts = self.world.exchanges[self.name].values()
            return {
                "accounts": [
                    {"account_id": a.account_id, "account_type": a.account_type, "status": a.status} for a in accounts
                ]
            }

    def positions(self, account_id: str) -> Document:
        qty_key, price_key = ("amount", "entry_price") if self.aliases else ("quantity", "avg_price")
        with self.world.locked():
            account = _found(lambda: self.world.account(self.name, account_id))
            rows = []
            for symbol, pos in sorted(account.positions.items()):
                row: Document = {
                    "symbol": symbol,
                    qty_key: self._number(pos.quantity),
                    price_key: self._number(pos.avg_price),
                    "side": "LONG" if pos.quantity > 0 else "SHORT",
                    "realized_pnl": self._number(pos.realized_pnl),
                    "updated_at": rfc3339(pos.updated_at),
                }
                if (mark := self.world.mark(symbol)) is not None:
                    row["mark_price"] = self._number(mark)
                rows.append(row)
            return {"account_id": account_id, "as_of": rfc3339(self.world.clock()), "positions": rows}

    def balances(self, account_id: str) -> Document:
        with self.world.locked():
            account = _found(lambda: self.world.account(self.name, account_id))
            rows = [self._balance(asset, b) for asset, b in sorted(account.balances.items())]
            return {"account_id": account_id, "as_of": rfc3339(self.world.clock()), "balances": rows}

    def _balance(self, asset: str, balance: SimBalance) -> Document:
        if self.aliases:
            return {
                "currency": asset,
                "free": self._number(balance.available),
                "used": self._number(balance.locked),
            }
        return balance_document(asset, balance)


def balance_document(asset: str, balance: SimBalance) -> Document:
    return {
        "asset": asset,
        "available": str(balance.available),
        "locked": str(balance.locked),
        "total": str(balance.available + balance.locked),
    }


class CustodianDocuments:
    """Client accounts, master and segregated balances, and pending settlements of one custodian."""

    _PATH = re.compile(
        r"/api/v1/(?:accounts(?:/(?P<client>[^/]+)/(?P<what>master-balance|segregated-balances))?"
        r"|(?P<stl>settlements)|(?P<batch>master-balances|segregated-balances))"
    )

    def __init__(self, world: SandboxWorld, name: str) -> None:
        self.world, self.name = world, name

    def route(self, path: str, query: Mapping[str, list[str]]) -> Route:
        match = self._PATH.fullmatch(path)
        if not match:
            raise NotFound(path)
        if match["stl"]:
            status = query.get("status", ["PENDING"])[0]
            return Route("settlements", lambda: self.settlements(status))
        if batch := match["batch"]:
            ids = query.get("client_id", [])
            if batch == "master-balances":
                return Route("master-balance", batched(ids, "client_id", self.master_balance, self.world.clock))
            return Route("segregated-balances", batched(ids, "client_id", self.segregated_balances, self.world.clock))
        client, what = match["client"], match["what"]
        if client is None:
            return Route("accounts", self.accounts)
        if what == "master-balance":
            return Route("master-balance", lambda: self.master_balance(client))
        return Route("segregated-balances", lambda: self.segregated_balances(client))

    def accounts(self) -> Document:
        with self.world.locked():
            clients = self.world.custodians[self.name].values()
            return {"accounts": [{"client_id": c.client_id, "name": c.name, "status": c.status} for c in clients]}

    def master_balance(self, client_id: str) -> Document:
        with self.world.locked():
            client = _found(lambda: self.world.client(self.name, client_id))
            return {
                "client_id": client_id,
                "as_of": rfc3339(self.world.clock()),
                "balances": [balance_document(a, b) for a, b in sorted(client.master.items())],
            }

    def segregated_balances(self, client_id: str) -> Document:
        with self.world.locked():
            client = _found(lambda: self.world.client(self.name, client_id))
            accounts = [
                {
                    "venue": venue,
                    "account_id": account_id,
                    "balances": [balance_document(a, b) for a, b in sorted(balances.items())],
                }
                for (venue, account_id), balances in sorted(client.segregated.items())
            ]
            return {"client_id": client_id, "as_of": rfc3339(self.world.clock()), "accounts": accounts}

    def settlements(self, status: str) -> Document:
        with self.world.locked():
            rows = [
                {
                    "settlement_id": s.settlement_id,
                    "account_id": s.account_id,
                    "asset": s.asset,
                    "quantity": str(s.quantity),
                    "status": s.status,
                    "initiated_at": rfc3339(s.initiated_at),
                    "expected_settlement_date": s.expected_settlement_date.isoformat(),
                }
                for s in self.world.settlements[self.name]
                if s.status == status
            ]
            return {"as_of": rfc3339(self.world.clock()), "settlements": rows}


def _found(lookup: Callable[[], T]) -> T:
    try:
        return lookup()
    except UnknownEntity as exc:
        raise NotFound(str(exc)) from None
