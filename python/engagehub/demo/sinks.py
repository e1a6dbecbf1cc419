"""The demo's database sinks: an events table written one batch per transaction.

:class:`SQLiteStore` (a SQLite file, ``executemany``) and :class:`PostgresStore`
(psycopg 3, one ``COPY ... FROM STDIN`` per batch) take the
:class:`~engagehub.processor.EventColumns` batches an ``EventStreamProcessor``
flush callback receives (``batch_format="columns"``); :meth:`Store.write` is safe
to call from the processor's worker threads. After the run they give the exact
answers the demo checks the sketches against (:meth:`Store.rows`,
:meth:`Store.distinct_users`, :meth:`Store.top_channels`, ...), over the rows
written since the sink was opened. Used alone::

    from engagehub.demo.sinks import SQLiteStore

    store = SQLiteStore(Path("events.sqlite3"))
    processor.set_flush_callback(store.write, batch_format="columns")
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ..processor import EventColumns

POSTGRES_TABLE = "engagehub_demo_events"
"""The table :class:`PostgresStore` writes."""


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


__all__ = ["POSTGRES_TABLE", "DemoError", "PostgresStore", "SQLiteStore", "Store"]
