"""Command line: ``python -m engagehub demo [options]`` (``--help`` for the options).

``demo`` runs the one-process demo (:mod:`engagehub.demo`), or with ``--redis URL``
the shared one (:mod:`engagehub.shared.demo`: writer processes publishing to Redis,
a reader process checking the union). The command line is the one module that
knows both: the shared demo builds on the one-process demo's parts, and the demo
package knows nothing of Redis.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import List, Optional


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--redis`` demo's options."""
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="share through Redis (redis-py): split the events over --writers processes that publish to URL, "
        "read the dashboard from another process (default: one process, no Redis)",
    )
    parser.add_argument("--writers", type=int, default=3, help="writer processes with --redis (default %(default)s)")
    parser.add_argument(
        "--namespace",
        default=None,
        help="Redis key namespace with --redis, kept after the run (default: engagehub-demo-<run>, one of the "
        "run's own, deleted at its end, so demos at the same time never share keys)",
    )


def run_demo(args: argparse.Namespace) -> int:
    """Runs the demo the options ask for; its exit status."""
    from . import demo

    if getattr(args, "redis", None):
        return _run_shared_demo(args)
    return demo.run_from_args(args)


def _run_shared_demo(args: argparse.Namespace) -> int:
    """``--redis URL``: the shared demo (:mod:`engagehub.shared.demo`)."""
    from . import demo

    try:
        from .shared import demo as shared_demo

        if args.postgres:
            raise demo.DemoError("--redis writes the rows to SQLite; drop --postgres")
        config = demo.config_from_args(args)
        run_dir = demo.new_run_dir(config.dir or demo.DEMO_DIR)
        if not config.db:  # a file of this run's own, as the one-process demo's
            config.db = str(run_dir / "engagehub-demo-shared.sqlite3")
        if args.namespace:
            return int(shared_demo.run(config, args.redis, args.writers, args.namespace))
        # Keys of this run's own (the shared demo clears its namespace first, which
        # would wipe another demo's keys at the same time), removed at the end.
        namespace = f"engagehub-demo-{run_dir.name.rsplit('-', 1)[-1]}"
        try:
            return int(shared_demo.run(config, args.redis, args.writers, namespace))
        finally:
            delete_demo_keys(args.redis, namespace)
    except Exception as exc:  # noqa: BLE001 - a bad option or an unreachable server: a message, status 2
        if not isinstance(exc, (demo.DemoError, ValueError, OSError, sqlite3.Error, ImportError)) and not type(
            exc
        ).__module__.startswith("redis"):
            raise
        print(f"engagehub demo: {exc}", file=sys.stderr)
        return 2


def delete_demo_keys(url: str, namespace: str) -> int:
    """Deletes the keys the ``--redis`` demo wrote under ``namespace`` (its
    analytics and its leaderboard); returns how many."""
    from .shared import demo as shared_demo

    client = shared_demo._client(url)
    try:
        keys = list(client.scan_iter(match="{" + namespace + "}:*"))
        keys += list(client.scan_iter(match="{" + namespace + ":leaderboard}*"))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


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
    add_shared_arguments(demo_parser)
    return run_demo(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
