"""Command line: ``python -m engagehub demo [options]`` (``--help`` for the options)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command named on the command line; returns the exit code."""
    from . import demo

    parser = argparse.ArgumentParser(prog="python -m engagehub")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser(
        "demo",
        help="a simulated day of a Discord server through the pipeline into SQLite/PostgreSQL",
        description=demo.DESCRIPTION,
    )
    demo.add_arguments(demo_parser)
    args = parser.parse_args(argv)
    return demo.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
