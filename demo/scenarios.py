"""The trading scenarios, shared by `risk-monitor demo` and tests/e2e/test_scenarios.py.

Each scenario changes the sandbox only through its HTTP control surface, checks the monitor only
through gRPC (alerts, compliance, risk, StreamTicks) and HTTP (/metrics, health), and puts the sandbox
back the way it found it, waiting for its alerts to resolve, so scenarios don't leak into each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from riskmonitor.v1 import risk_monitor_pb2 as pb

from demo.control import SandboxControl
from demo.probe import SEVERITY, MonitorProbe, SeenEvent, wait_until

RAISE_TIMEOUT_S = 45.0  # generous: 2 shared cores; the latency bound is checked separately
RESOLVE_TIMEOUT_S = 90.0  # a venue coming back waits out its circuit breaker
STALE_AFTER_S = Decimal(6)  # demo/limits.toml: stale-data critical
# The price collector keeps writing stream-cached prices for price_refresh_intervals (3) × 1 s before it
# polls GetPrice and finds the venue down, so stale prices show up to 3 s late by design.
STALE_GRACE_S = 3.0
CUSTODIAN, CLIENT = "custodian-a", "client-1"


@dataclass(frozen=True)
class Expected:
    """An alert a scenario must raise: limit type, account key ("" for firm-wide), severity it reaches."""

    limit_type: str
    account: str
    severity: str
    subject: str = ""  # a part of the alert's subject, when type and account don't single it out

    def matches(self, alert: pb.Alert) -> bool:
        return alert.limit_type == self.limit_type and alert.account == self.account and self.subject in alert.subject

    def __str__(self) -> str:
        where = self.account or "firm"
        what = f"{self.limit_type}[{self.subject}]" if self.subject else self.limit_type
        return f"{what} {where} {self.severity}"


@dataclass
class Outcome:
    name: str
    title: str
    expected: str  # the alert(s) it should raise, for the summary
    raised: bool = False
    latency_s: float | None = None  # scheduled: alert opened − data time; stale: past the limit; ticks: processing
    seen_after_s: float | None = None  # control action -> alert delivered on WatchAlerts
    bound_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Context:
    """What a scenario may use: the sandbox's control surface and the monitor's public interfaces."""

    control: SandboxControl
    probe: MonitorProbe
    accounts: Sequence[str]  # monitor account keys, "<exchange>:<account id>"
    evaluation_interval_s: float
    say: Callable[[str], None] = lambda _text: None  # progress for the live view / log


def _split(account: str) -> tuple[str, str]:
    venue, account_id = account.split(":", 1)
    return venue, account_id


def _rank(severity: str) -> int:
    return {"warning": 1, "critical": 2}[severity]


class Window:
    """The alerts opened since `start()` as WatchAlerts delivered them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mark = ctx.probe.follower.count()
        self.began = datetime.now(UTC)
        self._alerts: dict[int, pb.Alert] = {}

    def events(self) -> list[SeenEvent]:
        return [e for e in self.ctx.probe.follower.since(self.mark) if not e.replayed]

    def opened(self) -> dict[int, pb.Alert]:
        for seen in self.events():
            if seen.event.event_type == "opened" and seen.event.alert_id not in self._alerts:
                self._alerts[seen.event.alert_id] = self.ctx.probe.alert(seen.event.alert_id)
        return self._alerts

    def reached(self, alert_id: int, severity: str) -> SeenEvent | None:
        """The first event of the alert at or above `severity`."""
        for seen in self.events():
            if (
                seen.event.alert_id == alert_id
                and seen.event.severity
                and _rank(SEVERITY[seen.event.severity]) >= _rank(severity)
            ):
                return seen
        return None

    def resolved(self, alert_id: int) -> bool:
        return any(e.event.alert_id == alert_id and e.event.event_type == "resolved" for e in self.events())

    def find(self, expected: Expected) -> tuple[pb.Alert, SeenEvent] | None:
        for alert_id, alert in self.opened().items():
            if expected.matches(alert):
                seen = self.reached(alert_id, expected.severity)
                if seen is not None:
                    return alert, seen
        return None


@dataclass
class Scenario:
    """Act on the sandbox, expect alerts, optionally acknowledge them, restore, expect them resolved."""

    name: str
    title: str
    act: Callable[[Context], object]
    restore: Callable[[Context], object]
    expected: Callable[[Context], Sequence[Expected]]
    acknowledge: bool = False
    stale_after_s: Decimal | None = None  # stale-data scenarios: the limit the data must age past first
    evaluation_interval_s: float = 1.0  # set by run()
    during: Callable[[Context], list[str]] | None = None  # extra checks while the alerts are active

    def describe(self, ctx: Context) -> str:
        return ", ".join(str(e) for e in self.expected(ctx)) or "none"

    def run(self, ctx: Context) -> Outcome:
        expected = list(self.expected(ctx))
        outcome = Outcome(self.name, self.title, self.describe(ctx), bound_s=2 * ctx.evaluation_interval_s)
        self.evaluation_interval_s = ctx.evaluation_interval_s
        window = Window(ctx)
        acted_at = datetime.now(UTC)
        ctx.say(f"{self.title}: acting")
        try:
            self.act(ctx)
            ctx.say(f"{self.title}: waiting for {outcome.expected}")
            found = self._wait_for(window, expected)
            outcome.raised = len(found) == len(expected)
            for e in expected:
                if e not in found:
                    outcome.problems.append(f"not raised: {e}")
            self._latency(outcome, list(found.values()), acted_at)
            if self.during is not None and outcome.raised:
                outcome.problems.extend(self.during(ctx))
            if self.acknowledge:
                outcome.problems.extend(self._acknowledge(ctx, window, [a for a, _ in found.values()]))
        finally:
            ctx.say(f"{self.title}: restoring the sandbox")
            self.restore(ctx)
        ctx.say(f"{self.title}: waiting for the alerts to resolve")
        outcome.problems.extend(_settle(window, expected))
        return outcome

    def _wait_for(self, window: Window, expected: list[Expected]) -> dict[Expected, tuple[pb.Alert, SeenEvent]]:
        found: dict[Expected, tuple[pb.Alert, SeenEvent]] = {}

        def all_found() -> bool:
            for e in expected:
                if e not in found and (hit := window.find(e)) is not None:
                    found[e] = hit
            return len(found) == len(expected)

        wait_until(all_found, RAISE_TIMEOUT_S)
        return found

    def _latency(self, outcome: Outcome, hits: list[tuple[pb.Alert, SeenEvent]], acted_at: datetime) -> None:
        if not hits:
            return
        outcome.seen_after_s = max((seen.received_at - acted_at).total_seconds() for _, seen in hits)
        if self.stale_after_s is None:
            outcome.latency_s = max(alert.detection_latency_seconds for alert, _ in hits)
        else:
            # A stale-data alert can only come once the data is older than the limit: count from there. The
            # last good poll can precede the outage by up to one interval, hence the floor at 0.
            outcome.latency_s = max(0.0, outcome.seen_after_s - float(self.stale_after_s))
            outcome.bound_s = 2 * self.evaluation_interval_s + STALE_GRACE_S
        assert outcome.bound_s is not None
        if outcome.latency_s > outcome.bound_s:
            outcome.problems.append(f"detected after {outcome.latency_s:.2f}s > {outcome.bound_s:.2f}s")

    def _acknowledge(self, ctx: Context, window: Window, alerts: list[pb.Alert]) -> list[str]:
        problems = []
        for alert in alerts:
            after = ctx.probe.acknowledge(alert.id, f"demo: {self.title}")
            if after.state != pb.ALERT_STATE_ACKNOWLEDGED or after.acknowledged_by != "demo":
                problems.append(f"acknowledge of alert {alert.id} left it in state {after.state}")

        def seen_acks() -> bool:
            acked = {e.event.alert_id for e in window.events() if e.event.event_type == "acknowledged"}
            return {a.id for a in alerts} <= acked

        if not wait_until(seen_acks, 15.0):
            problems.append("acknowledged events not delivered on WatchAlerts")
        return problems


def _settle(window: Window, expected: list[Expected]) -> list[str]:
    """After the restore: every alert of the window resolved, and none that wasn't expected."""
    problems = []
    if not wait_until(lambda: all(window.resolved(i) for i in window.opened()), RESOLVE_TIMEOUT_S, 0.5):
        stuck = [f"{a.limit_name} {a.account or 'firm'}" for i, a in window.opened().items() if not window.resolved(i)]
        problems.append("not resolved after restore: " + ", ".join(stuck))
    for alert in window.opened().values():
        if not any(e.matches(alert) for e in expected):
            problems.append(f"unexpected alert: {alert.limit_type} {alert.account or 'firm'} ({alert.subject})")
    return problems


# --- 1. normal trading --------------------------------------------------------------------------------


NORMAL_TRADING_S = 8.0


def _positions(ctx: Context) -> dict[tuple[str, str], str]:
    return {(key, p.symbol): p.quantity for key in ctx.accounts for p in ctx.probe.risk(key).positions}


class NormalTrading:
    name = "normal-trading"
    title = "Normal trading"

    def describe(self, ctx: Context) -> str:
        return "none (compliant)"

    def run(self, ctx: Context) -> Outcome:
        outcome = Outcome(self.name, self.title, self.describe(ctx), raised=False)
        window = Window(ctx)
        before = _positions(ctx)
        ctx.say(f"{self.title}: watching {NORMAL_TRADING_S:.0f}s of random trading")
        seen_moves = wait_until(lambda: _positions(ctx) != before, NORMAL_TRADING_S * 4, 1.0)
        time.sleep(max(0.0, NORMAL_TRADING_S - (datetime.now(UTC) - window.began).total_seconds()))
        if not seen_moves:
            outcome.problems.append("positions did not move")
        for alert in window.opened().values():
            outcome.problems.append(f"unexpected alert: {alert.limit_type} {alert.account or 'firm'}")
        statuses = ctx.probe.compliance()
        for key in ctx.accounts:
            status = statuses.get(key)
            if status is None or status.state != pb.COMPLIANCE_STATE_COMPLIANT:
                outcome.problems.append(f"{key} is not compliant")
        return outcome


# --- 2–8: scheduled path ------------------------------------------------------------------------------

FAT_FINGER_ACCOUNT = "exchange-b:exchange-b-acc-2"
FAT_FINGER_BTC = Decimal(50)  # 3M notional: past 25 BTC and 2.5M critical
_fat_finger_price: dict[str, Decimal] = {}


def _fat_finger(ctx: Context) -> None:
    venue, account_id = _split(FAT_FINGER_ACCOUNT)
    price = ctx.control.price("BTC-USDT")
    _fat_finger_price["BTC-USDT"] = price
    ctx.control.post(
        "trade", venue=venue, account_id=account_id, symbol="BTC-USDT", quantity=FAT_FINGER_BTC, price=price
    )


def _unwind_fat_finger(ctx: Context) -> None:
    venue, account_id = _split(FAT_FINGER_ACCOUNT)
    price = _fat_finger_price.pop("BTC-USDT", None)
    ctx.control.post(
        "trade", venue=venue, account_id=account_id, symbol="BTC-USDT", quantity=-FAT_FINGER_BTC, price=price
    )


def _compliance_breach(*accounts: str) -> Callable[[Context], list[str]]:
    def check(ctx: Context) -> list[str]:
        def breached() -> bool:
            statuses = ctx.probe.compliance()
            return all(a in statuses and statuses[a].state == pb.COMPLIANCE_STATE_BREACH for a in accounts)

        return [] if wait_until(breached, 10.0) else [f"compliance of {', '.join(accounts)} is not 'breach'"]

    return check


CRASH_PERCENT = Decimal(-40)
CRASH_SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
_before_crash: dict[str, Decimal] = {}


def _crash(ctx: Context) -> None:
    # No background fills while prices are 40 % off: a fill at a crashed price is a real loss once prices come
    # back, which would carry the crash into the next scenario's daily-loss and drawdown figures.
    ctx.control.post("trading", state="paused")
    prices = ctx.control.state()["prices"]
    for symbol in CRASH_SYMBOLS:
        _before_crash[symbol] = Decimal(prices[symbol])
        ctx.control.post("shock", percent=CRASH_PERCENT, symbol=symbol)


def _recover_crash(ctx: Context) -> None:
    for symbol, price in list(_before_crash.items()):
        ctx.control.post("price", symbol=symbol, price=price)
    _before_crash.clear()
    ctx.control.post("trading", state="on")


DEPEG_PRICE = Decimal("0.985")
MISMATCH_ACCOUNT = "exchange-a:exchange-a-acc-2"
MISMATCH_USDT = Decimal(700_000)  # the exchange holds ≈ 1M: a 300k hole
ALIGNED_USDT = Decimal(1_000_000)


def _custody(ctx: Context, available: Decimal) -> None:
    venue, account_id = _split(MISMATCH_ACCOUNT)
    ctx.control.post(
        "custody-balance",
        custodian=CUSTODIAN,
        client_id=CLIENT,
        asset="USDT",
        available=available,
        venue=venue,
        account_id=account_id,
    )


SETTLEMENT_ACCOUNT = "exchange-b:exchange-b-acc-1"
_settlements: list[str] = []


def _late_settlement(ctx: Context) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    created = ctx.control.post(
        "settlement",
        custodian=CUSTODIAN,
        account_id=_split(SETTLEMENT_ACCOUNT)[1],
        asset="BTC",
        quantity=Decimal(5),  # ≈ 300k: past the 100k critical
        expected_settlement_date=yesterday,
    )
    _settlements.append(created["settlement_id"])


def _settle_all(ctx: Context) -> None:
    while _settlements:
        ctx.control.post("settle", custodian=CUSTODIAN, settlement_id=_settlements.pop())


OUTAGE_VENUE = "exchange-b"
LAST_EVALUATION = "risk_monitor_evaluation_last_success_timestamp_seconds"


def _others_still_evaluated(ctx: Context) -> list[str]:
    """During the outage: exchange-a's data stays fresh, evaluation passes keep completing (metrics), and
    the monitor stays healthy."""
    problems = []
    samples = ctx.probe.metrics()
    for kind in ("positions", "balances"):
        fresh = samples.get(("risk_data_staleness_seconds", frozenset({("venue", "exchange-a"), ("kind", kind)})))
        stale = samples.get(("risk_data_staleness_seconds", frozenset({("venue", OUTAGE_VENUE), ("kind", kind)})))
        if fresh is None or fresh >= float(STALE_AFTER_S):
            problems.append(f"exchange-a {kind} went stale too ({fresh})")
        if stale is None or stale < float(STALE_AFTER_S):
            problems.append(f"{OUTAGE_VENUE} {kind} staleness not exported past the limit ({stale})")
    last_pass: tuple[str, frozenset[tuple[str, str]]] = (LAST_EVALUATION, frozenset())
    before = samples.get(last_pass, 0.0)
    if not wait_until(lambda: ctx.probe.metrics().get(last_pass, 0.0) >= before + 2 * ctx.evaluation_interval_s, 15.0):
        problems.append("evaluation stopped during the outage")
    if not ctx.probe.healthy():
        problems.append("the monitor's health check failed during the outage")
    return problems


def _stale(venue: str, kind: str) -> Expected:
    return Expected("stale_data", "", "critical", f"venue={venue};kind={kind}")


# --- 9. tick path -------------------------------------------------------------------------------------

TICK_ACCOUNT = "exchange-a:exchange-a-acc-3"
TICK_BTC = Decimal(45)  # 2.7M: past 25 BTC and 2.5M critical


class TickPath:
    """StreamTicks answers the breach in the same response; the scheduled path then sees the same position
    (the sandbox reflects it) and finds the alert already open: one alert per limit, not two."""

    name = "tick-path"
    title = "Tick path"
    limit_types = ("position_quantity", "position_notional")

    def describe(self, ctx: Context) -> str:
        return ", ".join(f"{t} {TICK_ACCOUNT} critical" for t in self.limit_types) + " (in the tick response)"

    def _tick(self, ctx: Context, batch_id: int, quantity: Decimal, avg: Decimal) -> pb.TickBatchResult:
        update = pb.PositionUpdate(
            account=TICK_ACCOUNT, symbol="BTC-USDT", quantity=str(quantity), avg_price=str(avg), kind="spot"
        )
        batch = pb.TickBatch(batch_id=batch_id, ticks=[pb.Tick(position=update)])
        return ctx.probe.ticks([batch])[0]

    def run(self, ctx: Context) -> Outcome:
        outcome = Outcome(self.name, self.title, self.describe(ctx), bound_s=2 * ctx.evaluation_interval_s)
        venue, account_id = _split(TICK_ACCOUNT)
        price = ctx.control.price("BTC-USDT")
        window = Window(ctx)
        acted_at = datetime.now(UTC)
        ctx.say(f"{self.title}: a {TICK_BTC} BTC fill on {TICK_ACCOUNT}, at the venue and on StreamTicks")
        try:
            # The venue books the fill and the trading system streams it at once; the venue poll follows.
            ctx.control.post(
                "position", venue=venue, account_id=account_id, symbol="BTC-USDT", quantity=TICK_BTC, avg_price=price
            )
            result = self._tick(ctx, 1, TICK_BTC, price)
            outcome.latency_s = result.processing_time.ToTimedelta().total_seconds()
            outcome.seen_after_s = (datetime.now(UTC) - acted_at).total_seconds()
            levels = {(c.limit_type, c.account): c.level for c in result.changes}
            outcome.raised = all(levels.get((t, TICK_ACCOUNT)) == pb.LEVEL_CRITICAL for t in self.limit_types)
            if not outcome.raised:
                outcome.problems.append(f"tick response changes: {sorted(levels)}")
            outcome.problems.extend(self._one_alert_each(ctx, window))
        finally:
            # Closed on both sides: a known state, unlike "what it was", which a read of the monitor can't give
            # exactly while the account keeps trading.
            ctx.say(f"{self.title}: closing the position")
            ctx.control.post("position", venue=venue, account_id=account_id, symbol="BTC-USDT", quantity=0, avg_price=0)
            self._tick(ctx, 2, Decimal(0), Decimal(0))
        ctx.say(f"{self.title}: waiting for the alerts to resolve")
        outcome.problems.extend(_settle(window, [Expected(t, TICK_ACCOUNT, "critical") for t in self.limit_types]))
        return outcome

    def _one_alert_each(self, ctx: Context, window: Window) -> list[str]:
        """Give the scheduled path time to collect and evaluate the same position, then count alerts."""
        ctx.say(f"{self.title}: letting the scheduled path see the same position")
        time.sleep(1.0 + 4 * ctx.evaluation_interval_s)
        problems = []
        for limit_type in self.limit_types:
            opened = [a for a in window.opened().values() if a.limit_type == limit_type and a.account == TICK_ACCOUNT]
            if len(opened) != 1:
                ids = {a.id for a in opened}
                story = [f"{e.event.event_type} by {e.event.actor}" for e in window.events() if e.event.alert_id in ids]
                problems.append(f"{limit_type}: {len(opened)} alerts opened, expected exactly one ({', '.join(story)})")
            elif opened[0].state == pb.ALERT_STATE_RESOLVED or window.resolved(opened[0].id):
                problems.append(f"{limit_type}: the scheduled path resolved the tick path's alert")
        return problems


# --- the list -----------------------------------------------------------------------------------------


def _account_limits(*types: str, account: str) -> Callable[[Context], list[Expected]]:
    return lambda _ctx: [Expected(t, account, "critical") for t in types]


SCENARIOS: tuple[Scenario | NormalTrading | TickPath, ...] = (
    NormalTrading(),
    Scenario(
        "fat-finger",
        "Fat-finger fill",
        act=_fat_finger,
        restore=_unwind_fat_finger,
        expected=_account_limits("position_quantity", "position_notional", account=FAT_FINGER_ACCOUNT),
        acknowledge=True,
        during=_compliance_breach(FAT_FINGER_ACCOUNT),
    ),
    Scenario(
        "market-crash",
        "Market crash",
        act=_crash,
        restore=_recover_crash,
        expected=lambda ctx: [Expected(t, a, "critical") for a in ctx.accounts for t in ("daily_loss", "drawdown")],
        during=lambda ctx: _compliance_breach(*ctx.accounts)(ctx),
    ),
    Scenario(
        "stablecoin-depeg",
        "Stablecoin depeg",
        act=lambda ctx: ctx.control.post("price", symbol="USDT-USD", price=DEPEG_PRICE),
        restore=lambda ctx: ctx.control.post("price", symbol="USDT-USD", price=Decimal(1)),
        expected=lambda _ctx: [Expected("price_deviation", "", "critical", "symbol=USDT-USD")],
    ),
    Scenario(
        "custodian-mismatch",
        "Custodian mismatch",
        act=lambda ctx: _custody(ctx, MISMATCH_USDT),
        restore=lambda ctx: _custody(ctx, ALIGNED_USDT),
        expected=lambda _ctx: [Expected("reconciliation", MISMATCH_ACCOUNT, "critical", "asset=USDT")],
        acknowledge=True,
        during=_compliance_breach(MISMATCH_ACCOUNT),
    ),
    Scenario(
        "settlement-delay",
        "Settlement delay",
        act=_late_settlement,
        restore=_settle_all,
        expected=lambda _ctx: [Expected("unsettled_exposure", "", "critical")],
        acknowledge=True,
    ),
    Scenario(
        "stale-feed",
        "Stale market data",
        act=lambda ctx: ctx.control.post("down", venue="market-data"),
        restore=lambda ctx: ctx.control.post("up", venue="market-data"),
        expected=lambda _ctx: [_stale("market-data", "prices")],
        stale_after_s=STALE_AFTER_S,
    ),
    Scenario(
        "venue-outage",
        "Venue outage",
        act=lambda ctx: ctx.control.post("error", venue=OUTAGE_VENUE, status=500),
        restore=lambda ctx: ctx.control.post("clear", venue=OUTAGE_VENUE),
        expected=lambda _ctx: [_stale(OUTAGE_VENUE, "positions"), _stale(OUTAGE_VENUE, "balances")],
        stale_after_s=STALE_AFTER_S,
        during=_others_still_evaluated,
    ),
    TickPath(),
)

NAMES = tuple(s.name for s in SCENARIOS)


def by_name(name: str) -> Scenario | NormalTrading | TickPath:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(name)
