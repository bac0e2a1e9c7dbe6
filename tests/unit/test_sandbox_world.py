"""The sandbox world: seeded determinism, shocks and the trading arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sandbox.config import SandboxConfig
from sandbox.world import SandboxWorld, UnknownEntity


def snapshot(world: SandboxWorld) -> tuple[object, ...]:
    prices = {s: q.price for s, q in world.quotes.items()}
    positions = {
        (ex, acc): {s: p.quantity for s, p in account.positions.items()}
        for ex, accounts in world.exchanges.items()
        for acc, account in accounts.items()
    }
    return prices, positions


def test_the_same_seed_gives_the_same_prices_and_trades() -> None:
    first, second, other = (SandboxWorld(SandboxConfig(seed=s)) for s in (3, 3, 4))
    for world in (first, second, other):
        world.step(50)
    assert snapshot(first) == snapshot(second)
    assert snapshot(first) != snapshot(other)
    assert any(p for p in snapshot(first)[1].values())  # the trading flow opened positions


def test_paused_trading_walks_prices_but_makes_no_trades() -> None:
    world = SandboxWorld(SandboxConfig(seed=3))
    world.trading = False
    prices_before, positions_before = snapshot(world)
    world.step(50)
    prices_after, positions_after = snapshot(world)
    assert positions_after == positions_before
    assert prices_after != prices_before
    world.trading = True
    world.step(50)
    assert snapshot(world)[1] != positions_before


def test_a_shock_moves_one_or_every_symbol() -> None:
    world = SandboxWorld(SandboxConfig())
    world.shock(-20, "BTC-USDT")
    assert world.quote("BTC-USDT").price == Decimal(48000)
    assert world.quote("BTC-USDT").previous == Decimal(60000)
    world.shock(10)
    assert world.quote("ETH-USDT").price == Decimal(3300)
    assert world.quote("BTC-USDT").price == Decimal(52800)


def test_trades_average_in_and_realize_pnl_on_reduction() -> None:
    world = SandboxWorld(SandboxConfig())
    account = "exchange-a-acc-1"
    world.trade("exchange-a", account, "ETH-USDT", "2", "3000")
    world.trade("exchange-a", account, "ETH-USDT", "2", "3100")
    position = world.account("exchange-a", account).positions["ETH-USDT"]
    assert (position.quantity, position.avg_price) == (4, Decimal(3050))
    world.trade("exchange-a", account, "ETH-USDT", "-5", "3150")  # close 4, open 1 short
    position = world.account("exchange-a", account).positions["ETH-USDT"]
    assert (position.quantity, position.avg_price, position.realized_pnl) == (-1, Decimal(3150), Decimal(400))


def test_unknown_accounts_are_lookup_errors() -> None:
    with pytest.raises(UnknownEntity):
        SandboxWorld(SandboxConfig()).set_balance("exchange-z", "nope", "USDT", "1")
