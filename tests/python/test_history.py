"""The daily history end to end (issue 22): active users by day, week and month,
retention cohorts by day and week, activity heatmaps, per guild and overall,
against exact answers computed here over a generated workload (users joining
over weeks with varied activity, three guilds and events without one):

* in process, with the event clock and with the wall clock, pushed one by one
  (str and int guilds, keyword and positional) and in batches (tuples, dicts);
* after a restart on a journal (clean close, then reopen);
* shared: several writer processes (``EventStreamProcessor(redis=)``) against a
  real redis-server, read by ``SharedAnalytics``, equal to the exact answers;
* bad input: unknown periods, days outside the history, a processor without
  history, wrong types: ``InvalidArgument`` / ``InvalidType``, nothing changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import engagehub as eh
from engagehub import Cohort, EventStreamProcessor

DAY = 86400
WEEKS = 9
FIRST_DAY = 20_454  # 2026-01-01, a Thursday
GUILDS = ["g-one", "g-two", 733_112_488_812_347_392]  # the last one as discord.py gives it
Event = Tuple[str, str, int, Optional[Any]]  # user, channel, ts, guild


def workload(seed: int, users: int, first_day: int, days: int) -> List[Event]:
    """Users joining over ``days``: each has a home guild (or none), a join day and
    an activity level, and is active on a random subset of the days after."""
    rng = random.Random(seed)
    events: List[Event] = []
    for u in range(users):
        join = first_day + int(rng.random() ** 0.7 * days)
        p_active = rng.choice([0.05, 0.2, 0.5, 0.9])
        home = rng.choice(GUILDS + [None])
        for day in range(join, first_day + days):
            if day != join and rng.random() > p_active:
                continue
            for _ in range(rng.randint(1, 3)):
                ts = day * DAY + rng.randrange(DAY)
                guild = home if rng.random() < 0.85 else rng.choice(GUILDS + [None])
                events.append((f"user-{u}", f"ch-{rng.randrange(6)}", ts, guild))
    rng.shuffle(events)  # out of order, as several producers push
    return events


def key(guild: Any) -> Optional[str]:
    return None if guild is None else str(guild)


class Exact:
    """Exact answers over a list of events."""

    def __init__(self, events: List[Event]) -> None:
        self.days: Dict[Optional[str], Dict[str, Set[int]]] = defaultdict(lambda: defaultdict(set))
        self.heat: Dict[Tuple[Optional[str], Optional[str], int, int], int] = defaultdict(int)
        for user, channel, ts, guild in events:
            day = ts // DAY
            for scope in {None, key(guild)}:
                self.days[scope][user].add(day)
                for ch in (None, channel):
                    self.heat[(scope, ch, day, ts % DAY // 3600)] += 1

    def active(self, day: int, length: int, guild: Optional[str]) -> int:
        return sum(1 for days in self.days[guild].values() if any(day - length < d <= day for d in days))

    def retention(self, period: str, n: int, now_day: int, guild: Optional[str]) -> List[Cohort]:
        of = (lambda d: (d + 3) // 7) if period == "week" else (lambda d: d)
        start = (lambda p: p * 7 - 3) if period == "week" else (lambda p: p)
        last = of(now_day)
        out = []
        for c in range(n):
            p = last - n + 1 + c
            members = [days for days in self.days[guild].values() if of(min(days)) == p]
            size = len(members)
            retained = [
                (sum(1 for days in members if any(of(d) == p + k for d in days)) / size if size else 0.0)
                for k in range(n - c)
            ]
            out.append(Cohort(dt.date(1970, 1, 1) + dt.timedelta(days=start(p)), size, retained))
        return out

    def heatmap(self, days: int, now_day: int, channel: Optional[str], guild: Optional[str]) -> List[List[int]]:
        grid = [[0] * 24 for _ in range(7)]
        for d in range(now_day - days + 1, now_day + 1):
            for h in range(24):
                grid[(d + 3) % 7][h] += self.heat.get((guild, channel, d, h), 0)
        return grid


def date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=day)


def push_all(p: EventStreamProcessor, events: List[Event]) -> None:
    """A third one by one (keyword and positional guilds), a third as tuples, a
    third as dicts."""
    third = len(events) // 3
    for i, (user, channel, ts, guild) in enumerate(events[:third]):
        if i % 2:
            assert p.push_event("message", user, channel, ts, guild_id=guild)
        else:
            assert p.push_event("message", user, channel, ts, None, guild)
    rows = [("message", u, c, ts, g) for u, c, ts, g in events[third : 2 * third]]
    assert p.push_many(rows) == len(rows)
    dicts: List[Any] = [
        {"type": "message", "user_id": u, "channel_id": c, "timestamp": ts, "guild_id": g}
        for u, c, ts, g in events[2 * third :]
    ]
    assert p.push_many(dicts) == len(dicts)
    p.flush()


def check_all(reader: Any, exact: Exact, now_day: int, now: Optional[int], span: int = 35) -> None:
    """Every query, per guild and overall, against the exact answers (``reader``:
    a processor or a SharedAnalytics)."""
    for guild in [None, "g-one", "g-two", GUILDS[2]]:
        g = key(guild)
        for day in range(now_day - span + 1, now_day + 1):
            for period, length in (("day", 1), ("week", 7), ("month", 30)):
                want = exact.active(day, length, g)
                assert reader.active_users(date(day), period, guild_id=guild) == want, (guild, day, period)
        for period, n in (("week", 8), ("day", 10)):
            got = reader.retention(period, n, now=now, guild_id=guild)
            want = exact.retention(period, n, now_day, g)
            assert [(c.start, c.size) for c in got] == [(c.start, c.size) for c in want], (guild, period)
            for a, b in zip(got, want):
                assert a.retained == pytest.approx(b.retained), (guild, period, a.start)
                assert a.size == 0 or a.retained[0] == 1.0
        for channel in (None, "ch-2"):
            assert reader.activity_heatmap(28, now=now, channel_id=channel, guild_id=guild) == exact.heatmap(
                28, now_day, channel, g
            ), (guild, channel)


@pytest.fixture(scope="module")
def weeks() -> Tuple[List[Event], Exact]:
    events = workload(1, 1500, FIRST_DAY, WEEKS * 7)
    return events, Exact(events)


def test_event_clock_answers_are_exact_per_guild_and_overall(weeks):
    events, exact = weeks
    now = max(ts for _, _, ts, _ in events)
    with EventStreamProcessor(1 << 16, 2, 500, 50, clock="event_time") as p:
        push_all(p, events)
        assert p.now() == now
        check_all(p, exact, now // DAY, now)
        check_all(p, exact, now // DAY, None, span=3)  # now=None: the processor's clock
        # The day forms: a datetime (its UTC date), an ISO string, a date.
        day = now // DAY
        want = exact.active(day, 7, None)
        evening = dt.datetime.combine(date(day) - dt.timedelta(days=1), dt.time(23, 0))
        assert p.active_users(evening.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))), "week") == want
        assert p.active_users(date(day).isoformat(), "week") == want
        # An unknown guild has no users and no events.
        assert p.active_users(date(day), guild_id="nobody") == 0
        assert p.activity_heatmap(7, guild_id="nobody") == [[0] * 24 for _ in range(7)]


def test_week_and_day_boundaries_count_where_the_utc_calendar_says():
    # Sunday 23:59:59 and Monday 00:00:00 UTC are in different weeks; one user
    # active on both is retained into the Monday's week.
    monday = dt.date(2026, 2, 2)
    day = (monday - dt.date(1970, 1, 1)).days
    events = [
        ("sun", "c", day * DAY - 1, None),  # Sunday 23:59:59: week before
        ("sun", "c", day * DAY, None),  # Monday 00:00:00
        ("mon", "c", day * DAY + 3599, "g"),  # Monday 00:59:59
        ("mon", "c", day * DAY + 3600, "g"),  # Monday 01:00:00
    ]
    with EventStreamProcessor(num_threads=0, clock="event_time") as p:
        for user, channel, ts, guild in events:
            p.push_event("m", user, channel, ts, guild_id=guild)
        p.flush()
        assert p.active_users(monday) == 2
        assert p.active_users(monday - dt.timedelta(days=1)) == 1
        assert p.active_users(monday, "week") == 2
        cohorts = p.retention("week", 2)
        assert [(c.start, c.size, c.retained) for c in cohorts] == [
            (monday - dt.timedelta(days=7), 1, [1.0, 1.0]),
            (monday, 1, [1.0]),
        ]
        grid = p.activity_heatmap(2)
        assert grid[6][23] == 1 and grid[0][0] == 2 and grid[0][1] == 1 and sum(map(sum, grid)) == 4
        assert p.activity_heatmap(2, guild_id="g")[0][:2] == [1, 1]


def test_wall_clock_answers_are_exact_for_the_last_days():
    today = int(time.time()) // DAY
    rng = random.Random(7)
    events = [
        (f"u{rng.randrange(300)}", f"ch-{rng.randrange(3)}", (today - rng.randrange(20)) * DAY + rng.randrange(3600),
         rng.choice(GUILDS + [None]))
        for _ in range(4000)
    ]
    events = [e for e in events if e[2] <= time.time()]
    exact = Exact(events)
    with EventStreamProcessor(1 << 14, 1, 200, 50) as p:  # clock="wall"
        push_all(p, events)
        for guild in (None, "g-two", GUILDS[2]):
            for day in range(today - 10, today + 1):
                assert p.active_users(date(day), "week", guild_id=guild) == exact.active(day, 7, key(guild))
            assert p.activity_heatmap(14, guild_id=guild) == exact.heatmap(14, today, None, key(guild))
            got = p.retention("day", 5, guild_id=guild)
            assert [(c.start, c.size) for c in got] == [
                (c.start, c.size) for c in exact.retention("day", 5, today, key(guild))
            ]


def test_a_restart_on_the_journal_answers_as_before(tmp_path, weeks):
    events, exact = weeks
    events = events[: len(events) // 2]
    exact = Exact(events)
    now = max(ts for _, _, ts, _ in events)
    journal = tmp_path / "p.journal"
    with EventStreamProcessor(1 << 16, 2, 500, 50, clock="event_time", journal=journal) as p:
        push_all(p, events)
        before = (p.active_users(date(now // DAY), "month"), p.retention("week", 8, now=now))
    with EventStreamProcessor(1 << 16, 2, 500, 50, clock="event_time", journal=journal) as p:
        assert (p.active_users(date(now // DAY), "month"), p.retention("week", 8, now=now)) == before
        check_all(p, exact, now // DAY, now, span=10)


def test_bad_questions_are_refused_clearly_and_change_nothing():
    with EventStreamProcessor(num_threads=0, clock="event_time", history_days=30) as p:
        ts = (FIRST_DAY + 40) * DAY
        p.push_event("m", "u", "c", ts, guild_id="g")
        p.flush()
        today = date(FIRST_DAY + 40)
        cases = [
            (lambda: p.active_users(today, "year"), eh.InvalidArgument, "period"),
            (lambda: p.active_users(today - dt.timedelta(days=30)), eh.InvalidArgument, "outside the kept history"),
            (lambda: p.active_users(today + dt.timedelta(days=1)), eh.InvalidArgument, "outside the kept history"),
            (lambda: p.active_users("2026-13-01"), eh.InvalidArgument, "YYYY-MM-DD"),
            (lambda: p.active_users(20_000), eh.InvalidType, "datetime.date"),
            (lambda: p.active_users(today, guild_id=1.5), eh.InvalidType, "guild_id"),
            (lambda: p.retention("month"), eh.InvalidArgument, "period"),
            (lambda: p.retention("week", 0), eh.InvalidArgument, "cohorts"),
            (lambda: p.retention("week", "8"), eh.InvalidType, "cohorts"),
            (lambda: p.retention("week", 10), eh.InvalidArgument, "history"),  # 10 weeks > 30 days
            (lambda: p.activity_heatmap(31), eh.InvalidArgument, "days"),
            (lambda: p.activity_heatmap(0), eh.InvalidArgument, "days"),
            (lambda: p.activity_heatmap(7, channel_id=5), eh.InvalidType, "channel_id"),
            (lambda: p.push_event("m", "u", "c", ts, guild_id="x" * 1025), eh.InvalidArgument, "guild_id"),
            (lambda: p.push_event("m", "u", "c", ts, guild_id=[1]), eh.InvalidType, "guild_id"),
        ]
        for call, error, words in cases:
            with pytest.raises(error, match=words):
                call()
        p.flush()
        assert p.active_users(today) == 1 and p.stats().accepted == 1
        assert sum(map(sum, p.activity_heatmap(7))) == 1
    with EventStreamProcessor(num_threads=0, history_days=0) as p:
        with pytest.raises(eh.InvalidArgument, match="history_days is 0"):
            p.active_users(dt.date.today())
    for bad in (-1, 401, True, "90"):
        with pytest.raises(eh.InvalidArgument, match="history_days"):
            EventStreamProcessor(num_threads=0, history_days=bad)


# -- shared through Redis -------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    import redis
    from engagehub import EventStreamProcessor

    socket, part = sys.argv[1], sys.argv[2]
    events = json.load(open(part))
    client = redis.Redis(unix_socket_path=socket)
    p = EventStreamProcessor(1 << 16, 1, 500, 50, clock="event_time", redis=client, namespace="hist",
                             publish_interval_ms=50, publish_timeout=60)
    rows = [("message", u, c, ts, g) for u, c, ts, g in events]
    assert p.push_many(rows) == len(rows)
    p.close()
    assert p.unpublished == 0, p.unpublished
    """
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Any]:
    pytest.importorskip("redis", reason="redis-py is not installed")
    from redis_server import RedisServer, require_server

    srv = RedisServer(require_server(pytest), persistent=False).start()
    yield srv
    srv.close()


def test_shared_answers_of_several_writer_processes_equal_the_exact_ones(tmp_path, redis_server):
    from engagehub.shared import SharedAnalytics

    events = workload(2, 600, FIRST_DAY, 6 * 7)
    exact = Exact(events)
    now = max(ts for _, _, ts, _ in events)
    # Three writers; every user's events are spread over all of them.
    parts = []
    for w in range(3):
        path = tmp_path / f"part{w}.json"
        path.write_text(json.dumps(events[w::3]))
        parts.append(path)
    env = dict(os.environ)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, redis_server.socket, str(part)], env=env) for part in parts
    ]
    for w in writers:
        assert w.wait(timeout=300) == 0
    reader = SharedAnalytics(redis_server.client(), "hist")
    check_all(reader, exact, now // DAY, now, span=14)
    # One native processor fed the union answers the same.
    with EventStreamProcessor(1 << 16, 2, 500, 50, clock="event_time") as p:
        assert p.push_many([("message", u, c, ts, g) for u, c, ts, g in events]) == len(events)
        p.flush()
        day = date(now // DAY)
        for guild in (None, "g-one", GUILDS[2]):
            assert reader.active_users(day, "month", guild_id=guild) == p.active_users(day, "month", guild_id=guild)
            assert reader.retention("week", 6, now=now, guild_id=guild) == p.retention("week", 6, now=now,
                                                                                      guild_id=guild)
