"""`risk-monitor demo`, found through the `risk_monitor.commands` entry point (the monitor never imports it)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from demo.scenarios import NAMES, Context, Outcome, by_name
from demo.session import DemoSession
from demo.view import LiveView, LogView, Status, summary
from services import logs

EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds to run: scenarios not started by then are reported NOT RUN; when they finish earlier,"
        " normal trading goes on until then (default: stop after the scenarios)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"play only this scenario (repeatable); one of {', '.join(NAMES)}",
    )
    parser.add_argument("--no-ui", action="store_true", help="plain log lines instead of the live screen")
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the embedded PostgreSQL's data (in the user data dir)"
    )


def endpoints(session: DemoSession) -> list[str]:
    target = session.grpc_target
    return [
        f"gRPC      grpcurl -plaintext {target} list riskmonitor.v1.RiskMonitorService",
        f"CLI       risk-monitor alerts watch --target {target}   (also: alerts list, compliance, risk ACCOUNT)",
        f"metrics   {session.http_url}/metrics",
        f"sandbox   {session.control.url if session.control else '?'}/control/state",
        f"database  embedded PostgreSQL pid {session.postgres_pid()} in {session.data_dir}",
    ]


# Set by SIGINT/SIGTERM. The KeyboardInterrupt the handler raises can be swallowed when the signal lands
# while a finalizer or a library callback runs (seen once in CI: the demo ignored Ctrl-C); the flag is
# checked between scenarios and ends the closing wait, so the stop is never lost.
_stop_requested = threading.Event()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _stop_requested.set()
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does


def _play(
    names: Sequence[str],
    ctx: Context,
    view: LogView,
    status: Status,
    outcomes: list[Outcome],
    *,
    deadline: float | None,
) -> None:
    """Run the scenarios in order until ``deadline`` (monotonic), then keep trading until it; raises
    KeyboardInterrupt as soon as a stop was requested."""
    for name in names:
        if _stop_requested.is_set():
            raise KeyboardInterrupt
        if deadline is not None and time.monotonic() >= deadline:
            break
        scenario = by_name(name)
        view.say(f"scenario {scenario.title}: expects {scenario.describe(ctx)}")
        outcome = scenario.run(ctx)
        status.done.append(outcome)
        outcomes.append(outcome)
        view.say(f"scenario {scenario.title}: {'passed' if outcome.passed else 'FAILED'}")
    if deadline is not None and time.monotonic() < deadline:
        view.say("scenarios done: normal trading until --duration is up (Ctrl-C stops)")
        _stop_requested.wait(max(0.0, deadline - time.monotonic()))
    if _stop_requested.is_set():
        raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    logs.configure("ERROR", "text", "risk-monitor-demo", "demo")  # scenarios make venues fail on purpose
    _stop_requested.clear()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    names: Sequence[str] = args.scenario or NAMES
    ui = not args.no_ui and sys.stdout.isatty()
    began = time.monotonic()
    outcomes: list[Outcome] = []
    session = DemoSession(keep_data=args.keep_data)
    view: LogView | None = None
    interrupted = False
    try:
        print("starting the sandbox venues, the embedded PostgreSQL and the monitor...", flush=True)
        session.start()
        assert session.probe is not None
        assert session.control is not None
        status = Status(endpoints(session))
        for line in status.endpoints:
            print(line, flush=True)
        view = LiveView(session.probe, status, session.account_keys) if ui else LogView(session.probe, status)
        view.say("waiting for every account to be evaluated with no alert active")
        if not session.wait_ready():
            print("the monitor did not reach a clean baseline (accounts evaluated, no alert active)", flush=True)
            return 1
        view.start()
        ctx = Context(session.control, session.probe, session.account_keys, session.evaluation_interval_s, view.say)
        _play(names, ctx, view, status, outcomes, deadline=began + args.duration if args.duration else None)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if view is not None:
            view.stop()
        print("\nstopping: monitor, embedded PostgreSQL, sandbox...", flush=True)
        session.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    not_run = [n for n in names if n not in {o.name for o in outcomes}]
    print(summary(outcomes, not_run), flush=True)
    if interrupted:
        print("interrupted", flush=True)
        return EXIT_INTERRUPTED
    return 0 if outcomes and all(o.passed for o in outcomes) and not not_run else 1


def register(subcommands: Any) -> None:
    """Entry point `risk_monitor.commands`: add `risk-monitor demo`."""
    parser = subcommands.add_parser(
        "demo", help="sandbox venues + monitor + trading scenarios, with a live view (never production)"
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
