"""Incremental price table: apply a batch of prices to a `PriceTable` without re-reading every symbol.

`PricePlan.update(table, prices)` returns exactly `price_table([*table.latest.values(), *prices])` (same
values, same key order) plus which pairs' USD marks and which assets' USD prices changed. While no new pair
appears, which assets get a USD price in which round of `price_table` (and through which candidate
quotes) does not depend on prices, only on the set of pairs: the plan records it once and a batch
recomputes only the bases whose candidates moved, in round order, following the assets whose USD price
changed. A new pair rebuilds the table and the plan (rare). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from models.risk.exposure import USD, PriceTable, price_table
from models.risk.values import Price, canonical_symbol, split_symbol


@dataclass(frozen=True, slots=True)
class PriceMoves:
    table: PriceTable
    ticked: frozenset[str]  # canonical pairs of every price in the batch (accepted or older than the table's)
    pairs: frozenset[str]  # canonical pairs whose USD mark per unit (`mark_usd`) changed in value or appeared
    assets: frozenset[str]  # assets whose USD price changed in value or appeared (as `affected_accounts` sees it)
    rebuilt: bool  # a new pair appeared: the table was rebuilt (and `pairs`/`assets` compare old and new)


@dataclass(slots=True)
class PricePlan:
    """The USD-resolution structure of one set of pairs (see the module docstring)."""

    keys: frozenset[str]
    rounds: dict[str, int]  # base -> round in which `price_table` found its USD price (1, 2, ...)
    candidates: dict[str, list[tuple[str, str]]]  # base -> [(quote, pair key)] reachable in its round, in order
    by_key: dict[str, list[str]] = field(default_factory=dict)  # pair key -> bases it is a candidate of
    by_quote: dict[str, list[str]] = field(default_factory=dict)  # asset -> bases with it as candidate quote
    marks_by_quote: dict[str, list[str]] = field(default_factory=dict)  # quote -> pair keys in mark_usd

    @staticmethod
    def of(table: PriceTable) -> PricePlan:
        by_base: dict[str, list[tuple[str, str]]] = {}
        for key in table.latest:
            base, quote = split_symbol(key)
            by_base.setdefault(base, []).append((quote, key))
        reached = {USD}
        rounds: dict[str, int] = {}
        candidates: dict[str, list[tuple[str, str]]] = {}
        number = 0
        while True:  # the same rounds as price_table: a base is found from quotes reached in earlier rounds
            number += 1
            found = {}
            for base, quotes in by_base.items():
                if base in reached or base in found:
                    continue
                reachable = [(q, k) for q, k in quotes if q in reached]
                if reachable:
                    found[base] = reachable
            if not found:
                break
            for base, reachable in found.items():
                rounds[base] = number
                candidates[base] = reachable
            reached |= found.keys()
        plan = PricePlan(frozenset(table.latest), rounds, candidates)
        for base, reachable in candidates.items():
            for quote, key in reachable:
                plan.by_key.setdefault(key, []).append(base)
                plan.by_quote.setdefault(quote, []).append(base)
        for key in table.mark_usd:
            plan.marks_by_quote.setdefault(key.partition("-")[2], []).append(key)
        return plan

    def update(self, table: PriceTable, prices: Iterable[Price]) -> tuple[PricePlan, PriceMoves]:
        latest = dict(table.latest)
        pair_prices = dict(table.pair_prices)
        touched: set[str] = set()
        ticked: set[str] = set()
        for price in prices:
            key = canonical_symbol(price.symbol)
            ticked.add(key)
            seen = latest.get(key)
            if seen is None or price.observed_at >= seen.observed_at:
                latest[key] = price
                pair_prices[key] = price.price
                touched.add(key)
        if not touched <= self.keys:
            return self._rebuilt(table, list(latest.values()), frozenset(ticked))
        usd, moved_assets, respelled = self._usd(table, latest, touched)
        mark_usd = dict(table.mark_usd)
        moved_pairs: set[str] = set()
        for key in touched | {k for a in respelled for k in self.marks_by_quote.get(a, ())}:
            quote = key.partition("-")[2]
            if quote in usd:
                value = pair_prices[key] * usd[quote]
                old_mark = mark_usd.get(key)
                if old_mark is None or value != old_mark:
                    mark_usd[key] = value
                    moved_pairs.add(key)
                elif str(value) != str(old_mark):  # the same number with another exponent: keep the new one
                    mark_usd[key] = value
        new = PriceTable(pair_prices=pair_prices, usd=usd, latest=latest, mark_usd=mark_usd)
        return self, PriceMoves(new, frozenset(ticked), frozenset(moved_pairs), frozenset(moved_assets), rebuilt=False)

    def _usd(
        self, table: PriceTable, latest: Mapping[str, Price], touched: set[str]
    ) -> tuple[dict[str, Decimal], set[str], set[str]]:
        """USD prices after the touched pairs moved: the bases they are candidates of, in round order, and
        then the bases quoted in an asset whose USD price was stored anew. Returns the prices, the assets
        that moved in value, and those stored anew (moved, or the same number with another exponent)."""
        usd = dict(table.usd)
        moved: set[str] = set()
        respelled: set[str] = set()
        pending: dict[int, set[str]] = {}
        for key in touched:
            for base in self.by_key.get(key, ()):
                pending.setdefault(self.rounds[base], set()).add(base)
        while pending:
            for base in pending.pop(min(pending)):
                candidates = self.candidates[base]
                if len(candidates) == 1:  # the common case: one way to price the base
                    quote, key = candidates[0]
                else:
                    quote, key = max(candidates, key=lambda qk: (qk[0] == USD, latest[qk[1]].observed_at, qk[0]))
                value = latest[key].price * usd[quote]
                old = usd[base]
                if value != old:
                    moved.add(base)
                elif str(value) == str(old):  # Decimal equality ignores the exponent: a new one is kept too
                    continue
                usd[base] = value
                respelled.add(base)
                for dependent in self.by_quote.get(base, ()):
                    pending.setdefault(self.rounds[dependent], set()).add(dependent)
        return usd, moved, respelled

    @staticmethod
    def _rebuilt(old: PriceTable, prices: Sequence[Price], ticked: frozenset[str]) -> tuple[PricePlan, PriceMoves]:
        new = price_table(prices)
        pairs = {k for k in new.mark_usd.keys() | old.mark_usd.keys() if not _same(new.mark_usd, old.mark_usd, k)}
        assets = {a for a in new.usd.keys() | old.usd.keys() if not _same(new.usd, old.usd, a)}
        return PricePlan.of(new), PriceMoves(new, ticked, frozenset(pairs), frozenset(assets), rebuilt=True)


def _same(a: Mapping[str, Decimal], b: Mapping[str, Decimal], key: str) -> bool:
    x, y = a.get(key), b.get(key)
    return x is not None and y is not None and x == y
