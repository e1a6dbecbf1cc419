"""The demo: one simulated day of a busy Discord server, end to end.

A seeded generator produces a realistic event stream (Zipf-distributed users and
channels, a daily activity curve, messages / reactions / voice joins / member
joins). The events are pushed through an :class:`EventStreamProcessor` replaying in
event time; its flush callback bulk-inserts every batch into a database (SQLite by
default, PostgreSQL with ``--postgres``) and awards leaderboard points for the
persisted events. At the end the sketches' answers are printed next to the exact SQL
answers, checked against their error bounds, and the leaderboard is saved to a
snapshot. Each run starts from an empty board and a fresh table, so runs repeat;
``--resume`` loads the snapshot first and simulates the following day, ``--append``
keeps the earlier rows (the exact answers always cover this run's rows only).

Run it with ``python -m engagehub demo`` (``--help`` lists the options). From code:
:func:`run` takes a :class:`DemoConfig` and returns a :class:`DemoResult` with every
number; :func:`main` is the command line and returns the exit status.
"""

from __future__ import annotations

from .cli import (
    DAY,
    DB_NAME,
    DESCRIPTION,
    HLL_STANDARD_ERROR,
    KIND_WEIGHTS,
    KINDS,
    NIGHT_FLOOR,
    PEAK_AT_MIN,
    POINTS,
    POSTGRES_TABLE,
    QUIET_AT_MIN,
    SNAPSHOT_NAME,
    START,
    ChannelRow,
    DemoConfig,
    DemoError,
    DemoResult,
    PostgresStore,
    SQLiteStore,
    Workload,
    activity,
    add_arguments,
    config_from_args,
    generate_events,
    hll_bound,
    main,
    print_dashboard,
    progress_wanted,
    run,
    run_from_args,
    zipf_cum_weights,
)

__all__ = [
    "ChannelRow",
    "DAY",
    "DB_NAME",
    "DESCRIPTION",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "HLL_STANDARD_ERROR",
    "KINDS",
    "KIND_WEIGHTS",
    "NIGHT_FLOOR",
    "PEAK_AT_MIN",
    "POINTS",
    "POSTGRES_TABLE",
    "PostgresStore",
    "QUIET_AT_MIN",
    "SNAPSHOT_NAME",
    "SQLiteStore",
    "START",
    "Workload",
    "activity",
    "add_arguments",
    "config_from_args",
    "generate_events",
    "hll_bound",
    "main",
    "print_dashboard",
    "progress_wanted",
    "run",
    "run_from_args",
    "zipf_cum_weights",
]
