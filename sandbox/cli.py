"""The sandbox's command line. `risk-monitor sandbox` finds it through the `risk_monitor.commands`
entry point, so the monitor's own packages never import the sandbox."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.runner import start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="random seed for prices and trading (default: config or 7)")
    parser.add_argument(
        "--sandbox-config",
        "--config",
        dest="sandbox_config",
        type=Path,
        help="JSON or TOML file with SandboxConfig fields",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--control-port", type=int, default=0, help="control HTTP port (default: any free)")
    parser.add_argument("--step-interval", type=float, help="seconds between automatic steps (default: manual)")
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; print the venues' addresses as one JSON line a parent can read."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr)
    config = SandboxConfig.from_file(args.sandbox_config) if args.sandbox_config else SandboxConfig()
    overrides = {"seed": args.seed, "host": args.host, "step_interval": args.step_interval}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})

    finished = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: finished.set())
    signal.signal(signal.SIGINT, lambda *_: finished.set())
    with start(config, control_port=args.control_port) as sandbox:
        print(json.dumps(sandbox.describe()), flush=True)
        while not finished.wait(0.5):
            pass
    return 0


def register(subcommands: Any) -> None:
    """Entry point `risk_monitor.commands`: add `risk-monitor sandbox`."""
    parser = subcommands.add_parser("sandbox", help="run the sandbox venues (for tests and the demo, never production)")
    add_arguments(parser)
    parser.set_defaults(func=run)
