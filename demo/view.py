"""What the demo shows: a live ANSI screen (terminal) or plain log lines (--no-ui, CI, pipes), and the summary."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TextIO

import grpc
from riskmonitor.v1 import risk_monitor_pb2 as pb

from demo.probe import COMPLIANCE, SEVERITY, MonitorProbe, SeenEvent
from demo.scenarios import Outcome

CLEAR = "\x1b[H\x1b[2J"
BOLD, RED, YELLOW, GREEN, DIM, RESET = "\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[2m", "\x1b[0m"
FEED_LINES = 12


def _money(text: str) -> str:
    try:
        return f"{Decimal(text):,.0f}"
    except (InvalidOperation, ValueError):
        return text or "-"


def _pct(text: str) -> str:
    try:
        return f"{Decimal(text) * 100:.1f}%"
    except (InvalidOperation, ValueError):
        return text or "-"


def event_line(seen: SeenEvent, latency: float | None) -> str:
    e = seen.event
    severity = SEVERITY.get(e.severity, "-")
    tail = f"  detected in {latency:.2f}s" if latency is not None and e.event_type == "opened" else ""
    when = seen.received_at.strftime("%H:%M:%S")
    return f"{when}  {e.event_type:<12} {severity:<8} {e.limit_name:<24} {e.account or 'firm':<28}{tail}"


class Status:
    """Shared between the scenario runner (writer) and the view (reader); plain attribute swaps."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = list(endpoints)
        self.phase = "starting"
        self.done: list[Outcome] = []
        self.started = time.monotonic()


class _Latencies:
    """detection_latency_seconds of each alert, fetched once (GetAlert) when its 'opened' event arrives."""

    def __init__(self, probe: MonitorProbe) -> None:
        self.probe = probe
        self._known: dict[int, float] = {}

    def of(self, seen: SeenEvent) -> float | None:
        if seen.event.event_type != "opened":
            return None
        alert_id = seen.event.alert_id
        if alert_id not in self._known:
            try:
                self._known[alert_id] = self.probe.alert(alert_id).detection_latency_seconds
            except grpc.RpcError:
                return None
        return self._known[alert_id]


class LogView:
    """One line per alert event and per scenario step: for --no-ui, CI logs and pipes."""

    def __init__(self, probe: MonitorProbe, status: Status, out: TextIO = sys.stdout) -> None:
        self.probe, self.status, self.out = probe, status, out
        self._latencies = _Latencies(probe)
        self._printed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-view", daemon=True)

    def say(self, text: str) -> None:
        self.status.phase = text
        print(f"[{time.monotonic() - self.status.started:6.1f}s] {text}", file=self.out, flush=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.refresh()

    def refresh(self) -> None:
        for seen in self.probe.follower.since(self._printed):
            self._printed += 1
            if not seen.replayed:
                print("  alert " + event_line(seen, self._latencies.of(seen)), file=self.out, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class LiveView(LogView):
    """Redraws the whole screen every second: accounts, limit utilisation, the alert feed, the scenarios."""

    def __init__(self, probe: MonitorProbe, status: Status, accounts: Sequence[str], out: TextIO = sys.stdout) -> None:
        super().__init__(probe, status, out)
        self.accounts = list(accounts)

    def say(self, text: str) -> None:
        self.status.phase = text

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                screen = self.render()
            except grpc.RpcError:
                continue  # the monitor is stopping; the summary follows
            self.out.write(CLEAR + screen)
            self.out.flush()

    def render(self) -> str:
        s = self.status
        lines = [f"{BOLD}risk-monitor demo{RESET}  {time.monotonic() - s.started:5.0f}s   {s.phase}", *s.endpoints, ""]
        statuses = self.probe.compliance()
        lines.append(
            f"{BOLD}{'account':<28} {'equity':>12} {'daily P&L':>10} {'gross':>11} {'drawdown':>8}  "
            f"{'compliance':<10}  worst limit{RESET}"
        )
        for key in self.accounts:
            lines.append(self._account_line(key, statuses.get(key)))
        lines += ["", f"{BOLD}alert feed{RESET}"]
        feed = [seen for seen in self.probe.follower.latest(FEED_LINES * 2) if not seen.replayed][-FEED_LINES:]
        for seen in feed:
            color = RED if seen.event.severity == pb.SEVERITY_CRITICAL else YELLOW
            color = GREEN if seen.event.event_type == "resolved" else color
            lines.append(f"{color}{event_line(seen, self._latencies.of(seen))}{RESET}")
        lines += [f"{DIM}(no alerts yet){RESET}"] if not feed else []
        lines += ["", f"{BOLD}scenarios{RESET}"]
        for outcome in s.done:
            mark = f"{GREEN}passed{RESET}" if outcome.passed else f"{RED}FAILED{RESET}"
            lines.append(f"  {outcome.title:<22} {mark}  {_latency(outcome)}")
        return "\n".join(lines) + "\n"

    def _account_line(self, key: str, status: pb.ComplianceStatus | None) -> str:
        try:
            r = self.probe.risk(key)
        except grpc.RpcError:
            return f"{key:<28} {DIM}(not evaluated yet){RESET}"
        worst = max(r.limits, key=lambda u: _decimal(u.utilisation), default=None)
        worst_text = f"{worst.limit_name} {_pct(worst.utilisation)}" if worst is not None else "-"
        state = COMPLIANCE.get(status.state, "?") if status is not None else "-"
        color = {"compliant": GREEN, "warning": YELLOW, "breach": RED}.get(state, "")
        return (
            f"{key:<28} {_money(r.equity_usd):>12} {_money(r.daily_pnl_usd):>10} {_money(r.gross_exposure_usd):>11} "
            f"{_pct(r.drawdown):>8}  {color}{state:<10}{RESET}  {worst_text}"
        )


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _latency(outcome: Outcome) -> str:
    if outcome.latency_s is None:
        return "-"
    return f"{outcome.latency_s:.3f}s (seen {outcome.seen_after_s or 0:.1f}s after the change)"


def summary(outcomes: Sequence[Outcome], not_run: Sequence[str] = ()) -> str:
    """The closing table: scenario, the alert it should raise, whether it was, detection latency, result."""
    rows = [("scenario", "expected alert", "raised", "detection latency", "result")]
    for o in outcomes:
        raised = "yes" if o.raised else ("-" if o.expected.startswith("none") else "NO")
        rows.append((o.name, o.expected, raised, _latency(o), "passed" if o.passed else "FAILED"))
    rows.extend((name, "-", "-", "-", "NOT RUN") for name in not_run)
    widths = [min(max(len(r[i]) for r in rows), 70) for i in range(5)]
    out = [" | ".join(cell[:70].ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "-+-".join("-" * w for w in widths))
    for o in outcomes:
        out.extend(f"  {o.name}: {p}" for p in o.problems)
    return "\n".join(out)
