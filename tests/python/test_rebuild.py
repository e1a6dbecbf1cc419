"""Rebuilding a shared namespace or board from the application's rows (issue 23's
way back): the result equals what the writers would have published, it is swapped
in at once (a reader never sees half of it), and writers publish on top of it."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
from typing import Any, List, Tuple

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed")

from engagehub import EventStreamProcessor, Leaderboard  # noqa: E402
from engagehub.shared import SharedAnalytics, SharedLeaderboard  # noqa: E402
from engagehub.shared.rebuild import rebuild_analytics, rebuild_leaderboard  # noqa: E402
from redis_server import WAIT, RedisServer, require_server  # noqa: E402

HOUR0 = 1_764_633_600


@pytest.fixture(scope="module")
def server() -> Any:
    srv = RedisServer(require_server(pytest)).start()
    yield srv
    srv.close()


def events(n: int, seed: int) -> List[Tuple[str, str, str, int]]:
    rng = random.Random(seed)
    return [("message", f"u{rng.randrange(900)}", f"c{rng.randrange(25)}", HOUR0 + i * 5400 // n) for i in range(n)]


def dashboard(source: Any, now: int) -> Any:
    return (source.total_events_processed(), source.unique_users(None), source.unique_users(3600, now),
            source.top_channels(30), source.top_channels(30, 1800, now))


def database(rows: List[Tuple[str, str, str, int]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (kind TEXT, user_id TEXT, channel_id TEXT, ts INTEGER)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    return db


def test_a_lost_namespace_comes_back_from_the_rows(server: Any) -> None:
    client = server.client()
    evs = events(6000, 1)
    writer = EventStreamProcessor(clock="event_time", buffer_size=8192, redis=client, namespace="rb",
                                  publish_timeout=WAIT)
    assert writer.push_many(evs) == len(evs)
    writer.flush_now(WAIT)
    assert writer.publish_now(WAIT)
    shared = SharedAnalytics(client, "rb", check_eviction=False)
    now = writer.now()
    published = dashboard(shared, now)
    assert published == dashboard(writer, now)
    # Redis loses the namespace (a flush, a failover without persistence...).
    client.delete(*[k for k in client.scan_iter(match="{rb}:*") if b":pub:" not in k])
    assert shared.total_events_processed() == 0
    db = database(evs)
    n = rebuild_analytics(client, "rb", db.execute("SELECT user_id, channel_id, ts FROM events"))
    assert n == len(evs)
    assert dashboard(shared, now) == published, "the rebuild equals what the writer published"
    # The writer goes on publishing on top of it.
    more = events(500, 2)
    more = [(k, u, c, ts + 5400) for k, u, c, ts in more]
    assert writer.push_many(more) == len(more)
    writer.flush_now(WAIT)
    assert writer.publish_now(WAIT)
    assert shared.total_events_processed() == len(evs) + len(more)
    assert shared.unique_users(None) == writer.unique_users(None)
    writer.close()
    assert [k for k in client.scan_iter(match="{rb}:build:*")] == []


def test_readers_see_the_old_namespace_or_the_new_one_never_a_mix(server: Any) -> None:
    client = server.client()
    shared = SharedAnalytics(client, "rbmix", check_eviction=False)
    evs = events(4000, 3)
    now = max(ts for *_, ts in evs)
    # The old state: a wrong total, one channel, no users in the window.
    client.set("{rbmix}:events", 5)
    client.zadd("{rbmix}:ch:all", {"old": 5})

    def answers() -> Tuple[Any, Any, Any]:
        # Three reads, each one round trip: each must see one state whole (the
        # window's users merge 60 minute keys; the swap moves them all at once).
        return (shared.total_events_processed(), tuple(shared.top_channels(3)), shared.unique_users(3600, now))

    old = answers()
    seen: List[Tuple[Any, Any, Any]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(answers())

    t = threading.Thread(target=read)
    t.start()
    try:
        rebuild_analytics(client, "rbmix", [(u, c, ts) for _, u, c, ts in evs])
        new = answers()
    finally:
        stop.set()
        t.join(WAIT)
    assert new[0] == len(evs) and new[2] > 0 and new != old
    for i in range(3):
        assert {s[i] for s in seen} <= {old[i], new[i]}, i


def test_a_lost_board_comes_back_from_the_rows(server: Any) -> None:
    client = server.client()
    rng = random.Random(4)
    points = [(f"p{rng.randrange(300)}", float(rng.randint(1, 20)), HOUR0 - rng.randrange(86400 * 3))
              for _ in range(4000)]
    config = {"decay_factor": 0.9, "decay_period_secs": 86400.0}
    ref = Leaderboard(max_users=0, **config)
    with Leaderboard(max_users=0, redis=client, key="rbb", **config) as lb:
        for row in points:
            lb.update_user(*row)
            ref.update_user(*row)
    client.delete(*client.keys("{rbb}:[zml]*"))
    shared = SharedLeaderboard(client, "rbb")
    assert shared.size() == 0
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE points (user_id TEXT, points REAL, ts INTEGER)")
    db.executemany("INSERT INTO points VALUES (?, ?, ?)", points)
    n = rebuild_leaderboard(client, "rbb", db.execute("SELECT user_id, points, ts FROM points"), **config)
    assert n == ref.size() == shared.size()
    got, want = shared.top(300, now=HOUR0), ref.top(300, now=HOUR0)
    assert [(r.user_id, r.rank, r.last_update) for r in got] == [(r.user_id, r.rank, r.last_update) for r in want]
    assert all(math.isclose(g.score, w.score, rel_tol=1e-9) for g, w in zip(got, want))
    # Writers go on: their increments add to the rebuilt board.
    with Leaderboard(max_users=0, redis=client, key="rbb", **config) as lb:
        lb.update_user("p1", 100.0, HOUR0)
    ref.update_user("p1", 100.0, HOUR0)
    assert math.isclose(shared.rank("p1", now=HOUR0).score, ref.rank("p1", now=HOUR0).score, rel_tol=1e-9)
    ref.close()


@pytest.mark.parametrize("bad", [
    ("u", "c"),                      # two fields
    ("", "c", HOUR0),                # empty id
    ("u", "", HOUR0),                # empty channel
    ("u", "c", "1764633600"),        # a timestamp that is not an int
    ("u", "c", -1),
    ("u", 7, HOUR0),                 # a channel that is not a str
    ("u", "c", HOUR0, 1.5),          # a guild that is not a str, an int or None
    ("u", "c", HOUR0, "g" * 1025),   # a guild id too long (refused by the native history)
])
def test_a_bad_row_changes_nothing(server: Any, bad: Tuple[Any, ...]) -> None:
    from engagehub import errors

    client = server.client()
    client.set("{rbbad}:events", 3)
    rows = [("u1", "c1", HOUR0)] * 100 + [bad]
    with pytest.raises((errors.InvalidArgument, errors.InvalidType)):
        rebuild_analytics(client, "rbbad", rows)
    assert sorted(client.scan_iter(match="{rbbad}:*")) == [b"{rbbad}:events"]
    assert client.get("{rbbad}:events") == b"3"


@pytest.mark.parametrize("bad", [("p", "ten", HOUR0), ("p", math.nan, HOUR0), ("p", True, HOUR0), ("p", 1.0)])
def test_a_bad_points_row_changes_nothing(server: Any, bad: Tuple[Any, ...]) -> None:
    from engagehub import errors

    client = server.client()
    with pytest.raises((errors.InvalidArgument, errors.InvalidType)):
        rebuild_leaderboard(client, "rbbadlb", [("p", 1.0, HOUR0), bad])
    assert list(client.scan_iter(match="{rbbadlb}*")) == []


def test_the_daily_history_comes_back_per_guild_from_rows_with_guilds(server: Any) -> None:
    # Two writers publish a month of events in three guilds (and none); Redis loses
    # the namespace; the rows (with their guild) rebuild it: every history answer
    # is the one published before, i.e. one processor's fed the rows.
    import datetime as dt

    client = server.client()
    rng = random.Random(3)
    day0 = HOUR0 // 86400 - 35
    guilds: List[Any] = ["g1", "g2", 777, None]
    rows = [
        (f"u{rng.randrange(400)}", f"c{rng.randrange(5)}", (day0 + rng.randrange(36)) * 86400 + rng.randrange(86400),
         rng.choice(guilds))
        for _ in range(5000)
    ]
    rows.sort(key=lambda r: r[2])
    for part in (rows[0::2], rows[1::2]):
        writer = EventStreamProcessor(clock="event_time", buffer_size=8192, redis=client, namespace="rbh",
                                      publish_timeout=WAIT)
        assert writer.push_many([("m", u, c, ts, g) for u, c, ts, g in part]) == len(part)
        writer.close()
        assert writer.unpublished == 0
    shared = SharedAnalytics(client, "rbh", check_eviction=False)
    now = max(r[2] for r in rows)
    day = dt.date(1970, 1, 1) + dt.timedelta(days=now // 86400)

    def history() -> Any:
        return [
            (shared.active_users(day, period, guild_id=g), shared.retention("week", 4, now=now, guild_id=g),
             shared.activity_heatmap(21, now=now, guild_id=g))
            for g in guilds
            for period in ("day", "week", "month")
        ]

    published = history()
    assert published[0][0] > 0 and published[-1][1][0].size > 0
    client.delete(*[k for k in client.scan_iter(match="{rbh}:*")])
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (user_id TEXT, channel_id TEXT, ts INTEGER, guild_id TEXT)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", [(u, c, ts, g) for u, c, ts, g in rows])
    # An int guild stored as its digits (as the processor keys it) is the same guild.
    assert rebuild_analytics(client, "rbh", db.execute("SELECT user_id, channel_id, ts, guild_id FROM events")) == 5000
    assert history() == published
    assert [k for k in client.scan_iter(match="{rbh}:build:*")] == []
