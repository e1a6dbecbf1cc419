"""Shared analytics through Redis: what publishing costs the pushers, and what the
shared reads cost next to Redis's own commands (README, "Shared through Redis").

Run: ``ENGAGEHUB_LIB=target/release/libengagehub.so PYTHONPATH=python python3
benches/shared_bench.py`` (``--redis URL`` to use a running server; otherwise a
throwaway ``redis-server`` is started on a free loopback port, no persistence).

1. Push rate with publishing off and on (``redis=``, publishing every
   ``--interval`` ms, default 100: 10x the default rate), wall clock, in one run:
   two processors alive at once, one publishing, ``push_many`` of 1,000-event
   chunks into each in turn (the order alternating), each chunk timed: the median
   ns per event of each, over ``--chunks`` chunks, repeated ``--repeats`` times
   (median of the medians, and the ratio). Then whole runs of ``--events`` events,
   off and on alternated ``--rounds`` times, wall and CPU time (the median of each).
2. Reads at 60 minute keys holding ``--users`` distinct users in all: p50 of
   ``SharedAnalytics.unique_users(3600)`` beside Redis's own 60-key ``PFCOUNT`` in
   the same run; ``top_channels(10)`` (all time, one ``EVALSHA``) and
   ``top_channels(10, 3600)`` (60 minute sets) beside ``ZUNION`` of the same keys.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, List

import redis

from engagehub import EventStreamProcessor, HyperLogLog
from engagehub._native import LIBRARY_PATH
from engagehub.shared import SharedAnalytics


def start_server() -> Any:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="eh-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def p50_pair_ms(a: Callable[[], Any], b: Callable[[], Any], n: int) -> Any:
    """p50 of ``a`` and of ``b``, called alternately (a loaded machine's drift hits both)."""
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def lib_flush(p: Any) -> None:
    """The native drain alone (no publish)."""
    from engagehub._native import check, lib

    check(lib.eh_processor_flush(p._h(), 30_000))


def push_rate(client: Any, publish: bool, events: int, channels: int, spread: int, interval_ms: int) -> Any:
    """Events per second of wall time and per second of the process's CPU time (all
    threads: the pusher, the workers, the publisher) while pushing."""
    kwargs = {"redis": client, "namespace": "bench-push", "publish_interval_ms": interval_ms} if publish else {}
    p = EventStreamProcessor(buffer_size=1 << 20, num_threads=1, **kwargs)
    now = int(time.time())
    chunks = [
        [("message", str(10**17 + (i * 7919 + j) % 200_000), f"ch{(i + j) % channels}", now - (i * 1000 + j) % spread)
         for j in range(1000)]
        for i in range(events // 1000)
    ]
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        p.push_many(chunk)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    p.close()
    return events / seconds, events / cpu


def interleaved_push(client: Any, chunks: int, channels: int, spread: int, interval_ms: int) -> Any:
    """Wall-clock ns per event of ``push_many`` (1,000-event chunks, 200 distinct
    ones reused) into a processor publishing every ``interval_ms`` and into one not
    publishing, both alive, ``chunks`` chunks each, alternated (which goes first
    alternates too), so the machine's drift hits both alike. The mean over the
    chunks (the push rate, publishes included; a median would hide them), the
    publishes made meanwhile, and the events either refused (a full ring would
    spoil the comparison)."""
    off = EventStreamProcessor(buffer_size=1 << 20, num_threads=1)
    on = EventStreamProcessor(buffer_size=1 << 20, num_threads=1, redis=client, namespace="bench-push-il",
                              publish_interval_ms=interval_ms)
    now = int(time.time())
    data = [
        [("message", str(10**17 + (i * 7919 + j) % 200_000), f"ch{(i + j) % channels}", now - (i * 1000 + j) % spread)
         for j in range(1000)]
        for i in range(200)
    ]
    spent = {"off": 0, "on": 0}
    pair = (("off", off), ("on", on))
    batches = on._publisher.counters.batches
    for i in range(chunks):
        chunk = data[i % len(data)]
        for name, p in pair if i % 2 == 0 else pair[::-1]:
            t = time.perf_counter_ns()
            p.push_many(chunk)
            spent[name] += time.perf_counter_ns() - t
    batches = on._publisher.counters.batches - batches
    dropped = off.stats().dropped + on.stats().dropped
    off.close()
    on.close()
    n = chunks * 1000
    return spent["off"] / n, spent["on"] / n, batches, dropped


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default=None)
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--channels", type=int, default=200, help="channels per minute set")
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--interval", type=int, default=100, help="publish_interval_ms (default 100: 10x the default rate)")
    ap.add_argument("--skip-reads", action="store_true")
    ap.add_argument("--chunks", type=int, default=4000, help="1,000-event chunks per processor, interleaved test")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the interleaved test")
    args = ap.parse_args()
    proc = None
    url = args.redis
    if url is None:
        proc, url = start_server()
    client = redis.Redis.from_url(url)
    try:
        print(f"library {LIBRARY_PATH}; Redis {client.info()['redis_version']} at {url}; python {sys.version.split()[0]}")

        # 1a. wall clock, interleaved chunk by chunk (the figure for the <= 5% bar).
        for spread, label in ((1, "timestamps now"), (3600, "timestamps over the last hour")):
            runs = [interleaved_push(client, args.chunks, args.channels, spread, args.interval)
                    for _ in range(args.repeats)]
            m_off = statistics.median(r[0] for r in runs)
            m_on = statistics.median(r[1] for r in runs)
            ratios = [r[1] / r[0] for r in runs]
            print(f"push_many wall clock, {label}: two processors, 1,000-event chunks alternated, "
                  f"{args.chunks:,} each x {args.repeats} repeats, mean per repeat, median of repeats: "
                  f"publishing off {m_off:.1f} ns/event, on {m_on:.1f} ns/event (on/off median "
                  f"{statistics.median(ratios):.3f}; per repeat {', '.join(f'{x:.3f}' for x in ratios)}; "
                  f"{sum(r[2] for r in runs)} publishes during them; events refused {sum(r[3] for r in runs)})")

        # 1. push rate, publishing off / on, alternated; timestamps all "now" (a live
        #    bot: one minute changes per publish), then spread over the last hour
        #    (every publish reads all 60 minutes: the worst case).
        for spread, label in ((1, "timestamps now"), (3600, "timestamps over the last hour")):
            off: List[Any] = []
            on: List[Any] = []
            for _ in range(args.rounds):
                off.append(push_rate(client, False, args.events, args.channels, spread, args.interval))
                on.append(push_rate(client, True, args.events, args.channels, spread, args.interval))
            print(f"push_many, 1,000-event chunks, {args.events:,} events x {args.rounds} rounds (median), {label}:")
            for i, what in ((0, "wall"), (1, "CPU")):
                m_off = statistics.median(r[i] for r in off)
                m_on = statistics.median(r[i] for r in on)
                print(f"  per {what:<4} second: publishing off {m_off:>11,.0f} ev/s, on {m_on:>11,.0f} ev/s "
                      f"({(m_on / m_off - 1) * 100:+.1f}%; every {args.interval} ms)")

        # 1b. the publisher's own cost per publish (CPU time of the publishing
        #     thread: what it can take from the pushers' GIL), load-independent.
        for spread, label in ((1, "1 minute changed"), (3600, "all 60 minutes changed")):
            p = EventStreamProcessor(buffer_size=1 << 16, redis=client, namespace="bench-cost",
                                     publish_interval_ms=10**9)
            costs = []
            for r in range(21):
                now = int(time.time())
                p.push_many([("message", str(10**17 + r * 1000 + j), f"ch{j % args.channels}", now - j % spread)
                             for j in range(2000)])
                p.flush_now()  # natively drained and published
                p.push_many([("message", str(10**17 + r * 1000 + j), f"ch{j % args.channels}", now - j % spread)
                             for j in range(2000)])
                lib_flush(p)
                cpu, wall = time.thread_time(), time.perf_counter()
                assert p._publisher.publish(time.monotonic() + 30, force=True)
                costs.append((time.thread_time() - cpu, time.perf_counter() - wall))
            p.close()
            c_ms = statistics.median(c for c, _ in costs) * 1e3
            w_ms = statistics.median(w for _, w in costs) * 1e3
            print(f"one publish, {label}, {args.channels} channels per minute: {c_ms:.2f} ms CPU "
                  f"({w_ms:.2f} ms wall with the round trip): {c_ms / 10:.2f}% of a core at the "
                  f"default 1000 ms interval")

        if args.skip_reads:
            return 0
        # 2. reads at 60 minute keys.
        ns = "bench-read"
        stale = list(client.scan_iter(match="{" + ns + "}:*"))
        if stale:
            client.delete(*stale)
        now = int(time.time()) // 60 * 60
        per_minute = args.users // 60
        pipe = client.pipeline(transaction=False)
        for i in range(60):
            minute = now - i * 60
            hll = HyperLogLog()
            hll.update(str(10**17 + i * per_minute + u) for u in range(per_minute))
            pipe.set(f"{{{ns}}}:uu:{minute}", hll.to_redis())
            pipe.zadd(f"{{{ns}}}:ch:{minute}", {f"ch{c}": (c * 7919 + i) % 5000 + 1 for c in range(args.channels)})
        pipe.zadd(f"{{{ns}}}:ch:all", {f"ch{c}": (c * 7919) % 50000 + 1 for c in range(args.channels)})
        pipe.execute()
        shared = SharedAnalytics(client, ns)
        uu_keys = [f"{{{ns}}}:uu:{now - i * 60}" for i in range(60)]
        ch_keys = [f"{{{ns}}}:ch:{now - i * 60}" for i in range(60)]
        count = shared.unique_users(3600, now)
        assert count == client.pfcount(*uu_keys)
        rows = [
            ("SharedAnalytics.unique_users(3600)", lambda: shared.unique_users(3600, now)),
            ("Redis PFCOUNT of the 60 keys", lambda: client.pfcount(*uu_keys)),
            ("SharedAnalytics.top_channels(10)", lambda: shared.top_channels(10)),
            ("Redis ZRANGE ch:all 0 9 REV", lambda: client.zrange(f"{{{ns}}}:ch:all", 0, 9, desc=True, withscores=True)),
            ("SharedAnalytics.top_channels(10, 3600)", lambda: shared.top_channels(10, 3600, now)),
            ("Redis ZUNION of the 60 sets", lambda: client.zunion(ch_keys, withscores=True)),
        ]
        print(f"reads, 60 minute keys, {per_minute * 60:,} users ({count:,} counted), "
              f"{args.channels} channels per minute set, p50 of {args.reads}, each pair interleaved:")
        for i in range(0, len(rows), 2):
            (la, fa), (lb, fb) = rows[i], rows[i + 1]
            a, b = p50_pair_ms(fa, fb, args.reads)
            print(f"  {la:<40}{a:>8.3f} ms")
            print(f"  {lb:<40}{b:>8.3f} ms")
    finally:
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
