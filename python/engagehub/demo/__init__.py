"""The demo: one simulated day of a busy Discord server, end to end.

A seeded generator produces a realistic event stream (Zipf-distributed users and
channels, a daily activity curve, messages / reactions / voice joins / member
joins, three guilds), the simulated day after eight weeks of lighter history in
which users join the community. The events are pushed through an
:class:`EventStreamProcessor` replaying in event time; its flush callback
bulk-inserts every batch into a database (SQLite by default, PostgreSQL with
``--postgres``) and awards leaderboard points for the persisted events. At the end
the sketches' answers are printed next to the exact SQL answers, checked against
their error bounds; the daily history's answers (DAU/WAU/MAU and stickiness for
the last day, overall and for a guild; an 8-week retention table; the heatmap of
the simulated day) are checked to equal the exact SQL ones; and the leaderboard
is saved to a snapshot. Each run starts from an empty board and a fresh table, so runs repeat;
``--resume`` loads the snapshot first and simulates the following day (without a
history: the earlier runs were it), ``--append`` keeps the earlier rows (the exact answers always cover this run's rows only).
Without ``--db`` a run writes into a new folder of its own under
``./engagehub-demo/`` (``--dir``), so demos running at the same time never share a
file; the newest five run folders are kept (``--keep-runs``).

Run it with ``python -m engagehub demo`` (``--help`` lists the options). From code:
:func:`run` takes a :class:`DemoConfig` and returns a :class:`DemoResult` with every
number; :func:`main` is the command line and returns the exit status.

The package's modules, each usable alone:

* :mod:`engagehub.demo.workload`: the seeded event generator (:func:`generate_events`,
  standard library only);
* :mod:`engagehub.demo.sinks`: the database sinks (:class:`SQLiteStore`,
  :class:`PostgresStore`) a flush callback writes batches into;
* :mod:`engagehub.demo.cli`: the run (:func:`run`, the checks), the progress bar, the
  dashboard and the command line.

Every public name of the three is importable from here.
"""

from __future__ import annotations

from .cli import (
    DB_NAME,
    DEMO_DIR,
    DESCRIPTION,
    HISTORY_SHARE,
    HISTORY_WEEKS,
    HLL_STANDARD_ERROR,
    KEEP_RUNS,
    RETENTION_COHORTS,
    SNAPSHOT_NAME,
    ActiveUsers,
    ChannelRow,
    DemoConfig,
    DemoResult,
    add_arguments,
    config_from_args,
    history_kept,
    history_plan,
    history_problems,
    hll_bound,
    main,
    new_run_dir,
    newest_snapshot,
    print_dashboard,
    print_history,
    progress_wanted,
    prune_runs,
    run,
    run_from_args,
)
from .sinks import POSTGRES_TABLE, DemoError, PostgresStore, SQLiteStore, Store
from .workload import (
    CHURNED,
    CHURNED_SHARE,
    DAY,
    GUILD_WEIGHTS,
    JOINED_BEFORE,
    KIND_WEIGHTS,
    KINDS,
    NIGHT_FLOOR,
    PEAK_AT_MIN,
    POINTS,
    QUIET_AT_MIN,
    START,
    Workload,
    activity,
    generate_events,
    zipf_cum_weights,
)

__all__ = [
    "ActiveUsers",
    "CHURNED",
    "CHURNED_SHARE",
    "ChannelRow",
    "DAY",
    "DB_NAME",
    "DEMO_DIR",
    "DESCRIPTION",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "GUILD_WEIGHTS",
    "HISTORY_SHARE",
    "HISTORY_WEEKS",
    "HLL_STANDARD_ERROR",
    "JOINED_BEFORE",
    "KEEP_RUNS",
    "KINDS",
    "KIND_WEIGHTS",
    "NIGHT_FLOOR",
    "PEAK_AT_MIN",
    "POINTS",
    "POSTGRES_TABLE",
    "PostgresStore",
    "QUIET_AT_MIN",
    "RETENTION_COHORTS",
    "SNAPSHOT_NAME",
    "SQLiteStore",
    "START",
    "Store",
    "Workload",
    "activity",
    "add_arguments",
    "config_from_args",
    "generate_events",
    "history_kept",
    "history_plan",
    "history_problems",
    "hll_bound",
    "main",
    "new_run_dir",
    "newest_snapshot",
    "print_dashboard",
    "print_history",
    "progress_wanted",
    "prune_runs",
    "run",
    "run_from_args",
    "zipf_cum_weights",
]
