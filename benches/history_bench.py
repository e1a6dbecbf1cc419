"""Issue 22's figures: the daily history's push cost, query latency, memory, and
exact SQL over the same rows, measured side by side in one run.

Run: ``make bench-history`` (release build), or by hand with ENGAGEHUB_LIB and
PYTHONPATH set: ``python3 benches/history_bench.py [--users N] [--rounds R]``.

1. **Push cost** (rounds interleaved in one process, each case against the
   empty-call floor measured right before it, as benches/python_bench.py does;
   the floor is called the same way, ``guild_id=`` keyword included):
   ``push_event`` with four arguments into a processor without the history
   (``history_days=0``) and with it (the default), ``push_event(...,
   guild_id=...)`` with a str and with an int guild, ``push_many`` of 4-tuples
   and of 5-tuples with a guild; and end to end (pushed with ``push_event``,
   delivered as dicts to a callback reading every field, until ``flush()``
   returns) without the history and with it and guilds.
2. **State and queries**: ``--users`` users (default 1M) joining over 90 days, each
   active on a random share of the days after (``--active`` on average), in three
   guilds, pushed with ``push_many`` into one processor (event clock). Then the
   history's size (``eh_processor_history_stats``: records and heap bytes; the
   process's RSS growth), and the median latency from Python of
   ``active_users`` (day, week, month; overall and one guild), ``retention``
   (8 weekly cohorts) and ``activity_heatmap`` (28 days).
3. **Exact SQL over the same rows** (SQLite in memory, indexed on day): the same
   three answers, timed, and checked equal to the processor's.
4. **Shared**: with ``--redis-server PATH`` (a redis-server binary; default: the
   one on PATH, skipped if none), ``--shared-users`` users published by one writer
   to a redis-server on a unix socket, then the median latency of the same three
   queries through ``SharedAnalytics`` against a ``PING``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import engagehub
from engagehub import EventStreamProcessor
from engagehub._native import _call, ffi, lib

DAY = 86400
LAST_DAY = 20_515  # 2026-03-03
GUILDS = ["guild-a", "guild-b", "guild-c"]


def _empty(a: Any, b: Any, c: Any, d: Any, guild_id: Any = None) -> None:
    pass


def _loop(fn: Callable[..., Any], n: int, *args: Any, **kwargs: Any) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn(*args, **kwargs)
    return time.perf_counter() - t


def push_costs(n: int, rounds: int) -> Dict[str, List[float]]:
    """Each case's seconds / the floor's, per round."""
    ts = LAST_DAY * DAY + 3600
    out: Dict[str, List[float]] = {}

    def record(name: str, seconds: float, floor: float) -> None:
        out.setdefault(name, []).append(seconds / floor)
        out.setdefault(name + " (ns per event)", []).append(seconds / n * 1e9)

    rows4 = [("message", f"u{i % 5000}", f"c{i % 97}", ts) for i in range(1000)]
    rows5 = [("message", f"u{i % 5000}", f"c{i % 97}", ts, GUILDS[i % 3]) for i in range(1000)]
    for _ in range(rounds):
        for name, history, kwargs in (
            ("push_event, no history", 0, {}),
            ("push_event, history", 90, {}),
            ("push_event guild_id=str, history", 90, {"guild_id": "guild-a"}),
            ("push_event guild_id=int, history", 90, {"guild_id": 733112488812347392}),
        ):
            p = EventStreamProcessor(1 << 21, 1, 1000, 1000, clock="event_time", history_days=history)
            # The floor: an empty function called the same way (the keyword too).
            floor = _loop(_empty, n, "message", "u1", "general", ts, **kwargs)
            record(name, _loop(p.push_event, n, "message", "u1", "general", ts, **kwargs), floor)
            p.close()
        for name, rows in (("push_many 4-tuples, history", rows4), ("push_many 5-tuples (guild), history", rows5)):
            p = EventStreamProcessor(1 << 21, 1, 1000, 1000, clock="event_time")
            floor = _loop(_empty, n, "message", "u1", "general", ts)
            t = time.perf_counter()
            for _ in range(n // len(rows)):
                p.push_many(rows)
            record(name, time.perf_counter() - t, floor)
            p.close()
        for name, history, guilds in (
            ("end to end dicts, no history", 0, False),
            ("end to end dicts, history", 90, False),
            ("end to end dicts, history + guilds", 90, True),
        ):
            events = [("message", f"u{i % 10000}", f"c{i % 97}", ts + i // 1000) for i in range(n)]
            seen = [0]

            def read(batch: List[Dict[str, Any]]) -> None:
                rows = [(e["type"], e["user_id"], e["channel_id"], e["timestamp"], e.get("guild_id")) for e in batch]
                seen[0] += len(rows)

            p = EventStreamProcessor(65536, 2, 1000, 100, clock="event_time", history_days=history)
            p.set_flush_callback(read)
            floor = _loop(_empty, n, "message", "u1", "general", ts, **({"guild_id": "g"} if guilds else {}))
            gc.collect()
            t = time.perf_counter()
            if guilds:
                for i, (k, u, c, s) in enumerate(events):
                    p.push_event(k, u, c, s, guild_id=GUILDS[i % 3])
            else:
                for k, u, c, s in events:
                    p.push_event(k, u, c, s)
            p.flush()
            record(name, time.perf_counter() - t, floor)
            assert seen[0] + p.stats().dropped == n
            p.close()
    return out


def workload(users: int, active: float, seed: int = 5) -> List[Tuple[str, str, str, int, str]]:
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        join = LAST_DAY - int(rng.random() * 90)
        span = LAST_DAY - join + 1
        share = min(1.0, active / span * rng.uniform(0.2, 1.8))
        guild = GUILDS[u % 3]
        user = str(10**17 + u * 7919)
        for day in range(join, LAST_DAY + 1):
            if day == join or rng.random() < share:
                rows.append(("message", user, f"ch-{rng.randrange(50)}", day * DAY + rng.randrange(DAY), guild))
    return rows


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median µs of one call."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(samples)


def queries(reader: Any, day: dt.date, now: int, reps: int) -> Dict[str, float]:
    return {
        "active_users(day)": timed(lambda: reader.active_users(day), reps),
        "active_users(day, 'month')": timed(lambda: reader.active_users(day, "month"), reps),
        "active_users(day, 'week', guild_id)": timed(
            lambda: reader.active_users(day, "week", guild_id="guild-b"), reps
        ),
        "retention('week', 8)": timed(lambda: reader.retention("week", 8, now=now), reps),
        "activity_heatmap(28)": timed(lambda: reader.activity_heatmap(28, now=now), reps),
        "activity_heatmap(28, channel_id)": timed(
            lambda: reader.activity_heatmap(28, now=now, channel_id="ch-7"), reps
        ),
    }


def sql_side_by_side(rows: List[Tuple[str, str, str, int, str]], p: EventStreamProcessor, now: int) -> Dict[str, Any]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE events (user_id TEXT, channel_id TEXT, ts INTEGER, day INTEGER, guild_id TEXT)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", ((u, c, t, t // DAY, g) for _, u, c, t, g in rows))
    db.execute("CREATE INDEX events_day ON events (day, user_id)")
    db.commit()
    last = now // DAY
    out: Dict[str, Any] = {}

    def run(name: str, sql: str, args: Tuple[Any, ...], check: Callable[[List[Any]], bool]) -> None:
        t = time.perf_counter()
        got = db.execute(sql, args).fetchall()
        out[name] = ((time.perf_counter() - t) * 1e6, check(got))

    run("active_users(day)", "SELECT COUNT(DISTINCT user_id) FROM events WHERE day = ?", (last,),
        lambda r: r[0][0] == p.active_users(dt.date(1970, 1, 1) + dt.timedelta(days=last)))
    run("active_users(day, 'month')", "SELECT COUNT(DISTINCT user_id) FROM events WHERE day BETWEEN ? AND ?",
        (last - 29, last), lambda r: r[0][0] == p.active_users(dt.date(1970, 1, 1) + dt.timedelta(days=last), "month"))
    week = (last + 3) // 7
    cohorts = p.retention("week", 8, now=now)
    run(
        "retention('week', 8)",
        """WITH firsts AS (SELECT user_id, (MIN(day) + 3) / 7 AS fw FROM events GROUP BY user_id),
                weeks AS (SELECT DISTINCT user_id, (day + 3) / 7 AS w FROM events WHERE day >= ?)
           SELECT f.fw, w.w, COUNT(*) FROM firsts f JOIN weeks w USING (user_id)
           WHERE f.fw > ? GROUP BY f.fw, w.w""",
        ((week - 7) * 7 - 3, week - 8),
        lambda r: all(
            round(c.retained[k] * c.size) == dict(((a, b), n) for a, b, n in r).get((week - 7 + i, week - 7 + i + k), 0)
            for i, c in enumerate(cohorts)
            for k in range(len(c.retained))
        ),
    )
    grid = p.activity_heatmap(28, now=now)
    run(
        "activity_heatmap(28)",
        "SELECT (day + 3) % 7, ts % 86400 / 3600, COUNT(*) FROM events WHERE day > ? GROUP BY 1, 2",
        (last - 28,),
        lambda r: all(grid[d][h] == n for d, h, n in r) and sum(n for *_, n in r) == sum(map(sum, grid)),
    )
    db.close()
    return out


def shared_latency(server: str, users: int, reps: int) -> Dict[str, float]:
    # The test suite's own redis-server helper: a server on a unix socket in a
    # temporary directory, waited for, stopped and removed by close().
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
    from redis_server import RedisServer

    from engagehub.shared import SharedAnalytics

    srv = RedisServer(server, persistent=False).start()
    try:
        client = srv.client()
        rows = workload(users, 4.0, seed=9)
        now = max(r[3] for r in rows)
        with EventStreamProcessor(1 << 20, 1, 1000, 1000, clock="event_time", redis=client, namespace="b",
                                  publish_timeout=600) as p:
            for i in range(0, len(rows), 1000):
                if p.push_many(rows[i : i + 1000]) < len(rows[i : i + 1000]):
                    raise SystemExit("dropped: make the ring larger")
            p.flush()
        shared = SharedAnalytics(client, "b")
        out = {"PING": timed(client.ping, reps)}
        out.update(queries(shared, dt.date(1970, 1, 1) + dt.timedelta(days=now // DAY), now, reps))
        return out
    finally:
        srv.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--active", type=float, default=4.0, help="active days per user, on average")
    parser.add_argument("--push-events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=2001)
    parser.add_argument("--shared-users", type=int, default=20_000)
    parser.add_argument("--redis-server", default=shutil.which("redis-server"))
    parser.add_argument("--skip", default="", help="comma-separated: push,state,sql,shared")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"engagehub {engagehub.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    if "push" not in skip:
        costs = push_costs(args.push_events, args.rounds)
        print(f"\npush cost ({args.push_events:,} events, {args.rounds} rounds interleaved): ratio to the empty-call")
        print("floor called the same way, and ns per event")
        print("| case | ratio: median (min–max) | ns per event: median |")
        print("|---|---|---|")
        for name, ratios in costs.items():
            if name.endswith("(ns per event)"):
                continue
            ns = statistics.median(costs[name + " (ns per event)"])
            print(f"| {name} | {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {ns:.0f} |")

    if skip >= {"state", "sql"}:
        return 0
    t = time.perf_counter()
    rows = workload(args.users, args.active)
    print(f"\nworkload: {args.users:,} users over 90 days, {len(rows):,} events, made in {time.perf_counter() - t:.1f} s")
    gc.collect()
    rss0 = rss_mib()
    p = EventStreamProcessor(1 << 20, 2, 1000, 1000, clock="event_time", overflow="block", block_timeout_ms=60_000)
    t = time.perf_counter()
    for i in range(0, len(rows), 1000):
        assert p.push_many(rows[i : i + 1000]) == len(rows[i : i + 1000])
    p.flush()
    elapsed = time.perf_counter() - t
    now = max(r[3] for r in rows)
    stats = ffi.new("eh_history_stats *", {"struct_size": ffi.sizeof("eh_history_stats")})
    _call(lib.eh_processor_history_stats, p._h(), stats)
    print(f"pushed and processed in {elapsed:.1f} s ({len(rows) / elapsed:,.0f} events/s, 2 workers)")
    print("| measure | figure |")
    print("|---|---|")
    print(f"| user records (overall + per guild) | {stats.user_records:,} |")
    print(f"| history heap | {stats.heap_bytes / 2**20:.1f} MiB |")
    print(f"| per user (heap / users) | {stats.heap_bytes / args.users:.0f} bytes |")
    print(f"| per record | {stats.heap_bytes / stats.user_records:.0f} bytes |")
    print(f"| per user and day of history | {stats.heap_bytes / args.users / 90:.2f} bytes |")
    print(f"| process max RSS growth (processor, Python rows included) | {rss_mib() - rss0:.0f} MiB |")

    if "state" not in skip:
        day = dt.date(1970, 1, 1) + dt.timedelta(days=now // DAY)
        lat = queries(p, day, now, args.reps)
        floor = timed(lambda: _empty(1, 2, 3, 4), args.reps)
        print(f"\nin-process query latency from Python, median of {args.reps} (empty call: {floor:.2f} µs)")
        print("| query | µs |")
        print("|---|---|")
        for name, us in lat.items():
            print(f"| {name} | {us:.1f} |")

    if "sql" not in skip:
        sql = sql_side_by_side(rows, p, now)
        print("\nexact SQL over the same rows (SQLite in memory, indexed on (day, user_id)), one run each")
        print("| query | SQL ms | equal to the processor's |")
        print("|---|---|---|")
        for name, (us, same) in sql.items():
            print(f"| {name} | {us / 1000:.1f} | {'yes' if same else 'NO'} |")
    p.close()

    if "shared" not in skip and args.redis_server:
        lat = shared_latency(args.redis_server, args.shared_users, min(args.reps, 1001))
        print(f"\nshared query latency (SharedAnalytics, unix socket, {args.shared_users:,} users), median µs")
        print("| query | µs |")
        print("|---|---|")
        for name, us in lat.items():
            print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
