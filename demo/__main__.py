"""`python -m demo` (or `risk-monitor demo`): the demo, without needing the package's entry points installed."""

from __future__ import annotations

import argparse
import sys

from demo.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
