"""Command line: ``python -m engagehub demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Runs the command named on the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m engagehub")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo workload")
    demo.add_argument("--users", type=int, default=200_000, help="distinct users")
    demo.add_argument("--updates", type=int, default=1_000_000, help="leaderboard updates")
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    args = parser.parse_args(argv)
    from .demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
