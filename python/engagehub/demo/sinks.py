"""The demo's database sinks: an events table written one batch per transaction.

:class:`SQLiteStore` (a SQLite file, ``executemany``) and :class:`PostgresStore`
(psycopg 3, one ``COPY ... FROM STDIN`` per batch) take the
:class:`~engagehub.processor.EventColumns` batches an ``EventStreamProcessor``
flush callback receives (``batch_format="columns"``); :meth:`Store.write` is safe
to call from the processor's worker threads. After the run they give the exact
answers the demo checks the sketches and the daily history against
(:meth:`Store.rows`, :meth:`Store.distinct_users`, :meth:`Store.top_channels`,
:meth:`Store.active_users`, :meth:`Store.retention`, :meth:`Store.heatmap`, ...),
over the rows written since the sink was opened. The table's columns: ``id``,
``type``, ``user_id``, ``channel_id``, ``ts`` (unix seconds) and ``guild_id``
(``NULL`` for an event without a guild). Used alone::

    from engagehub.demo.sinks import SQLiteStore

    store = SQLiteStore(Path("events.sqlite3"))
    processor.set_flush_callback(store.write, batch_format="columns")
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..processor import EventColumns

POSTGRES_TABLE = "engagehub_demo_events"
"""The table :class:`PostgresStore` writes."""

DAY = 86_400
PERIOD_DAYS = {"day": 1, "week": 7, "month": 30}
"""The days each ``active_users`` period counts, ending with the day asked about."""


class DemoError(Exception):
    """The demo cannot run as configured (e.g. ``--postgres`` without psycopg)."""


class Store:
    """The events table: bulk writes from the flush callback, exact answers after.

    One connection (``conn``, opened by the subclass; sqlite3's and psycopg 3's
    both have ``execute``), guarded by a lock: the callback runs on the processor's
    worker threads, possibly two at once. ``first_id`` is the largest id before this
    run, so the exact answers cover exactly this run's events even with ``--append``.
    """

    kind = ""
    table = "events"
    placeholder = "?"
    conn: Any

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first_id = 0

    def write(self, batch: EventColumns) -> float:
        """Writes a batch in one transaction; returns the seconds it took (lock held)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def reader(self) -> "Store":
        """Another connection to the same table, to compute exact answers at the
        same time as this one (in another thread); same :attr:`first_id`. Close it."""
        raise NotImplementedError

    def _one(self, sql: str, *params: Any) -> Any:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchone()[0]

    def _all(self, sql: str, *params: Any) -> List[tuple]:
        with self.lock:
            return self.conn.execute(self._sql(sql), params).fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

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

    def active_users_and_retention(
        self, day: int, guild_ids: Sequence[Optional[str]] = (None,), cohorts: int = 8
    ) -> Tuple[List[Tuple[int, int, int]], List[Tuple[int, int, List[int]]]]:
        """The exact active users and weekly retention cohorts of this run's events
        up to the end of day number ``day`` (UTC days since 1970-01-01), in one
        pass over the rows (one statement: a row per user, then a row per week the
        users were first seen in).

        * For each of ``guild_ids`` (``None``: every event), the distinct users
          active on ``day``, in the 7 days and in the 30 days ending with it:
          ``(day, week, month)``. A user was active in such a period iff its last
          event (in that guild) before the end of ``day`` falls in it.
        * The ``cohorts`` weekly cohorts (weeks from Monday, UTC) ending with the
          week holding ``day``, over every event: for each, its first day, its
          size (the users whose first event is in that week) and, for that week
          and each later one up to ``day``'s, how many of them were active in it.
        """
        hi = (day + 1) * DAY
        last_week = (day + 3) // 7
        first_week = last_week - cohorts + 1
        inner: List[str] = ["MIN(ts) AS first_ts"]
        inner_params: List[Any] = []
        for i, guild in enumerate(guild_ids):
            if guild is None:
                inner.append(f"MAX(ts) AS last{i}")
            else:
                inner.append(f"MAX(CASE WHEN guild_id = ? THEN ts END) AS last{i}")
                inner_params.append(guild)
        for k in range(cohorts):
            inner.append(f"MAX(CASE WHEN ts >= ? AND ts < ? THEN 1 ELSE 0 END) AS in{k}")
            week_start = (7 * (first_week + k) - 3) * DAY
            inner_params += [week_start, week_start + 7 * DAY]
        outer: List[str] = ["COUNT(*)"]
        outer_params: List[Any] = []
        outer += [f"SUM(in{k})" for k in range(cohorts)]
        for i in range(len(guild_ids)):
            for length in PERIOD_DAYS.values():
                outer.append(f"COUNT(CASE WHEN last{i} >= ? THEN 1 END)")
                outer_params.append(hi - length * DAY)
        sql = (
            # Weeks from Monday: 1970-01-01 was a Thursday, so week w starts on day 7 * w - 3.
            f"SELECT (first_ts / 86400 + 3) / 7 AS first_week, {', '.join(outer)} "
            f"FROM (SELECT {', '.join(inner)} FROM {{t}} WHERE id > ? AND ts < ? GROUP BY user_id) AS per_user "
            "GROUP BY 1"
        )
        rows = self._all(sql, *outer_params, *inner_params, self.first_id, hi)
        active_counts = [0] * (3 * len(guild_ids))
        weekly: Dict[int, List[int]] = {}
        for row in rows:
            week, size, active_in = int(row[0]), int(row[1]), [int(n) for n in row[2 : 2 + cohorts]]
            for j, n in enumerate(row[2 + cohorts :]):
                active_counts[j] += int(n)
            weekly[week] = [size] + active_in
        active = [
            (active_counts[i], active_counts[i + 1], active_counts[i + 2]) for i in range(0, len(active_counts), 3)
        ]
        retention: List[Tuple[int, int, List[int]]] = []
        for c in range(first_week, last_week + 1):
            size, *active_in = weekly.get(c, [0] * (cohorts + 1))
            retention.append((7 * c - 3, size, active_in[c - first_week :]))
        return active, retention

    def heatmap(
        self, lo: int, hi: int, channel_id: Optional[str] = None, guild_id: Optional[str] = None
    ) -> List[List[int]]:
        """Events of this run with ``lo <= ts < hi`` (in the channel and the guild
        when given) per weekday (rows, Monday first) and UTC hour (columns)."""
        where = "id > ? AND ts >= ? AND ts < ?"
        params: List[Any] = [self.first_id, lo, hi]
        if channel_id is not None:
            where, params = where + " AND channel_id = ?", params + [channel_id]
        if guild_id is not None:
            where, params = where + " AND guild_id = ?", params + [guild_id]
        # Counted per hour since 1970 (one integer to group by: cheaper than two),
        # then added up per weekday and hour of the day: 1970-01-01 was a Thursday.
        grid = [[0] * 24 for _ in range(7)]
        for hour, n in self._all(f"SELECT ts / 3600, COUNT(*) FROM {{t}} WHERE {where} GROUP BY 1", *params):
            grid[(int(hour) // 24 + 3) % 7][int(hour) % 24] += int(n)
        return grid

    def channel_counts(self, channel_ids: Sequence[str]) -> dict:
        if not channel_ids:
            return {}
        marks = ", ".join("?" for _ in channel_ids)
        sql = f"SELECT channel_id, COUNT(*) FROM {{t}} WHERE id > ? AND channel_id IN ({marks}) GROUP BY channel_id"
        counts = {c: 0 for c in channel_ids}
        counts.update((str(c), int(n)) for c, n in self._all(sql, self.first_id, *channel_ids))
        return counts


class SQLiteStore(Store):
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
            "id INTEGER PRIMARY KEY, type TEXT, user_id TEXT, channel_id TEXT, ts INTEGER, guild_id TEXT)"
        )
        self.first_id = int(self._one("SELECT COALESCE(MAX(id), 0) FROM events"))

    def describe(self) -> str:
        return str(self.path)

    def reader(self) -> "SQLiteStore":
        other = SQLiteStore.__new__(SQLiteStore)
        Store.__init__(other)
        other.path = self.path
        # WAL: readers run alongside each other and the writer.
        other.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        other.first_id = self.first_id
        return other

    def write(self, batch: EventColumns) -> float:
        rows = zip(batch.types, batch.user_ids, batch.channel_ids, batch.timestamps, _guilds(batch))
        with self.lock:
            started = time.perf_counter()
            conn = self.conn
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT INTO events (type, user_id, channel_id, ts, guild_id) VALUES (?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return time.perf_counter() - started


def _guilds(batch: EventColumns) -> List[Optional[str]]:
    """The batch's guild ids (all ``None`` for a batch built without the column)."""
    return batch.guild_ids if batch.guild_ids is not None else [None] * len(batch.types)


_ESCAPED = ("\t", "\n", "\r", "\\")


def _copy_text(batch: EventColumns) -> Optional[str]:
    """The batch in COPY's text format (a missing guild as ``\\N``, NULL), built
    with C-level joins; ``None`` if a field holds a character the format would need
    escaped (tab, newline, CR, backslash), then the caller writes row by row and
    lets psycopg escape."""
    guilds = _guilds(batch)
    for column in (batch.types, batch.user_ids, batch.channel_ids, [g for g in guilds if g is not None]):
        joined = "".join(column)
        if any(c in joined for c in _ESCAPED):
            return None
    guild_text = ["\\N" if g is None else g for g in guilds]
    fields = zip(batch.types, batch.user_ids, batch.channel_ids, map(str, batch.timestamps), guild_text)
    return "\n".join(map("\t".join, fields)) + "\n" if batch.types else ""


class PostgresStore(Store):
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
                "type TEXT NOT NULL, user_id TEXT NOT NULL, channel_id TEXT NOT NULL, ts BIGINT NOT NULL, "
                "guild_id TEXT)"
            )
        self.first_id = int(self._one("SELECT COALESCE(MAX(id), 0) FROM {t}"))

    def reader(self) -> "PostgresStore":
        import psycopg

        other = PostgresStore.__new__(PostgresStore)
        Store.__init__(other)
        other.dsn = self.dsn
        other.conn = psycopg.connect(self.dsn, autocommit=True)
        other.first_id = self.first_id
        return other

    def describe(self) -> str:
        info = self.conn.info
        return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname} table {self.table}"

    def write(self, batch: EventColumns) -> float:
        rows = zip(batch.types, batch.user_ids, batch.channel_ids, batch.timestamps, _guilds(batch))
        with self.lock:
            started = time.perf_counter()
            with self.conn.transaction(), self.conn.cursor() as cur:
                with cur.copy(f"COPY {self.table} (type, user_id, channel_id, ts, guild_id) FROM STDIN") as copy:
                    block = _copy_text(batch)
                    if block is not None:
                        copy.write(block)
                    else:
                        write_row = copy.write_row
                        for row in rows:
                            write_row(row)
            return time.perf_counter() - started


__all__ = ["POSTGRES_TABLE", "DemoError", "PostgresStore", "SQLiteStore", "Store"]
