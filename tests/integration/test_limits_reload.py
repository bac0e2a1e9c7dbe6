"""Limits file -> versioned rows, hot reload without restart, invalid files rejected, "in force at T"."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from services.evaluation import run_evaluation
from services.limits_reloader import APPLIED, REJECTED, UNCHANGED, LimitsReloader
from services.limits_store import limits_in_force
from tests.integration.snapshots import Venues

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
LEVERAGE = """
[[limit]]
name = "acct-leverage"
type = "leverage"
per_account = true
warn = "{warn}"
critical = "{critical}"

[[limit]]
name = "firm-gross"
type = "gross_notional"
critical = "1000000"
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def write(path: Path, content: str, bump: int) -> None:
    path.write_text(content)
    # Same-second rewrites can keep the mtime on coarse file systems; the reloader checks mtime first.
    stamp = 1_700_000_000_000_000_000 + bump * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def rejected_count() -> float:
    return REGISTRY.get_sample_value("risk_monitor_limits_reloads_total", {"result": "rejected"}) or 0.0


def test_a_changed_file_makes_a_new_version_that_the_next_evaluation_uses(
    fresh_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v = Venues.on(fresh_engine)
    v.venue("ex")
    v.venue("md", "market_data")
    v.prices("md", {"BTC-USD": "10000"}, T0)
    v.positions("ex", "acct", {"BTC-USD-SWAP": ("1", "10000")}, T0, collected=T0)
    v.balances("ex", "acct", {"USD": "2500"}, T0, collected=T0)  # leverage 4
    path = tmp_path / "limits.toml"
    write(path, LEVERAGE.format(warn="3", critical="5"), 1)
    clock = Clock()
    reloader = LimitsReloader(fresh_engine, str(path), clock=clock, changed_by="file:limits.toml@test")

    assert reloader.reload() == APPLIED
    assert reloader.reload() == UNCHANGED
    first = run_evaluation(fresh_engine, reloader.limits(), T0 + timedelta(seconds=1))
    [opened] = first.events
    assert (opened.alert.limit_version, opened.alert.threshold) == (1, Decimal(3))

    clock.now = T0 + timedelta(minutes=5)
    write(path, LEVERAGE.format(warn="4.5", critical="6"), 2)
    assert reloader.reload() == APPLIED
    second = run_evaluation(fresh_engine, reloader.limits(), clock.now + timedelta(seconds=1))
    # 4 is now below the new warn (and clear) of 4.5: the alert resolves under version 2
    assert [e.event_type.value for e in second.events] == ["resolved"]
    with fresh_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, version, warn, valid_from, valid_to, changed_by FROM limits ORDER BY name, version")
        ).all()
        before = {limit.name: limit for limit in limits_in_force(conn, T0 + timedelta(minutes=1))}
        after = {limit.name: limit for limit in limits_in_force(conn, clock.now)}
        ahead = limits_in_force(conn, T0 - timedelta(seconds=1))
    assert [(r.name, r.version, r.warn, r.valid_from, r.valid_to) for r in rows] == [
        ("acct-leverage", 1, Decimal(3), T0, clock.now),
        ("acct-leverage", 2, Decimal("4.5"), clock.now, None),
        ("firm-gross", 1, None, T0, None),  # unchanged: untouched
    ]
    assert {r.changed_by for r in rows} == {"file:limits.toml@test"}
    assert (before["acct-leverage"].version, before["acct-leverage"].warn) == (1, Decimal(3))
    assert (after["acct-leverage"].version, after["acct-leverage"].warn) == (2, Decimal("4.5"))
    assert after["firm-gross"].version == 1
    assert ahead == []

    # an invalid file is rejected with file:line: reason, and version 2 stays in force
    clock.now = T0 + timedelta(minutes=10)
    broken = LEVERAGE.format(warn="4.5", critical="6").replace('type = "gross_notional"', 'type = "gross_notionl"')
    write(path, broken, 3)
    rejected_before = rejected_count()
    with caplog.at_level(logging.ERROR, logger="services.limits_reloader"):
        assert reloader.reload() == REJECTED
    line = broken.splitlines().index('type = "gross_notionl"') + 1
    assert f"{path}:{line}: limit 'firm-gross' has unknown type 'gross_notionl'" in caplog.text
    assert reloader.last_error is not None
    assert reloader.last_error.startswith(f"{path}:{line}:")
    assert rejected_count() == rejected_before + 1
    assert [(limit.name, limit.version) for limit in reloader.limits()] == [("acct-leverage", 2), ("firm-gross", 1)]
    assert reloader.reload() == UNCHANGED  # reported once, not at every check
    with fresh_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM limits")) == 3

    # a removed limit is closed
    clock.now = T0 + timedelta(minutes=15)
    write(path, LEVERAGE.format(warn="4.5", critical="6").split('[[limit]]\nname = "firm-gross"')[0], 4)
    assert reloader.reload() == APPLIED
    with fresh_engine.connect() as conn:
        closed = conn.scalar(text("SELECT valid_to FROM limits WHERE name = 'firm-gross'"))
    assert closed == clock.now
    assert [limit.name for limit in reloader.limits()] == ["acct-leverage"]


def test_a_process_starting_with_a_broken_file_keeps_the_versions_in_the_database(
    fresh_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "limits.toml"
    write(path, LEVERAGE.format(warn="3", critical="5"), 1)
    assert LimitsReloader(fresh_engine, str(path), clock=Clock()).reload() == APPLIED
    write(path, "[[limit]]\nname = 'x'\n", 2)  # no type
    restarted = LimitsReloader(fresh_engine, str(path), clock=Clock())
    assert restarted.reload() == REJECTED
    assert sorted(limit.name for limit in restarted.limits()) == ["acct-leverage", "firm-gross"]


def test_no_limits_file_means_no_limits(fresh_engine: Engine) -> None:
    reloader = LimitsReloader(fresh_engine, "", clock=Clock())
    assert reloader.reload() == UNCHANGED
    assert reloader.limits() == ()
