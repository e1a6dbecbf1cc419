"""The demo's run and command line: ``python -m engagehub demo``.

:func:`run` generates the workload (:mod:`engagehub.demo.workload`), pushes it
through an :class:`EventStreamProcessor` whose flush callback writes every batch
into a sink (:mod:`engagehub.demo.sinks`) and awards leaderboard points, then
compares the sketches' answers with the exact SQL answers against their error
bounds, and the daily history's answers (active users, retention cohorts, the
activity heatmap) with the exact SQL answers for equality, and returns every
number as a :class:`DemoResult`. :func:`print_dashboard`
is the report; :func:`add_arguments`, :func:`run_from_args` and :func:`main` the
one-process demo's command line (``python -m engagehub demo`` adds ``--redis``,
which runs :mod:`engagehub.shared.demo` instead: see :mod:`engagehub.__main__`).
The progress bar is drawn only on a terminal (:func:`progress_wanted`).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, List, Optional, TextIO, Tuple

from .. import errors
from .._history import Cohort, cohort, date_of
from ..leaderboard import Leaderboard
from ..processor import EventColumns, EventStreamProcessor
from .sinks import POSTGRES_TABLE, DemoError, PostgresStore, SQLiteStore, Store
from .workload import DAY, POINTS, START, generate_events

HLL_STANDARD_ERROR = 0.0081
"""HyperLogLog at precision 14: 1.04 / sqrt(2**14)."""

HISTORY_WEEKS = 8
"""Weeks of history simulated before the day (a fresh run's default)."""
HISTORY_SHARE = 0.1
"""The history's events, as a share of ``--events`` (the default of ``--history-events``)."""
RETENTION_COHORTS = 8
"""Weekly retention cohorts on the dashboard."""

DB_NAME = "engagehub-demo.sqlite3"
SNAPSHOT_NAME = "engagehub-demo-leaderboard.json"
DEMO_DIR = "engagehub-demo"
"""Where runs without ``--db`` keep their files (relative to the working directory):
one new folder per run, ``run-<UTC time>-<random>``, so runs at the same time never
share a file."""
KEEP_RUNS = 5
"""Run folders kept under :data:`DEMO_DIR` (the newest; older ones not in use are
removed when a run starts). 0 keeps them all."""

DESCRIPTION = (
    "One simulated day of a busy Discord server with three guilds, after eight weeks of lighter "
    "history, end to end: a seeded stream of events (Zipf users and channels, a daily activity "
    "curve, users joining over the weeks) pushed through EventStreamProcessor, every flushed batch "
    "bulk-inserted into SQLite (or PostgreSQL) and scored on the decayed leaderboard; then the "
    "sketches' answers and the daily history's (DAU/WAU/MAU, weekly retention, the activity "
    "heatmap) next to the exact SQL answers. Exit status 1 if the database misses events, a "
    "sketch is outside its error bound or a history answer differs from the exact one."
)


# -- progress --------------------------------------------------------------------


def progress_wanted(quiet: bool, stream: TextIO) -> bool:
    """The progress bar is drawn only for a person: not with ``--quiet``, and only
    when ``stream`` is a terminal (a log file or a CI capture gets no bar)."""
    if quiet:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


class _Progress:
    """tqdm when it is installed, else a one-line bar on stderr (at most ~10
    redraws a second); does nothing when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.desc = desc
        self.stream = stream
        self.n = 0
        self.started = self.drawn_at = time.perf_counter()
        self.bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm  # type: ignore[import-not-found]
        except ImportError:
            return
        self.bar = tqdm(total=total, desc=desc, unit="ev", unit_scale=True, file=stream, mininterval=0.1)

    def update_to(self, n: int) -> None:
        if not self.enabled or n <= self.n:
            return
        if self.bar is not None:
            self.bar.update(n - self.n)
            self.n = n
            return
        self.n = n
        now = time.perf_counter()
        if now - self.drawn_at >= 0.1:
            self.drawn_at = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        done = min(self.n / self.total, 1.0)
        width = 30
        filled = int(done * width)
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        line = (
            f"\r{self.desc} |{'#' * filled}{'.' * (width - filled)}| {done:6.1%} "
            f"{self.n:,}/{self.total:,} ev  {rate:,.0f} ev/s  ETA {eta:4.1f} s "
        )
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            return
        self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()


# -- the run ---------------------------------------------------------------------


@dataclass
class DemoConfig:
    """Everything a run needs; the command line's options map one to one."""

    events: int = 1_000_000
    seed: int = 42
    start_ts: Optional[int] = None
    """``None``: :data:`START`, or the midnight after the snapshot's newest update
    when resuming."""
    days: int = 1
    history_weeks: Optional[int] = None
    """Weeks of history before the simulated days; ``None``: :data:`HISTORY_WEEKS`,
    or none when resuming (the earlier runs were the history)."""
    history_events: Optional[int] = None
    """Events in the history; ``None``: :data:`HISTORY_SHARE` of :attr:`events`."""
    users: int = 50_000
    channels: int = 2_000
    db: Optional[str] = None
    """SQLite file; ``None``: ``engagehub-demo.sqlite3`` in a new folder of this run's
    own under :attr:`dir`."""
    postgres: Optional[str] = None
    """A libpq DSN: write to PostgreSQL instead of SQLite."""
    append: bool = False
    snapshot: Optional[str] = None
    """``None``: ``engagehub-demo-leaderboard.json`` next to the database (in the
    run's own folder without ``db``)."""
    resume: bool = False
    """Load the leaderboard first: from :attr:`snapshot` (or the one next to
    :attr:`db`), or without either from the newest earlier run's under :attr:`dir`."""
    dir: Optional[str] = None
    """Where runs without ``db`` keep their files; ``None``: :data:`DEMO_DIR`."""
    keep_runs: int = KEEP_RUNS
    quiet: bool = False
    buffer_size: int = 65_536
    workers: int = 2
    batch_size: int = 5_000
    chunk: int = 1_000
    top_channels: int = 5
    top_users: int = 10


@dataclass
class ChannelRow:
    """One trending channel: the sketch's count next to the exact one."""

    channel_id: str
    sketch: int
    exact: int
    in_bounds: bool


@dataclass(frozen=True)
class ActiveUsers:
    """Distinct users active on a day, in the 7 and in the 30 days ending with it,
    overall (``guild_id`` ``None``) or in one guild."""

    guild_id: Optional[str]
    day: int
    week: int
    month: int

    @property
    def stickiness(self) -> float:
        """DAU / MAU."""
        return self.day / self.month if self.month else 0.0


@dataclass
class DemoResult:
    """Every number of a run (what the dashboard prints)."""

    config: DemoConfig
    start_ts: int
    events: int
    """Events generated."""
    accepted: int
    dropped: int
    processed: int
    delivered: int
    batches: int
    failures: int
    dead_lettered: int
    generate_seconds: float
    push_seconds: float
    """From the first push until the last push returned."""
    total_seconds: float
    """From the first push until every event was in the database."""
    db_seconds: float
    """Time spent in the database's transactions (summed over the batches)."""
    leaderboard_seconds: float
    """Time spent awarding points (summed over the workers, so it includes waits
    for the GIL while another thread runs)."""
    query_seconds: float
    """Time the sketches and the leaderboard took to answer the dashboard's queries."""
    sql_seconds: float
    """Time the database took to compute the exact answers (the sketches' and the
    leaderboard's; the history's ran at the same time: :attr:`history_sql_seconds`)."""
    now: int
    """The processor's clock at the end (the newest event timestamp)."""
    unique_last_hour: int
    unique_last_hour_exact: int
    unique_last_hour_ok: bool
    unique_all: int
    unique_all_exact: int
    unique_all_ok: bool
    top_channels: List[ChannelRow]
    top_channels_exact: List[Tuple[str, int]]
    channel_error_bound: int
    """``ceil(processed / topk_capacity)``: the most a count may exceed the exact one."""
    leaderboard_top: List[dict]
    leaderboard_size: int
    leaderboard_refused: int
    resumed: bool
    resumed_users: int
    backend: str
    db: str
    db_rows: int
    """Rows this run wrote."""
    db_rows_total: int
    snapshot: str
    problems: List[str] = field(default_factory=list)
    resumed_from: Optional[str] = None
    """The snapshot the leaderboard was loaded from (``--resume``)."""
    history_events: int = 0
    """Of :attr:`events`, those of the history before :attr:`start_ts`."""
    history_days: int = 0
    guilds: Tuple[str, ...] = ()
    """The workload's three guilds, the busiest first."""
    last_day: int = 0
    """Day number (UTC days since 1970-01-01) of :attr:`now`: the day the active
    users are counted for."""
    active_users: List[ActiveUsers] = field(default_factory=list)
    """From the daily history: overall, then the busiest guild's."""
    active_users_exact: List[ActiveUsers] = field(default_factory=list)
    retention: List[Cohort] = field(default_factory=list)
    """Weekly cohorts, ending with the week of :attr:`now`."""
    retention_exact: List[Cohort] = field(default_factory=list)
    heatmap: List[List[int]] = field(default_factory=list)
    """Events per weekday (Monday first) and UTC hour over the simulated days."""
    heatmap_exact: List[List[int]] = field(default_factory=list)
    history_query_seconds: float = 0.0
    """Time the daily history took to answer the analytics queries."""
    history_sql_seconds: float = 0.0
    """Time the database took to compute their exact answers (on a second
    connection, at the same time as the other exact answers)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def push_rate(self) -> float:
        return self.accepted / self.push_seconds if self.push_seconds > 0 else 0.0

    @property
    def end_to_end_rate(self) -> float:
        return self.accepted / self.total_seconds if self.total_seconds > 0 else 0.0

    @property
    def unique_last_hour_error(self) -> float:
        return _relative(self.unique_last_hour, self.unique_last_hour_exact)

    @property
    def unique_all_error(self) -> float:
        return _relative(self.unique_all, self.unique_all_exact)

    @property
    def active_users_ok(self) -> bool:
        return self.active_users == self.active_users_exact

    @property
    def retention_ok(self) -> bool:
        return self.retention == self.retention_exact

    @property
    def heatmap_ok(self) -> bool:
        return self.heatmap == self.heatmap_exact

    @property
    def top_channels_match(self) -> bool:
        """The sketch's top channels are the exact top channels (as a set)."""
        return {r.channel_id for r in self.top_channels} == {c for c, _ in self.top_channels_exact}


def _relative(estimate: int, exact: int) -> float:
    return (estimate - exact) / exact if exact else 0.0


def hll_bound(exact: int) -> float:
    """Allowed |estimate - exact|: four standard errors, at least 2."""
    return max(2.0, 4 * HLL_STANDARD_ERROR * exact)


def _newest_update(board: Leaderboard) -> int:
    size = len(board)
    return max((row.last_update for row in board.top(size, now=0)), default=0) if size else 0


def new_run_dir(base: "Path | str" = DEMO_DIR) -> Path:
    """A new, empty folder for one run under ``base`` (created with it): the name
    starts with the UTC time to the microsecond, so runs sort by age, and ends
    with a random part made by ``mkdtemp``, which never returns a folder that
    exists, so runs started at the same moment (two ``make demo`` at once) get
    different ones."""
    base = Path(base).absolute()
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=base))


def _default_dir() -> Path:
    """A new folder of its own for a run (:func:`new_run_dir` under :data:`DEMO_DIR`)."""
    return new_run_dir(DEMO_DIR)


def _run_dirs(base: Path) -> List[Path]:
    """The run folders under ``base``, oldest first."""
    return sorted(p for p in base.glob("run-*") if p.is_dir()) if base.is_dir() else []


def newest_snapshot(base: "Path | str", exclude: Optional[Path] = None) -> Optional[Path]:
    """The most recently saved snapshot of the runs under ``base`` (``exclude``: a
    run folder to skip, the current run's). Snapshots are written atomically, so
    any one found is whole."""
    found = []
    for run_dir in _run_dirs(Path(base).absolute()):
        candidate = run_dir / SNAPSHOT_NAME
        if run_dir != exclude and candidate.is_file():
            found.append((candidate.stat().st_mtime_ns, candidate))
    return max(found)[1] if found else None


def _in_use(run_dir: Path) -> bool:
    """Whether a run still holds its folder (the lock :func:`hold_paths` takes)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return True
    lock_path = run_dir / f"{DB_NAME}.lock"
    if not lock_path.exists():
        # A run that has not locked yet is among the newest, which are never pruned;
        # an old folder without a lock was left by a run that failed early.
        return False
    with open(lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def prune_runs(base: "Path | str", keep: int, *, spare: Tuple[Path, ...] = ()) -> List[Path]:
    """Removes the run folders under ``base`` beyond the newest ``keep`` (0: none
    removed), except those in ``spare`` and those a running demo holds; returns
    the removed ones."""
    if keep <= 0:
        return []
    removed = []
    for run_dir in _run_dirs(Path(base).absolute())[:-keep]:
        if run_dir in spare or _in_use(run_dir):
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


def hold_paths(stack: ExitStack, *paths: Path) -> None:
    """Takes an exclusive lock (``<path>.lock``, released when ``stack`` closes) for
    each file this run writes, so that a second demo started with the same files
    (the defaults are fixed, so that ``--resume`` finds yesterday's snapshot)
    fails at once with a clear message instead of overwriting this one's table.
    Where ``fcntl`` is missing (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)  # as the stores do
        lock = stack.enter_context(open(f"{path}.lock", "a+b"))
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another demo is using {path} right now: wait for it to finish, or leave out "
                "--db and --snapshot (each run then gets a folder of its own)"
            ) from None


def _paths_line() -> str:
    """Which native paths this run uses, so a slow fallback is never silent."""
    from .._native import MODE
    from ..leaderboard import FAST_UPDATES
    from ..processor import FAST_PUSH

    fast = "yes" if FAST_PUSH and FAST_UPDATES else "NO: pushes, deliveries and updates go through cffi (slower)"
    return f"engagehub: cffi {MODE} mode; compiled fast paths (_engagehub_fast): {fast}"


def run(config: DemoConfig, *, err: Optional[TextIO] = None) -> DemoResult:
    """Runs the demo and returns every number. Status lines and the progress bar go
    to ``err`` (default ``sys.stderr``) unless ``config.quiet``; the dashboard is
    :func:`print_dashboard`."""
    err = sys.stderr if err is None else err
    if config.events < 1:
        raise ValueError("events must be >= 1")
    if config.chunk < 1:
        raise ValueError("chunk must be >= 1")
    say: Callable[[str], None] = (lambda _msg: None) if config.quiet else (lambda msg: print(msg, file=err))
    # Closed in reverse order on any exit: the processor (which drains into the
    # store), then the store, then the board.
    with ExitStack() as stack:
        return _run(config, say, err, stack)


def _files(config: DemoConfig) -> Tuple[Optional[Path], Path, Optional[Path]]:
    """The run's SQLite file (``None`` with PostgreSQL), its snapshot and the
    snapshot ``--resume`` loads. Named files are used as given; the others go into
    a new folder of this run's own under ``config.dir`` (so runs at the same time
    never share a file), and then ``--resume`` loads the newest earlier run's
    snapshot there. Old run folders beyond ``config.keep_runs`` are removed."""
    if config.append and not config.db and not config.postgres:
        raise DemoError("--append keeps the rows already in a database: name it with --db")
    base = Path(config.dir or DEMO_DIR).absolute()
    run_dir: Optional[Path] = None

    def own_folder() -> Path:
        nonlocal run_dir
        if run_dir is None:
            run_dir = new_run_dir(base)
        return run_dir

    named = config.db if not config.postgres else None  # --db names the SQLite file only
    db_path = None if config.postgres else Path(named) if named else own_folder() / DB_NAME
    if config.snapshot:
        snapshot = Path(config.snapshot)
    else:
        snapshot = (Path(named).parent if named else own_folder()) / SNAPSHOT_NAME
    resume_from: Optional[Path] = None
    if config.resume:
        resume_from = snapshot if config.snapshot or named else newest_snapshot(base, exclude=run_dir)
    if run_dir is not None:
        spare = (run_dir,) + ((resume_from.parent,) if resume_from is not None else ())
        prune_runs(base, config.keep_runs, spare=spare)
    return db_path, snapshot, resume_from


def history_plan(config: DemoConfig) -> Tuple[int, int]:
    """The run's history: its days (whole weeks) and its events, from the config's
    (``None``: :data:`HISTORY_WEEKS` weeks, none when resuming; :data:`HISTORY_SHARE`
    of the events)."""
    weeks = config.history_weeks
    if weeks is None:
        weeks = 0 if config.resume else HISTORY_WEEKS
    events = config.history_events
    if events is None:
        events = round(config.events * HISTORY_SHARE) if weeks else 0
    if weeks < 0 or events < 0 or (events and not weeks):
        raise ValueError("history weeks and events must be >= 0, and history events need history weeks")
    return 7 * weeks, events


def history_kept(config: DemoConfig, history_days: int) -> int:
    """The processor's ``history_days``: every day of the run (a day more for a
    start within a day), at least the default 90."""
    return max(90, history_days + config.days + 1)


def history_problems(
    last_day: int,
    active: List[ActiveUsers],
    active_exact: List[ActiveUsers],
    retention: List[Cohort],
    retention_exact: List[Cohort],
    heatmap: List[List[int]],
    heatmap_exact: List[List[int]],
) -> List[str]:
    """What differs between the history's answers and the exact ones, in words."""
    problems: List[str] = []
    for got, exact in zip(active, active_exact):
        if got != exact:
            problems.append(
                f"active users on {date_of(last_day)} ({_scope(got.guild_id)}): history day/week/month "
                f"{got.day:,}/{got.week:,}/{got.month:,} vs exact SQL {exact.day:,}/{exact.week:,}/{exact.month:,}"
            )
    for got_cohort, exact_cohort in zip(retention, retention_exact):
        if got_cohort != exact_cohort:
            problems.append(f"retention cohort of {exact_cohort.start}: history {got_cohort} vs exact SQL {exact_cohort}")
    if len(retention) != len(retention_exact):
        problems.append(f"retention: {len(retention)} cohorts, expected {len(retention_exact)}")
    if heatmap != heatmap_exact:
        cells = sum(a != b for got_row, exact_row in zip(heatmap, heatmap_exact) for a, b in zip(got_row, exact_row))
        problems.append(f"activity heatmap: {cells} of 168 cells differ from the exact SQL counts")
    return problems


def _run(config: DemoConfig, say: Callable[[str], None], err: TextIO, stack: ExitStack) -> DemoResult:
    db_path, snapshot, resume_from = _files(config)
    hold_paths(stack, *([snapshot] if db_path is None else [db_path, snapshot]))

    problems: List[str] = []
    board = stack.enter_context(Leaderboard(decay_factor=0.95))
    resumed = False
    resumed_users = 0
    start_ts = START if config.start_ts is None else config.start_ts
    if config.resume:
        if resume_from is not None and resume_from.exists():
            board.load_from_json(resume_from)
            resumed = True
            resumed_users = len(board)
            newest = _newest_update(board)
            if config.start_ts is None and newest:
                start_ts = max(START, (newest // DAY + 1) * DAY)
            say(f"resumed the leaderboard from {resume_from}: {resumed_users:,} users")
        else:
            where = resume_from if resume_from is not None else f"{config.dir or DEMO_DIR}/run-*/"
            say(f"no snapshot at {where}: starting with an empty leaderboard")

    history_days, history_events = history_plan(config)
    history_weeks = history_days // 7

    say(_paths_line())
    history_note = f" after {history_events:,} over the {history_weeks} weeks before" if history_events else ""
    say(f"generating {config.events:,} events{history_note} (seed {config.seed})...")
    t0 = time.perf_counter()
    work = generate_events(
        config.events,
        seed=config.seed,
        start_ts=start_ts,
        days=config.days,
        users=config.users,
        channels=config.channels,
        history_days=history_days,
        history_events=history_events,
    )
    generate_seconds = time.perf_counter() - t0

    store: Store
    if config.postgres:
        store = PostgresStore(config.postgres, config.append)
    else:
        assert db_path is not None
        store = SQLiteStore(db_path, config.append)
    stack.callback(store.close)
    topk_capacity = 1024
    processor = EventStreamProcessor(
        config.buffer_size,
        config.workers,
        config.batch_size,
        200,
        overflow="block",
        block_timeout_ms=60_000,
        clock="event_time",
        topk_capacity=topk_capacity,
        # Every day of the run in the daily history (a day more for a start
        # within a day).
        history_days=history_kept(config, history_days),
    )
    stack.enter_context(processor)
    board.set_time_source(processor.now)

    timing_lock = threading.Lock()
    timings = [0.0, 0.0]  # db, leaderboard
    award = board.update_user
    points_of = POINTS.__getitem__

    def persist(batch: EventColumns) -> None:
        # Raising here fails the batch: the processor retries it, then dead-letters it.
        db_seconds = store.write(batch)
        written = time.perf_counter()
        # Points are awarded once the events are persisted (a retried batch is
        # never counted twice: a failed write raised above).
        try:
            # update_user returns False for a newcomer refused by a full board; the
            # board counts those (stats().refused). deque(maxlen=0) runs the map in C.
            deque(map(award, batch.user_ids, map(points_of, batch.types), batch.timestamps), maxlen=0)
        except Exception as exc:  # noqa: BLE001 - the rows are committed: report, do not retry
            problems.append(f"awarding points failed: {exc!r}")
        done = time.perf_counter()
        with timing_lock:
            timings[0] += db_seconds
            timings[1] += done - written

    def dead_letter(events: List[dict], reason: str) -> None:
        problems.append(f"{len(events):,} events could not be written: {reason}")

    processor.set_flush_callback(persist, batch_format="columns")
    processor.set_dead_letter_callback(dead_letter)

    progress = _Progress(len(work), progress_wanted(config.quiet, err), "events", err)
    try:
        started = time.perf_counter()
        push_many = processor.push_many
        stats = processor.stats
        for lo in range(0, len(work), config.chunk):
            push_many(work.rows(lo, lo + config.chunk))
            progress.update_to(stats().delivered)
        push_seconds = time.perf_counter() - started
        while True:
            try:
                processor.flush_now(timeout=0.1)
                break
            except errors.Timeout:
                progress.update_to(stats().delivered)
        total_seconds = time.perf_counter() - started
        progress.update_to(stats().delivered)
    finally:
        progress.close()

    s = processor.stats()
    now = processor.now()
    t0 = time.perf_counter()
    unique_last_hour = processor.get_unique_users_last_hour()
    unique_all = processor.unique_users(None)
    sketch_top = processor.get_top_channels(config.top_channels)
    leaderboard_top = board.get_top_users(config.top_users)
    query_seconds = time.perf_counter() - t0
    # The daily history: active users on the last day (overall and in the busiest
    # guild), the weekly cohorts, and the heatmap of the simulated days.
    last_day = now // DAY
    scopes = (None, work.guilds[0])
    t0 = time.perf_counter()
    active = [
        ActiveUsers(g, *(processor.active_users(date_of(last_day), period, g) for period in ("day", "week", "month")))
        for g in scopes
    ]
    retention = processor.retention("week", RETENTION_COHORTS, now=now)
    heatmap = processor.activity_heatmap(days=config.days, now=now)
    history_query_seconds = time.perf_counter() - t0
    processor.close()
    board.set_time_source(lambda: now)
    leaderboard_size = len(board)
    leaderboard_refused = board.stats().refused
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    board.save_to_json(snapshot)
    board.close()

    # The exact answers, from the database: the daily history's on connections
    # of their own at the same time as the others (each query runs in C, without
    # the GIL), the heatmap's apart from the rest.
    last_day_end = (last_day + 1) * DAY

    def on_reader(query: Callable[[Store], Any]) -> Callable[[], Tuple[Any, float]]:
        def answer() -> Tuple[Any, float]:
            reader = store.reader()
            try:
                started = time.perf_counter()
                return query(reader), time.perf_counter() - started
            finally:
                reader.close()

        return answer

    pool = stack.enter_context(ThreadPoolExecutor(2, thread_name_prefix="engagehub-demo-sql"))
    active_and_retention = pool.submit(
        on_reader(lambda reader: reader.active_users_and_retention(last_day, scopes, RETENTION_COHORTS))
    )
    hours = pool.submit(on_reader(lambda reader: reader.heatmap(last_day_end - config.days * DAY, last_day_end)))
    t0 = time.perf_counter()
    db_rows = store.rows()
    db_rows_total = store.total_rows()
    now_min = now // 60
    unique_last_hour_exact = store.distinct_users((now_min - 59) * 60, (now_min + 1) * 60)
    unique_all_exact = store.distinct_users()
    exact_counts = store.channel_counts([c for c, _ in sketch_top])
    top_channels_exact = store.top_channels(config.top_channels)
    sql_seconds = time.perf_counter() - t0
    (active_counts, cohorts_exact), active_seconds = active_and_retention.result()
    heatmap_exact, heatmap_seconds = hours.result()
    history_sql_seconds = active_seconds + heatmap_seconds
    active_exact = [ActiveUsers(g, *counts) for g, counts in zip(scopes, active_counts)]
    retention_exact = [cohort(start, size, counts) for start, size, counts in cohorts_exact]
    backend, db_desc = store.kind, store.describe()
    store.close()

    bound = math.ceil(s.processed / topk_capacity)
    channels = [
        ChannelRow(c, n, exact_counts[c], exact_counts[c] <= n <= exact_counts[c] + bound) for c, n in sketch_top
    ]
    unique_last_hour_ok = abs(unique_last_hour - unique_last_hour_exact) <= hll_bound(unique_last_hour_exact)
    unique_all_ok = abs(unique_all - unique_all_exact) <= hll_bound(unique_all_exact)

    if db_rows != s.accepted:
        problems.append(f"the database holds {db_rows:,} rows of this run but {s.accepted:,} events were accepted")
    if not unique_last_hour_ok:
        problems.append(
            f"unique users in the last hour: sketch {unique_last_hour:,} vs exact {unique_last_hour_exact:,}, "
            f"outside ±{hll_bound(unique_last_hour_exact):,.0f}"
        )
    if not unique_all_ok:
        problems.append(
            f"unique users over the run: sketch {unique_all:,} vs exact {unique_all_exact:,}, "
            f"outside ±{hll_bound(unique_all_exact):,.0f}"
        )
    for row in channels:
        if not row.in_bounds:
            problems.append(
                f"channel {row.channel_id}: sketch count {row.sketch:,} outside "
                f"[{row.exact:,}, {row.exact + bound:,}] (exact {row.exact:,})"
            )
    if len(channels) < min(config.top_channels, len(top_channels_exact)):
        problems.append(f"the sketch reported {len(channels)} top channels, expected {config.top_channels}")
    problems += history_problems(last_day, active, active_exact, retention, retention_exact, heatmap, heatmap_exact)

    return DemoResult(
        config=config,
        start_ts=start_ts,
        events=len(work),
        accepted=s.accepted,
        dropped=s.dropped,
        processed=s.processed,
        delivered=s.delivered,
        batches=s.batches,
        failures=s.failures,
        dead_lettered=s.dead_lettered,
        generate_seconds=generate_seconds,
        push_seconds=push_seconds,
        total_seconds=total_seconds,
        db_seconds=timings[0],
        leaderboard_seconds=timings[1],
        query_seconds=query_seconds,
        sql_seconds=sql_seconds,
        now=now,
        unique_last_hour=unique_last_hour,
        unique_last_hour_exact=unique_last_hour_exact,
        unique_last_hour_ok=unique_last_hour_ok,
        unique_all=unique_all,
        unique_all_exact=unique_all_exact,
        unique_all_ok=unique_all_ok,
        top_channels=channels,
        top_channels_exact=top_channels_exact,
        channel_error_bound=bound,
        leaderboard_top=leaderboard_top,
        leaderboard_size=leaderboard_size,
        leaderboard_refused=leaderboard_refused,
        resumed=resumed,
        resumed_users=resumed_users,
        backend=backend,
        db=db_desc,
        db_rows=db_rows,
        db_rows_total=db_rows_total,
        snapshot=str(snapshot),
        problems=problems,
        resumed_from=str(resume_from) if resumed else None,
        history_events=work.history,
        history_days=history_days,
        guilds=work.guilds,
        last_day=last_day,
        active_users=active,
        active_users_exact=active_exact,
        retention=retention,
        retention_exact=retention_exact,
        heatmap=heatmap,
        heatmap_exact=heatmap_exact,
        history_query_seconds=history_query_seconds,
        history_sql_seconds=history_sql_seconds,
    )


# -- dashboard -------------------------------------------------------------------


def _utc(ts: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime(fmt)


def _check(ok: bool) -> str:
    return "ok" if ok else "OUT OF BOUNDS"


def _same(ok: bool) -> str:
    """The mark of an answer that must equal the exact one."""
    return "ok" if ok else "MISMATCH"


def _scope(guild_id: Optional[str]) -> str:
    return "all guilds" if guild_id is None else f"guild {guild_id}"


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def print_dashboard(r: DemoResult, out: Optional[TextIO] = None) -> None:
    """Prints the run's numbers as aligned tables on ``out`` (default ``sys.stdout``)."""
    out = sys.stdout if out is None else out
    c = r.config
    end = r.start_ts + c.days * DAY
    w = print

    def line(label: str, value: str, note: str = "") -> None:
        w(f"  {label:<28}{value:>14}  {note}".rstrip(), file=out)

    def rate(n: float, seconds: float, unit: str) -> str:
        return f"{n / seconds:,.0f} {unit}/s" if seconds > 0 else "-"

    w("", file=out)
    day_events = r.events - r.history_events
    w(f"engagehub demo: {day_events:,} events from {_utc(r.start_ts)} to {_utc(end)} UTC (seed {c.seed})", file=out)
    if r.history_events:
        w(
            f"  after {r.history_events:,} events over the {r.history_days // 7} weeks before; "
            f"{len(r.guilds)} guilds, some users in none",
            file=out,
        )
    if r.resumed:
        w(f"leaderboard resumed from {r.resumed_from} ({r.resumed_users:,} users)", file=out)
    w("", file=out)
    w("Pipeline", file=out)
    line("events generated", f"{r.events:,}", f"{r.generate_seconds:.2f} s")
    line("accepted / dropped", f"{r.accepted:,} / {r.dropped:,}")
    line("batches delivered", f"{r.batches:,}", f"up to {c.batch_size:,} events each, {c.workers} workers")
    if r.failures or r.dead_lettered:
        line("failed flushes / lost", f"{r.failures:,} / {r.dead_lettered:,}")
    line("push (producer side)", f"{r.push_rate:,.0f} ev/s", f"{r.push_seconds:.2f} s, waiting whenever the ring is full")
    line("end to end", f"{r.end_to_end_rate:,.0f} ev/s", f"{r.total_seconds:.2f} s from the first push to the last commit")
    line(
        f"in {r.backend} transactions",
        f"{r.db_seconds:.2f} s",
        f"{rate(r.delivered, r.db_seconds, 'rows')}, one transaction per batch",
    )
    line(
        "awarding points",
        f"{r.leaderboard_seconds:.2f} s",
        f"{rate(r.delivered, r.leaderboard_seconds, 'updates')}, update_user per persisted event",
    )
    w(f"  (flush callback times: summed over the {c.workers} workers, GIL waits included)", file=out)
    w("", file=out)

    w(f"Unique users (HyperLogLog vs exact SQL; now = {_utc(r.now, '%Y-%m-%d %H:%M:%S')} UTC)", file=out)
    w(f"  {'':<14}{'sketch':>10}{'exact':>10}{'error':>9}{'bound':>9}", file=out)
    for label, est, exact, err, ok in (
        ("last hour", r.unique_last_hour, r.unique_last_hour_exact, r.unique_last_hour_error, r.unique_last_hour_ok),
        ("whole run", r.unique_all, r.unique_all_exact, r.unique_all_error, r.unique_all_ok),
    ):
        bound = hll_bound(exact) / exact if exact else 0.0
        w(f"  {label:<14}{est:>10,}{exact:>10,}{err:>+9.2%}{bound:>8.2%}  {_check(ok)}", file=out)
    w("", file=out)

    w(
        f"Top {len(r.top_channels)} channels (all time, Space-Saving; "
        f"a count may exceed the exact one by <= {r.channel_error_bound:,})",
        file=out,
    )
    w(f"  {'#':>2}  {'channel id':<20}{'sketch':>10}{'exact':>10}", file=out)
    for i, row in enumerate(r.top_channels, 1):
        w(f"  {i:>2}  {row.channel_id:<20}{row.sketch:>10,}{row.exact:>10,}  {_check(row.in_bounds)}", file=out)
    same = "yes" if r.top_channels_match else "no (near-ties within the error bound)"
    w(f"  same channels as the exact SQL top {len(r.top_channels_exact)}: {same}", file=out)
    w(
        f"  the sketches and the leaderboard answered in {r.query_seconds * 1e3:.1f} ms; "
        f"the exact SQL queries took {r.sql_seconds * 1e3:,.0f} ms",
        file=out,
    )
    w("", file=out)

    _print_history(r, out)

    w(f"Leaderboard top {len(r.leaderboard_top)} (decay 0.95/day, at {_utc(r.now)} UTC)", file=out)
    w(f"  {'rank':>4}  {'user id':<20}{'score':>11}  last active", file=out)
    for row in r.leaderboard_top:
        w(f"  {row['rank']:>4}  {row['user_id']:<20}{row['score']:>11,.2f}  {_utc(row['last_update'])}", file=out)
    w("", file=out)

    w("Storage", file=out)
    w(f"  database     {r.db} ({r.backend})", file=out)
    extra = f" ({r.db_rows_total:,} in the table)" if r.db_rows_total != r.db_rows else ""
    w(f"  rows         {r.db_rows:,} written by this run{extra}, accepted {r.accepted:,}: "
      f"{'match' if r.db_rows == r.accepted else 'MISMATCH'}", file=out)
    resumed = f", resumed from {r.resumed_users:,} users" if r.resumed else ""
    w(f"  snapshot     {r.snapshot} ({r.leaderboard_size:,} users{resumed})", file=out)
    if r.leaderboard_refused:
        w(f"  refused      {r.leaderboard_refused:,} leaderboard newcomers (board full)", file=out)
    w("", file=out)
    if r.ok:
        w("all checks passed", file=out)
    else:
        w("CHECKS FAILED:", file=out)
        for problem in r.problems:
            w(f"  - {problem}", file=out)


def _print_history(r: DemoResult, out: TextIO) -> None:
    print_history(
        out,
        last_day=r.last_day,
        days=r.config.days,
        active=r.active_users,
        active_exact=r.active_users_exact,
        retention=r.retention,
        retention_exact=r.retention_exact,
        heatmap=r.heatmap,
        heatmap_exact=r.heatmap_exact,
        query_seconds=r.history_query_seconds,
        sql_seconds=r.history_sql_seconds,
        sql_note=" (alongside the others)",
    )


def print_history(
    out: TextIO,
    *,
    last_day: int,
    days: int,
    active: List[ActiveUsers],
    active_exact: List[ActiveUsers],
    retention: List[Cohort],
    retention_exact: List[Cohort],
    heatmap: List[List[int]],
    heatmap_exact: List[List[int]],
    query_seconds: float,
    sql_seconds: float,
    source: str = "the daily history",
    sql_note: str = "",
) -> None:
    """The daily history's answers (``source``: who answered): active users on
    ``last_day`` (overall and per guild), the weekly retention table and the
    heatmap of the ``days`` days ending with ``last_day``, each marked by whether
    it equals the exact SQL answer; ``sql_note`` ends the timing line."""
    w = print
    last = date_of(last_day)
    w(f"Active users on {last} ({source} vs exact SQL; week/month: the 7/30 days ending that day)", file=out)
    w(f"  {'':<28}{'DAU':>9}{'WAU':>9}{'MAU':>9}{'DAU/MAU':>9}", file=out)
    for got, exact in zip(active, active_exact):
        mark = "ok, = SQL" if got == exact else f"MISMATCH: SQL {exact.day:,} / {exact.week:,} / {exact.month:,}"
        w(
            f"  {_scope(got.guild_id):<28}{got.day:>9,}{got.week:>9,}{got.month:>9,}{got.stickiness:>9.1%}  {mark}",
            file=out,
        )
    w("", file=out)

    n = len(retention)
    w(f"Weekly retention, {n} cohorts (users first seen in the week from Monday; % active in week k after)", file=out)
    w(f"  {'week of':<12}{'users':>8}" + "".join(f"{f'w{k}':>6}" for k in range(n)), file=out)
    for c, c_exact in zip(retention, retention_exact):
        cells = "".join(f"{f:>6.0%}" for f in c.retained)
        mark = "" if c == c_exact else f"  MISMATCH: SQL {c_exact.size:,} users, " + " ".join(
            f"{f:.0%}" for f in c_exact.retained
        )
        w(f"  {c.start.isoformat():<12}{c.size:>8,}{cells}{mark}", file=out)
    same = retention == retention_exact
    w(f"  every cohort's size and fractions equal the exact SQL ones: {_same(same)}", file=out)
    w("", file=out)

    first = date_of(last_day - days + 1)
    span = f"{last} ({WEEKDAYS[last.weekday()]})" if days == 1 else f"{first} to {last}"
    w(f"Activity heatmap of {span}: events per UTC hour ({source} vs exact SQL)", file=out)
    for weekday, row in enumerate(heatmap):
        if not any(row):
            continue
        for lo in range(0, 24, 8):
            label = WEEKDAYS[weekday] if lo == 0 else ""
            w(f"  {label:<4}{lo:02d}-{lo + 7:02d}h" + "".join(f"{n:>9,}" for n in row[lo : lo + 8]), file=out)
    equal = sum(a == b for got_row, exact_row in zip(heatmap, heatmap_exact) for a, b in zip(got_row, exact_row))
    w(
        f"  {equal} of 168 cells (7 weekdays x 24 hours) equal the exact SQL counts: "
        f"{_same(heatmap == heatmap_exact)}; {sum(map(sum, heatmap)):,} events",
        file=out,
    )
    w(
        f"  {source} answered in {query_seconds * 1e3:.1f} ms; "
        f"the exact SQL queries took {sql_seconds * 1e3:,.0f} ms{sql_note}",
        file=out,
    )
    w("", file=out)


# -- command line ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The one-process demo's options (:func:`main`; ``python -m engagehub demo``
    adds the ``--redis`` ones)."""
    d = DemoConfig()
    parser.add_argument("--events", type=int, default=d.events, help="events to generate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    parser.add_argument(
        "--start-ts",
        type=int,
        default=None,
        help=f"unix start of the simulated day (default {START}, 2026-01-01 UTC; "
        "with --resume, the midnight after the snapshot's newest update)",
    )
    parser.add_argument("--days", type=int, default=d.days, help="simulated days (default %(default)s)")
    parser.add_argument(
        "--history-weeks",
        type=int,
        default=None,
        metavar="N",
        help=f"weeks of lighter history before the simulated days, users joining over them "
        f"(default {HISTORY_WEEKS}; 0 with --resume: the earlier runs were the history)",
    )
    parser.add_argument(
        "--history-events",
        type=int,
        default=None,
        metavar="N",
        help=f"events in the history (default {round(HISTORY_SHARE * 100)}%% of --events)",
    )
    parser.add_argument("--users", type=int, default=d.users, help="distinct users (default %(default)s)")
    parser.add_argument("--channels", type=int, default=d.channels, help="distinct channels (default %(default)s)")
    parser.add_argument(
        "--db",
        default=None,
        help=f"SQLite file, recreated unless --append (default: {DB_NAME} in a new folder of this run's own "
        "under --dir)",
    )
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        default=None,
        help=f"write to PostgreSQL instead (psycopg 3, COPY per batch) into table {POSTGRES_TABLE}, "
        "which is dropped and recreated unless --append",
    )
    parser.add_argument(
        "--append", action="store_true", help="keep the rows already in --db (or the PostgreSQL table)"
    )
    parser.add_argument(
        "--snapshot",
        default=None,
        help=f"leaderboard snapshot written at the end (default {SNAPSHOT_NAME} next to the db)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="load the leaderboard first (from --snapshot, the one next to --db, or else the newest earlier "
        "run's under --dir) and simulate the next day (default: start from an empty board, so every run is "
        "the same)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help=f"where runs without --db keep their files, one new folder per run (default ./{DEMO_DIR}/)",
    )
    parser.add_argument(
        "--keep-runs",
        type=int,
        default=KEEP_RUNS,
        metavar="N",
        help="run folders kept under --dir: older ones not in use are removed when a run starts "
        "(default %(default)s; 0 keeps all)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    parser.add_argument("--workers", type=int, default=d.workers, help="processor threads (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="flush batch size (default %(default)s)")
    parser.add_argument("--buffer-size", type=int, default=d.buffer_size, help="ring slots (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        events=args.events,
        seed=args.seed,
        start_ts=args.start_ts,
        days=args.days,
        history_weeks=args.history_weeks,
        history_events=args.history_events,
        users=args.users,
        channels=args.channels,
        db=args.db,
        postgres=args.postgres,
        append=args.append,
        snapshot=args.snapshot,
        resume=args.resume,
        dir=args.dir,
        keep_runs=args.keep_runs,
        quiet=args.quiet,
        workers=args.workers,
        batch_size=args.batch_size,
        buffer_size=args.buffer_size,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the demo, prints the dashboard; 0 if every check passed, else 1."""
    try:
        result = run(config_from_args(args))
    except Exception as exc:  # noqa: BLE001 - a bad option or an unreachable database: a message, status 2
        expected = (DemoError, ValueError, OSError, sqlite3.Error, errors.EngageHubError)
        if not isinstance(exc, expected) and not type(exc).__module__.startswith("psycopg"):
            raise
        print(f"engagehub demo: {exc}", file=sys.stderr)
        return 2
    print_dashboard(result)
    sys.stdout.flush()
    if not result.ok:
        for problem in result.problems:
            print(f"engagehub demo: check failed: {problem}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The one-process demo's command line: ``python -m engagehub demo [options]``
    without the ``demo`` word (and without ``--redis``)."""
    parser = argparse.ArgumentParser(prog="python -m engagehub demo", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


__all__ = [
    "DB_NAME",
    "DEMO_DIR",
    "DESCRIPTION",
    "KEEP_RUNS",
    "HISTORY_SHARE",
    "HISTORY_WEEKS",
    "HLL_STANDARD_ERROR",
    "RETENTION_COHORTS",
    "SNAPSHOT_NAME",
    "ActiveUsers",
    "ChannelRow",
    "DemoConfig",
    "DemoResult",
    "add_arguments",
    "config_from_args",
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
]
