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

import argparse
import math
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, TextIO, Tuple

from .. import errors
from ..leaderboard import Leaderboard
from ..processor import EventColumns, EventStreamProcessor

DAY = 86_400
START = 1_767_225_600
"""Default start of the simulated day: 2026-01-01T00:00:00Z."""

KINDS = ("message", "reaction", "voice_join", "member_join")
KIND_WEIGHTS = (70, 22, 5, 3)
"""Share of each event kind, in percent."""
POINTS = {"message": 1.0, "reaction": 0.5, "voice_join": 3.0, "member_join": 5.0}
"""Leaderboard points awarded per persisted event of each kind."""

HLL_STANDARD_ERROR = 0.0081
"""HyperLogLog at precision 14: 1.04 / sqrt(2**14)."""

QUIET_AT_MIN = 4 * 60 + 30
"""Minute of the day with the least activity (04:30)."""
PEAK_AT_MIN = 21 * 60
"""Minute of the day with the most activity (21:00)."""
NIGHT_FLOOR = 0.08
"""Activity at the quietest minute, relative to the peak."""

DB_NAME = "engagehub-demo.sqlite3"
SNAPSHOT_NAME = "engagehub-demo-leaderboard.json"
POSTGRES_TABLE = "engagehub_demo_events"

DESCRIPTION = (
    "One simulated day of a busy Discord server, end to end: a seeded stream of events "
    "(Zipf users and channels, a daily activity curve) pushed through EventStreamProcessor, "
    "every flushed batch bulk-inserted into SQLite (or PostgreSQL) and scored on the decayed "
    "leaderboard; then the sketches' answers next to the exact SQL answers. Exit status 1 if "
    "the database misses events or a sketch is outside its error bound."
)


class DemoError(Exception):
    """The demo cannot run as configured (e.g. ``--postgres`` without psycopg)."""


# -- workload --------------------------------------------------------------------


def activity(minute: int) -> float:
    """Relative activity at ``minute`` of the day (0..1439): a half-cosine rising
    from the night floor at 04:30 to the peak at 21:00, then falling back."""
    minute %= 1440
    rise = (PEAK_AT_MIN - QUIET_AT_MIN) % 1440
    since_quiet = (minute - QUIET_AT_MIN) % 1440
    if since_quiet <= rise:
        x = since_quiet / rise
    else:
        x = 1.0 - (since_quiet - rise) / (1440 - rise)
    return NIGHT_FLOOR + (1.0 - NIGHT_FLOOR) * (1.0 - math.cos(math.pi * x)) / 2.0


def zipf_cum_weights(n: int, s: float) -> List[float]:
    """Cumulative weights of ranks 1..n under Zipf's law with exponent ``s``."""
    return list(accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


@dataclass(frozen=True)
class Workload:
    """Generated events as parallel columns, sorted by timestamp."""

    kinds: List[str]
    user_ids: List[str]
    channel_ids: List[str]
    timestamps: List[int]

    def __len__(self) -> int:
        return len(self.timestamps)

    def rows(self, start: int = 0, stop: Optional[int] = None) -> List[Tuple[str, str, str, int]]:
        """Events ``start:stop`` as ``(type, user_id, channel_id, timestamp)`` tuples."""
        return list(
            zip(
                self.kinds[start:stop],
                self.user_ids[start:stop],
                self.channel_ids[start:stop],
                self.timestamps[start:stop],
            )
        )


def generate_events(
    n: int,
    *,
    seed: int = 42,
    start_ts: int = START,
    days: int = 1,
    users: int = 50_000,
    channels: int = 2_000,
    user_skew: float = 1.05,
    channel_skew: float = 1.1,
) -> Workload:
    """A reproducible Discord-like stream of ``n`` events over ``days`` from ``start_ts``.

    Users and channels get 18-digit snowflake-like ids and Zipf-distributed activity
    (exponents ``user_skew`` and ``channel_skew``: a few very busy ones, a long
    tail); timestamps follow :func:`activity` (quiet at night, busiest in the
    evening); kinds are 70% messages, 22% reactions, 5% voice joins and 3% member
    joins. The same arguments always give the same events.

    Each column is drawn with one ``random.choices`` call; only the timestamps are
    sorted (the other columns are independent draws, so their order is as random
    after the sort as before).
    """
    if n < 0 or users < 1 or channels < 1 or days < 1:
        raise ValueError("n must be >= 0; users, channels and days >= 1")
    rng = random.Random(seed)
    user_pool = [str(i) for i in rng.sample(range(10**17, 10**18), users)]
    channel_pool = [str(i) for i in rng.sample(range(10**17, 10**18), channels)]
    user_ids = rng.choices(user_pool, cum_weights=zipf_cum_weights(users, user_skew), k=n)
    channel_ids = rng.choices(channel_pool, cum_weights=zipf_cum_weights(channels, channel_skew), k=n)
    kinds = rng.choices(KINDS, cum_weights=list(accumulate(KIND_WEIGHTS)), k=n)
    # One weight per second of the simulation: each minute's activity, 60 times.
    per_minute = [activity(m) for m in range(1440)] * days
    second_weights = accumulate(w for w in per_minute for _ in range(60))
    seconds = range(start_ts, start_ts + days * DAY)
    timestamps = sorted(rng.choices(seconds, cum_weights=list(second_weights), k=n))
    return Workload(kinds, user_ids, channel_ids, timestamps)


# -- storage ---------------------------------------------------------------------


class _Store:
    """The events table: bulk writes from the flush callback, exact answers after.

    One connection, guarded by a lock: the callback runs on the processor's worker
    threads, possibly two at once. ``first_id`` is the largest id before this run,
    so the exact answers cover exactly this run's events even with ``--append``.
    """

    kind = ""
    table = "events"
    placeholder = "?"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first_id = 0

    def write(self, batch: EventColumns) -> float:
        """Writes a batch in one transaction; returns the seconds it took (lock held)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _one(self, sql: str, *params: Any) -> Any:
        raise NotImplementedError

    def _all(self, sql: str, *params: Any) -> List[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("{t}", self.table).replace("?", self.placeholder)

    def rows(self) -> int:
        """Rows written by this run."""
        return int(self._one("SELECT COUNT(*) FROM {t} WHERE id > ?", self.first_id))

    def total_rows(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM {t}"))

    def distinct_users(self, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
        """Distinct users among this run's events with ``lo <= ts < hi``."""
        if lo is None or hi is None:
            return int(self._one("SELECT COUNT(DISTINCT user_id) FROM {t} WHERE id > ?", self.first_id))
        sql = "SELECT COUNT(DISTINCT user_id) FROM {t} WHERE id > ? AND ts >= ? AND ts < ?"
        return int(self._one(sql, self.first_id, lo, hi))

    def top_channels(self, k: int) -> List[Tuple[str, int]]:
        sql = (
            "SELECT channel_id, COUNT(*) FROM {t} WHERE id > ? "
            "GROUP BY channel_id ORDER BY COUNT(*) DESC, channel_id LIMIT ?"
        )
        return [(str(c), int(n)) for c, n in self._all(sql, self.first_id, k)]

    def channel_counts(self, channel_ids: Sequence[str]) -> dict:
        if not channel_ids:
            return {}
        marks = ", ".join("?" for _ in channel_ids)
        sql = f"SELECT channel_id, COUNT(*) FROM {{t}} WHERE id > ? AND channel_id IN ({marks}) GROUP BY channel_id"
        counts = {c: 0 for c in channel_ids}
        counts.update((str(c), int(n)) for c, n in self._all(sql, self.first_id, *channel_ids))
        return counts


class SQLiteStore(_Store):
    """``events`` in a SQLite file: WAL, ``synchronous=NORMAL``, one transaction per
    batch, ``executemany`` over the batch's columns."""

    kind = "SQLite"

    def __init__(self, path: Path, append: bool = False) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode (isolation_level=None): transactions are explicit below.
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if not append:
            self.conn.execute("DROP TABLE IF EXISTS events")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS events ("
            "id INTEGER PRIMARY KEY, type TEXT, user_id TEXT, channel_id TEXT, ts INTEGER)"
        )
        self.first_id = int(self._one("SELECT COALESCE(MAX(id), 0) FROM events"))

    def describe(self) -> str:
        return str(self.path)

    def write(self, batch: EventColumns) -> float:
        rows = zip(batch.types, batch.user_ids, batch.channel_ids, batch.timestamps)
        with self.lock:
            started = time.perf_counter()
            conn = self.conn
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT INTO events (type, user_id, channel_id, ts) VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return time.perf_counter() - started

    def _one(self, sql: str, *params: Any) -> Any:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchone()[0]

    def _all(self, sql: str, *params: Any) -> List[tuple]:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _copy_text(batch: EventColumns) -> Optional[str]:
    """The batch in COPY's text format, built with C-level joins; ``None`` if a field
    holds a character the format would need escaped (tab, newline, CR, backslash),
    then the caller writes row by row and lets psycopg escape."""
    n = len(batch.types)
    text = "\n".join(
        map("\t".join, zip(batch.types, batch.user_ids, batch.channel_ids, map(str, batch.timestamps)))
    )
    if text.count("\t") != 3 * n or text.count("\n") != n - 1 or "\\" in text or "\r" in text:
        return None
    return text + "\n"


class PostgresStore(_Store):
    """``engagehub_demo_events`` in PostgreSQL (psycopg 3): one ``COPY ... FROM
    STDIN`` per batch, in its own transaction."""

    kind = "PostgreSQL"
    table = POSTGRES_TABLE
    placeholder = "%s"

    def __init__(self, dsn: str, append: bool = False) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise DemoError("--postgres needs psycopg 3: pip install 'psycopg[binary]'") from exc
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        with self.conn.transaction():
            if not append:
                self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "type TEXT NOT NULL, user_id TEXT NOT NULL, channel_id TEXT NOT NULL, ts BIGINT NOT NULL)"
            )
        self.first_id = int(self._one("SELECT COALESCE(MAX(id), 0) FROM {t}"))

    def describe(self) -> str:
        info = self.conn.info
        return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname} table {self.table}"

    def write(self, batch: EventColumns) -> float:
        rows = zip(batch.types, batch.user_ids, batch.channel_ids, batch.timestamps)
        with self.lock:
            started = time.perf_counter()
            with self.conn.transaction(), self.conn.cursor() as cur:
                with cur.copy(f"COPY {self.table} (type, user_id, channel_id, ts) FROM STDIN") as copy:
                    block = _copy_text(batch)
                    if block is not None:
                        copy.write(block)
                    else:
                        write_row = copy.write_row
                        for row in rows:
                            write_row(row)
            return time.perf_counter() - started

    def _one(self, sql: str, *params: Any) -> Any:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchone()[0]

    def _all(self, sql: str, *params: Any) -> List[tuple]:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()


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
    users: int = 50_000
    channels: int = 2_000
    db: Optional[str] = None
    """SQLite file; ``None``: ``engagehub-demo.sqlite3`` in the temp directory."""
    postgres: Optional[str] = None
    """A libpq DSN: write to PostgreSQL instead of SQLite."""
    append: bool = False
    snapshot: Optional[str] = None
    """``None``: ``engagehub-demo-leaderboard.json`` next to the database."""
    resume: bool = False
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
    """Time the database took to compute the exact answers."""
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


def _default_dir() -> Path:
    return Path(tempfile.gettempdir())


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


def _run(config: DemoConfig, say: Callable[[str], None], err: TextIO, stack: ExitStack) -> DemoResult:
    db_path = Path(config.db) if config.db else _default_dir() / DB_NAME
    if config.snapshot:
        snapshot = Path(config.snapshot)
    else:
        snapshot = (db_path.parent if not config.postgres else _default_dir()) / SNAPSHOT_NAME

    problems: List[str] = []
    board = stack.enter_context(Leaderboard(decay_factor=0.95))
    resumed = False
    resumed_users = 0
    start_ts = START if config.start_ts is None else config.start_ts
    if config.resume:
        if snapshot.exists():
            board.load_from_json(snapshot)
            resumed = True
            resumed_users = len(board)
            newest = _newest_update(board)
            if config.start_ts is None and newest:
                start_ts = max(START, (newest // DAY + 1) * DAY)
            say(f"resumed the leaderboard from {snapshot}: {resumed_users:,} users")
        else:
            say(f"no snapshot at {snapshot}: starting with an empty leaderboard")

    say(_paths_line())
    say(f"generating {config.events:,} events (seed {config.seed})...")
    t0 = time.perf_counter()
    work = generate_events(
        config.events,
        seed=config.seed,
        start_ts=start_ts,
        days=config.days,
        users=config.users,
        channels=config.channels,
    )
    generate_seconds = time.perf_counter() - t0

    store: _Store
    if config.postgres:
        store = PostgresStore(config.postgres, config.append)
    else:
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
    processor.close()
    board.set_time_source(lambda: now)
    leaderboard_size = len(board)
    leaderboard_refused = board.stats().refused
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    board.save_to_json(snapshot)
    board.close()

    # The exact answers, from the database.
    t0 = time.perf_counter()
    db_rows = store.rows()
    db_rows_total = store.total_rows()
    now_min = now // 60
    unique_last_hour_exact = store.distinct_users((now_min - 59) * 60, (now_min + 1) * 60)
    unique_all_exact = store.distinct_users()
    exact_counts = store.channel_counts([c for c, _ in sketch_top])
    top_channels_exact = store.top_channels(config.top_channels)
    sql_seconds = time.perf_counter() - t0
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
    )


# -- dashboard -------------------------------------------------------------------


def _utc(ts: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime(fmt)


def _check(ok: bool) -> str:
    return "ok" if ok else "OUT OF BOUNDS"


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
    w(f"engagehub demo: {r.events:,} events from {_utc(r.start_ts)} to {_utc(end)} UTC (seed {c.seed})", file=out)
    if r.resumed:
        w(f"leaderboard resumed from {r.snapshot} ({r.resumed_users:,} users)", file=out)
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


# -- command line ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by :func:`main` and ``python -m engagehub demo``)."""
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
    parser.add_argument("--users", type=int, default=d.users, help="distinct users (default %(default)s)")
    parser.add_argument("--channels", type=int, default=d.channels, help="distinct channels (default %(default)s)")
    parser.add_argument(
        "--db", default=None, help=f"SQLite file (default {DB_NAME} in {_default_dir()}); recreated unless --append"
    )
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        default=None,
        help=f"write to PostgreSQL instead (psycopg 3, COPY per batch) into table {POSTGRES_TABLE}, "
        "which is dropped and recreated unless --append",
    )
    parser.add_argument("--append", action="store_true", help="keep the rows of earlier runs")
    parser.add_argument(
        "--snapshot",
        default=None,
        help=f"leaderboard snapshot written at the end (default {SNAPSHOT_NAME} next to the db)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="load the leaderboard from --snapshot first if the file exists, and simulate the next day "
        "(default: start from an empty board, so every run is the same)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    parser.add_argument("--workers", type=int, default=d.workers, help="processor threads (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="flush batch size (default %(default)s)")
    parser.add_argument("--buffer-size", type=int, default=d.buffer_size, help="ring slots (default %(default)s)")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="share through Redis (redis-py): split the events over --writers processes that publish to URL, "
        "read the dashboard from another process (default: one process, no Redis)",
    )
    parser.add_argument("--writers", type=int, default=3, help="writer processes with --redis (default %(default)s)")
    parser.add_argument(
        "--namespace", default="engagehub-demo", help="Redis key namespace with --redis (default %(default)s)"
    )


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        events=args.events,
        seed=args.seed,
        start_ts=args.start_ts,
        days=args.days,
        users=args.users,
        channels=args.channels,
        db=args.db,
        postgres=args.postgres,
        append=args.append,
        snapshot=args.snapshot,
        resume=args.resume,
        quiet=args.quiet,
        workers=args.workers,
        batch_size=args.batch_size,
        buffer_size=args.buffer_size,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the demo, prints the dashboard; 0 if every check passed, else 1."""
    if getattr(args, "redis", None):
        return _run_shared_from_args(args)
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


def _run_shared_from_args(args: argparse.Namespace) -> int:
    """``--redis URL``: the shared demo (:mod:`engagehub.shared.demo`)."""
    try:
        from ..shared import demo as shared_demo

        if args.postgres:
            raise DemoError("--redis writes the rows to SQLite; drop --postgres")
        return shared_demo.run(config_from_args(args), args.redis, args.writers, args.namespace)
    except Exception as exc:  # noqa: BLE001 - a bad option or an unreachable server: a message, status 2
        if not isinstance(exc, (DemoError, ValueError, OSError, sqlite3.Error, ImportError)) and not type(
            exc
        ).__module__.startswith("redis"):
            raise
        print(f"engagehub demo: {exc}", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m engagehub demo [options]`` without the ``demo`` word."""
    parser = argparse.ArgumentParser(prog="python -m engagehub demo", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


__all__ = [
    "DemoConfig",
    "DemoResult",
    "Workload",
    "generate_events",
    "main",
    "print_dashboard",
    "run",
]
