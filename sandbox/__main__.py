"""`python -m sandbox` (or `risk-monitor sandbox`): run the sandbox venues until interrupted."""

from __future__ import annotations

import argparse
import sys

from sandbox.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
