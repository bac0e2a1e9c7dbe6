"""`python -m sandbox`: run the sandbox venues until interrupted; prints their URLs as one JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.runner import start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--seed", type=int, help="random seed for prices and trading (default: config or 7)")
    parser.add_argument("--config", type=Path, help="JSON or TOML file with SandboxConfig fields")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--control-port", type=int, default=0, help="control HTTP port (default: any free)")
    parser.add_argument("--step-interval", type=float, help="seconds between automatic steps (default: manual)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr)

    config = SandboxConfig.from_file(args.config) if args.config else SandboxConfig()
    overrides = {"seed": args.seed, "host": args.host, "step_interval": args.step_interval}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})

    finished = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: finished.set())
    signal.signal(signal.SIGINT, lambda *_: finished.set())
    with start(config, control_port=args.control_port) as sandbox:
        print(json.dumps(sandbox.describe()), flush=True)  # a parent process reads this line
        while not finished.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
