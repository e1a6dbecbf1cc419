"""Journals from Python (issue 23): ``journal=`` on processors and leaderboards.

- A bot (processor with a flush callback committing rows to a database, a board
  updated from the committed rows, both journaled and publishing to Redis) is
  killed with SIGKILL at random points (fixed seed) and started again on its
  journals, many times: every update that returned is on the board after each
  restart, the shared board in Redis equals the local one exactly, the shared event
  total equals what the processor processed, and that is what the database holds
  give or take the batches in flight at each kill (never less).
- A clean close reopens exactly; the API's errors: a second handle (Busy), other
  settings (InvalidArgument naming them), another format version (Corrupt), a bad
  journal_sync.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, List

import pytest

from engagehub import Busy, Corrupt, EventStreamProcessor, InvalidArgument, InvalidType, Leaderboard

HOUR0 = 1_764_633_600

WRITER = r"""
import os, sqlite3, sys, redis, engagehub
from engagehub.shared import SharedAnalytics
jdir, sock, db, start, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
HOUR0 = 1_764_633_600
client = redis.Redis(unix_socket_path=sock)
board = engagehub.Leaderboard(decay_factor=1.0, max_users=0, redis=client, key="bot-board",
                              publish_interval_ms=20, journal=os.path.join(jdir, "board"))
conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
conn.execute("CREATE TABLE IF NOT EXISTS events (idx INTEGER PRIMARY KEY, user TEXT, channel TEXT, ts INTEGER)")

def persist(batch):
    # The database write first; the board then counts what the database holds.
    conn.execute("BEGIN")
    conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                     [(int(e["payload"]), e["user_id"], e["channel_id"], e["timestamp"]) for e in batch])
    conn.execute("COMMIT")
    for e in batch:
        board.update_user(e["user_id"], 1.0 + int(e["payload"]) % 5, e["timestamp"])

p = engagehub.EventStreamProcessor(num_threads=1, batch_size=50, buffer_size=4096, flush_interval_ms=20,
                                   clock="event_time", redis=client, namespace="bot", publish_interval_ms=20,
                                   journal=os.path.join(jdir, "processor"), overflow="block")
p.set_flush_callback(persist)
for i in range(start, start + count):
    p.push_event("message", f"u{(i * 7919) % 700}", f"c{i % 30}", HOUR0 + i // 20, str(i).encode())
    if i % 200 == 0:
        os.write(1, f"{i}\n".encode())
p.flush_now(60)
p.close()
board.close()
os.write(1, b"done\n")
"""


@pytest.fixture
def redis_server() -> Any:
    pytest.importorskip("redis")
    from redis_server import RedisServer, require_server

    srv = RedisServer(require_server(pytest)).start()
    yield srv
    srv.close()


def _run_writer(jdir: Path, sock: str, db: Path, start: int, count: int, kill_at: int = -1) -> bool:
    """Runs the bot; with ``kill_at`` >= 0 SIGKILLs it once it has pushed that
    many. True if it ran to its end."""
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(jdir), sock, str(db), str(start), str(count)],
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    finished = False
    for line in proc.stdout:
        text = line.decode().strip()
        if text == "done":
            finished = True
        elif kill_at >= 0 and int(text) >= start + kill_at:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(120)
    return finished


def test_a_bot_killed_at_random_points_loses_and_doubles_nothing(redis_server: Any, tmp_path: Path) -> None:
    from engagehub.shared import SharedAnalytics, SharedLeaderboard

    rng = random.Random(23)  # a fixed schedule: CI replays the same kills
    db = tmp_path / "bot.sqlite3"
    start = 0
    kills = 0
    for _ in range(6):
        count = 4000
        finished = _run_writer(tmp_path, redis_server.socket, db, start, count, kill_at=rng.randrange(200, 3800))
        assert not finished
        kills += 1
        # The bot comes back and goes on from the rows its database has.
        with sqlite3.connect(db) as conn:
            start = (conn.execute("SELECT MAX(idx) FROM events").fetchone()[0] or -1) + 1
    assert _run_writer(tmp_path, redis_server.socket, db, start, 2000)
    client = redis_server.client()
    with sqlite3.connect(db) as conn:
        committed = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    # The processor: reopened on its journal (the last run closed it cleanly).
    p = EventStreamProcessor(num_threads=1, clock="event_time", journal=tmp_path / "processor")
    processed = p.stats().processed
    shared = SharedAnalytics(client, "bot", check_eviction=False)
    assert shared.total_events_processed() == processed, "every processed event reached Redis exactly once"
    # What the database has, give or take what was in flight at each kill (events
    # journaled and sketched whose batch the database had not committed, pushed
    # again after the restart): never less.
    assert committed <= processed <= committed + kills * 100, (committed, processed)
    assert shared.unique_users(None) == p.unique_users(None)
    assert shared.top_channels(30) == p.top_channels(30)
    p.close()
    # The board: every update that returned, once, locally and in Redis.
    board = Leaderboard(decay_factor=1.0, max_users=0, journal=tmp_path / "board")
    local = {r.user_id: r.score for r in board.top(1000, now=HOUR0)}
    remote = {r.user_id: r.score for r in SharedLeaderboard(client, "bot-board").top(1000, now=HOUR0)}
    assert local == remote
    total = sum(local.values())
    assert total > 0 and math.isclose(total, sum(remote.values()))
    board.close()


def test_dead_letters_of_every_life_of_a_journaled_writer_add_up_in_redis(redis_server: Any, tmp_path: Path) -> None:
    """The native dead-lettered count starts at 0 each time a processor opens
    (the processed count comes back from the journal): each life publishes its own,
    and Redis holds the sum."""
    from engagehub.errors import BatchFailed
    from engagehub.shared import SharedAnalytics

    def fail(batch: Any) -> None:
        raise BatchFailed("database down (test)")

    client = redis_server.client()
    for life, n in enumerate((5, 3)):
        with EventStreamProcessor(num_threads=0, clock="event_time", max_retries=0, journal=tmp_path / "p",
                                  redis=client, namespace="lives", publish_timeout=30) as p:
            p.set_flush_callback(fail)
            p.push_many([("m", f"u{i}", "c", HOUR0 + 10 * life + i) for i in range(n)])
            p.flush_now(30)
            assert p.stats().dead_lettered == n
    shared = SharedAnalytics(client, "lives", check_eviction=False)
    assert (shared.total_events_processed(), shared.events_dead_lettered()) == (8, 8)


def test_a_clean_close_reopens_exactly(tmp_path: Path) -> None:
    events = [("message", f"u{i % 300}", f"c{i % 17}", HOUR0 + i) for i in range(20_000)]
    with EventStreamProcessor(num_threads=2, clock="event_time", buffer_size=32768, journal=tmp_path / "p") as p:
        assert p.push_many(events) == len(events)
        p.flush_now(30)
        before = (p.stats().processed, p.unique_users(None), p.unique_users(3600), p.top_channels(10))
    with EventStreamProcessor(num_threads=2, clock="event_time", journal=tmp_path / "p") as p:
        assert (p.stats().processed, p.unique_users(None), p.unique_users(3600), p.top_channels(10)) == before
        assert p.stats().journal_replayed == 0 and p.stats().journal_torn == 0
    with Leaderboard(decay_factor=0.5, decay_period_secs=60.0, journal=tmp_path / "b") as lb:
        for i in range(5000):
            lb.update_user(f"u{i % 300}", 1.0 + i % 7, HOUR0 + i * 6)
        before_board = [(r.user_id, r.score, r.last_update) for r in lb.top(300, now=HOUR0 + 30_000)]
        assert lb.stats().rebases > 0
    with Leaderboard(decay_factor=0.5, decay_period_secs=60.0, journal=tmp_path / "b") as lb:
        assert [(r.user_id, r.score, r.last_update) for r in lb.top(300, now=HOUR0 + 30_000)] == before_board


def test_journal_errors_are_typed_and_name_what_differs(tmp_path: Path) -> None:
    lb = Leaderboard(decay_factor=0.9, journal=tmp_path / "b")
    lb.update_user("a", 1.0)
    with pytest.raises(Busy, match="in use by another handle"):
        Leaderboard(decay_factor=0.9, journal=tmp_path / "b")
    lb.close()  # releases the journal at once (not when the object is collected)
    with pytest.raises(InvalidArgument, match="decay_factor: journal 0.9, this handle 0.95"):
        Leaderboard(journal=tmp_path / "b")
    with pytest.raises(InvalidArgument, match="belongs to a leaderboard"):
        EventStreamProcessor(journal=tmp_path / "b")
    checkpoint = tmp_path / "b" / "checkpoint"
    data = bytearray(checkpoint.read_bytes())
    data[8] = 77
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(Corrupt, match="format version 77"):
        Leaderboard(decay_factor=0.9, journal=tmp_path / "b")
    with pytest.raises(InvalidType):
        Leaderboard(journal=tmp_path / "c", journal_sync="often")
    with pytest.raises(InvalidArgument):
        Leaderboard(journal=tmp_path / "c", journal_sync=0)
    # Every change synced before its call returns: slower, the same state.
    with Leaderboard(journal=tmp_path / "d", journal_sync="always") as always:
        always.update_user("x", 2.0, HOUR0)
    with Leaderboard(journal=tmp_path / "d") as again:
        assert again.rank("x", now=HOUR0).score == 2.0


def test_a_killed_board_recovers_every_update_that_returned(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, engagehub
        lb = engagehub.Leaderboard(decay_factor=1.0, journal={str(tmp_path / 'b')!r})
        for i in range(100_000):
            lb.update_user(f"u{{i % 1000}}", 1.0, {HOUR0})
            if i % 1000 == 999:
                os.write(1, f"{{i + 1}}\\n".encode())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    returned = 0
    for line in proc.stdout:
        returned = int(line)
        if returned >= 30_000:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    with Leaderboard(decay_factor=1.0, journal=tmp_path / "b") as lb:
        total = sum(r.score for r in lb.top(1000, now=HOUR0))
        # Every update before the last report returned; the ones after it, up to
        # the kill, may be there too.
        assert returned <= total <= returned + 1000 + 5000, (returned, total)
        assert total == int(total) and lb.stats().journal_replayed > 0
