"""Benchmarks of the leaderboard shared through Redis.

Run: ``make lib-release py-fast`` then
``ENGAGEHUB_LIB=target/release/libengagehub.so PYTHONPATH=python python3
benches/shared_leaderboard_bench.py [--redis URL] [--users N] [--read-users N]``.
Without ``--redis`` it starts /usr/bin/redis-server on a free loopback port (no
persistence) and stops it at the end.

1. ``update_user`` with publishing on vs off, in the same run: two boards of the
   same users, the same random targets, rounds interleaved (off, on, off, on...);
   the publishing board's background thread publishes to Redis every 1 s during
   the measurement. Figure: median over batches of the mean ns per call in a batch
   of 1,000 calls, and the ratio.
2. Publisher throughput, ``--publish-repeats`` rounds, each of: a board with
   ``--publish-users`` distinct pending users, timed from ``publish_now()`` until
   Redis acknowledged every batch (new users); the same users updated again and
   published (increments to users Redis holds); then Redis alone in the same
   round: (a) the issue's yardstick, that many ``ZINCRBY`` of new members (short
   ids, one score) in one script; (b) the same with 18-digit ids and random
   scores, like a board's (a skiplist insert at a random place costs more); (c)
   the writes a publish makes, generated inside one script: (b) plus ``ZADD GT``
   of the users' timestamps into a second set (``{K}:last``). Medians of the
   rounds, and the ratios publisher / Redis alone; then the publisher again with
   ``publish_last_update=False`` (no ``{K}:last`` writes).
3. Shared reads at ``--read-users`` (1M): the board published once (its rate is
   printed too), then ``SharedLeaderboard.top(10)`` and ``rank(id)`` p50 (one
   round trip each), beside Redis's own ``ZRANGE 0 9 WITHSCORES`` and ``ZRANK`` on
   the same key in the same run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis

from engagehub import Leaderboard
from engagehub._native import LIBRARY_PATH
from engagehub.leaderboard import FAST_UPDATES
from engagehub.shared import SharedLeaderboard
from engagehub.shared.leaderboard import keys_of

BATCH = 1_000
NOW = int(time.time())


def start_server():
    d = tempfile.mkdtemp(prefix="eh-bench-redis-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0", proc, d


def ids_for(n, rng):
    return [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(n)]


def batch_mean_ns(fn, chunk):
    t = time.perf_counter_ns()
    for args in chunk:
        fn(*args)
    return (time.perf_counter_ns() - t) / len(chunk)


def bench_update(client, n, batches):
    rng = random.Random(1)
    ids = ids_for(n, rng)
    off = Leaderboard(max_users=0)
    on = Leaderboard(max_users=0, redis=client, key="bench-update", publish_interval_ms=1000)
    # Publishing on, the thread idle: the native cost alone.
    idle = Leaderboard(max_users=0, redis=client, key="bench-update-idle", publish_interval_ms=3_600_000)
    boards = (("off", off), ("on", on), ("idle", idle))
    for _, board in boards:
        for i, uid in enumerate(ids):
            board.update_user(uid, rng.random() * 1000, NOW - 86_400 + i % 80_000)
    assert on.publish_now(60) and idle.publish_now(60)
    targets = [(ids[rng.randrange(n)].encode().decode(), 1.5, NOW - 3600 + i % 3000) for i in range(50 * BATCH)]
    times = {"off": [], "on": [], "idle": []}
    for b in range(batches):
        start = (b * BATCH) % (len(targets) - BATCH)
        chunk = targets[start : start + BATCH]
        order = boards[b % 3 :] + boards[: b % 3]
        for name, board in order:
            times[name].append(batch_mean_ns(board.update_user, chunk))
    stats = on.stats()
    for _, board in boards:
        board.close()
    return {name: statistics.median(t) for name, t in times.items()}, stats


def bench_publisher(client, n, key="bench-publish", again=False, **options):
    """Users applied per second: n new users, and (``again``) the same users'
    increments once more. Returns (new rate, again rate or None, ids)."""
    rng = random.Random(2)
    ids = ids_for(n, rng)
    client.delete(*keys_of(key))
    lb = Leaderboard(max_users=0, redis=client, key=key, publish_interval_ms=3_600_000, max_pending=n + 1, **options)
    rates = []
    for _ in range(2 if again else 1):
        for uid in ids:
            lb.update_user(uid, rng.random() * 1000, NOW - rng.randrange(86_400))
        rows = lb.stats().published_rows
        t = time.perf_counter()
        assert lb.publish_now(600)
        elapsed = time.perf_counter() - t
        rates.append((lb.stats().published_rows - rows) / elapsed)
    lb.close()
    return rates[0], rates[1] if again else None, ids


REDIS_ALONE_ISSUE = "for i = 1, tonumber(ARGV[1]) do redis.call('ZINCRBY', KEYS[1], '-1.5', 'b' .. i) end"
REDIS_ALONE_RANDOM = """
math.randomseed(7)
for i = 1, tonumber(ARGV[1]) do
  local id = tostring(100000000000000000 + math.random(0, 899999999) * 1000000000 + i)
  redis.call('ZINCRBY', KEYS[1], -1000 * math.random(), id)
end"""
REDIS_ALONE_WRITES = """
math.randomseed(7)
for i = 1, tonumber(ARGV[1]) do
  local id = tostring(100000000000000000 + math.random(0, 899999999) * 1000000000 + i)
  redis.call('ZINCRBY', KEYS[1], -1000 * math.random(), id)
  redis.call('ZADD', KEYS[2], 'GT', 1767225600 + math.random(0, 86399), id)
end"""


def redis_alone(client, script, n):
    keys = ["{bench-alone}:z", "{bench-alone}:last"]
    client.delete(*keys)
    t = time.perf_counter()
    client.eval(script, 2, *keys, n)
    rate = n / (time.perf_counter() - t)
    client.delete(*keys)
    return rate


def p50_us(fn, args_list):
    samples = []
    for args in args_list:
        t = time.perf_counter_ns()
        fn(*args)
        samples.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(samples)


def bench_reads(client, key, ids, calls):
    shared = SharedLeaderboard(client, key)
    z = keys_of(key)[0]
    rng = random.Random(3)
    targets = [(ids[rng.randrange(len(ids))],) for _ in range(calls)]
    shared.top(10)  # loads the script
    shared.rank(targets[0][0])
    return {
        "size": shared.size(),
        "top10": p50_us(lambda: shared.top(10), [()] * calls),
        "rank": p50_us(shared.rank, targets),
        "get_top_users(10)": p50_us(lambda: shared.get_top_users(10), [()] * calls),
        "redis ZRANGE 0 9 WITHSCORES": p50_us(lambda: client.zrange(z, 0, 9, withscores=True), [()] * calls),
        "redis ZRANK": p50_us(lambda uid: client.zrank(z, uid), targets),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", help="a Redis URL (default: start redis-server)")
    ap.add_argument("--users", type=int, default=100_000, help="board size for update_user")
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--read-users", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--update-runs", type=int, default=1)
    ap.add_argument("--update-only", action="store_true")
    ap.add_argument("--publish-users", type=int, default=200_000)
    ap.add_argument("--publish-repeats", type=int, default=3)
    args = ap.parse_args()
    proc = tmp = None
    url = args.redis
    if url is None:
        url, proc, tmp = start_server()
    client = redis.Redis.from_url(url, socket_timeout=600)  # redis-py 8 defaults to 5 s; the Redis-alone scripts run longer
    try:
        client.delete(*[k for base in ("bench-update", "bench-update-idle", "bench-publish") for k in keys_of(base)])
        print(f"library: {LIBRARY_PATH}; update_user fast path: {'yes' if FAST_UPDATES else 'no'}")
        for _ in range(args.update_runs):
            t, stats = bench_update(client, args.users, args.batches)
            print(f"update_user at {args.users:,} users: publishing off {t['off']:.0f} ns, "
                  f"on {t['on']:.0f} ns (on/off {t['on'] / t['off']:.3f}; "
                  f"{stats.published_batches} batches published during the run), "
                  f"on with the publisher idle {t['idle']:.0f} ns (idle/off {t['idle'] / t['off']:.3f})")
        if args.update_only:
            return 0
        n = args.publish_users
        rounds = []
        for _ in range(args.publish_repeats):
            new, again, _ids = bench_publisher(client, n, again=True)
            quiet = (bench_publisher(client, n, again=True, publish_last_update=False)
                     if "publish_last_update" in Leaderboard.__init__.__code__.co_varnames else (0.0, 0.0))
            rounds.append((new, again, redis_alone(client, REDIS_ALONE_ISSUE, n),
                           redis_alone(client, REDIS_ALONE_RANDOM, n), redis_alone(client, REDIS_ALONE_WRITES, n),
                           quiet[0], quiet[1]))
        med = [statistics.median(r[i] for r in rounds) for i in range(7)]
        print(f"publisher, {n:,} users, {args.publish_repeats} rounds (median; per round in brackets):")
        for i, what in enumerate(("publisher, new users", "publisher, increments to users Redis holds",
                                  "Redis alone: ZINCRBY of new members, one script (the issue's yardstick)",
                                  "Redis alone: the same, 18-digit ids and random scores",
                                  "Redis alone: a publish's writes (that + ZADD GT into {K}:last), one script",
                                  "publisher, publish_last_update=False, new users",
                                  "publisher, publish_last_update=False, increments")):
            print(f"  {what}: {med[i]:,.0f}/s [{', '.join(f'{r[i]:,.0f}' for r in rounds)}]")
        print(f"  ratios: new users / yardstick {med[0] / med[2]:.2f}, / random scores {med[0] / med[3]:.2f}, "
              f"/ a publish's writes {med[0] / med[4]:.2f}; increments / yardstick {med[1] / med[2]:.2f}, "
              f"/ random scores {med[1] / med[3]:.2f}, / a publish's writes {med[1] / med[4]:.2f}; "
              f"publish_last_update=False: new users / random scores {med[5] / med[3]:.2f}, "
              f"increments / random scores {med[6] / med[3]:.2f}")
        key = "bench-publish"
        t = time.perf_counter()
        rate, _, ids = bench_publisher(client, args.read_users, key)
        print(f"  the {args.read_users:,}-user board for the reads: published at {rate:,.0f} users/s "
              f"({time.perf_counter() - t:.1f} s with the updates)")
        reads = bench_reads(client, key, ids, args.calls)
        print(f"reads at {reads.pop('size'):,} users, p50 over {args.calls} calls (us):")
        for name, us in reads.items():
            print(f"  {name}: {us:.0f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
