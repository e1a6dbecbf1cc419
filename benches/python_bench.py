"""Python-level benchmarks of the engagehub package (what a Django or discord.py
service pays per call).

Run: ``make bench-python`` (builds the release library and the compiled cffi module).

Method: each figure is the median, over many batches, of the mean time per call in
a batch of 1,000 calls (timing single calls would mostly measure the timer on this
machine). Targets are uniformly random existing users with 18-digit ids.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import threading
import time

import engagehub
from engagehub import Leaderboard
from engagehub._native import LIBRARY_PATH, MODE
from engagehub.leaderboard import FAST_UPDATES

T0 = 1_767_225_600
BATCH = 1_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def per_call_ns(fn, args_list, batches: int) -> float:
    """Median over batches of the mean ns per call."""
    means = []
    n = len(args_list)
    for b in range(batches):
        start = (b * BATCH) % (n - BATCH)
        chunk = args_list[start : start + BATCH]
        t = time.perf_counter_ns()
        for args in chunk:
            fn(*args)
        means.append((time.perf_counter_ns() - t) / BATCH)
    return statistics.median(means)


def bench_leaderboard(sizes: list[int], batches: int) -> list[tuple]:
    rows = []
    rng = random.Random(1)
    for n in sizes:
        ids = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(n)]
        before = rss_bytes()
        board = Leaderboard(max_users=0)
        add = board.add
        for i, uid in enumerate(ids):
            add(uid, rng.random() * 1000, T0 + i % 86_400)
        rss_per_user = (rss_bytes() - before) / n
        heap_per_user = board.stats().heap_bytes / n
        # Fresh copies of the target ids, made in the order they are used: a
        # service updates the user whose id it just received (a new, cache-hot str),
        # so the loop must not charge the board for a cache miss into a million
        # strings allocated long ago.
        targets = [(ids[rng.randrange(n)].encode().decode(), 1.5, T0 + 86_400 + i) for i in range(50 * BATCH)]
        board.set_time_source(lambda: T0 + 2 * 86_400)
        update = per_call_ns(board.update_user, targets, batches)
        # The same calls through cffi alone (what update_user costs without the
        # compiled fast path), measured right after on the same board.
        update_cffi = per_call_ns(board._update_user_cffi, targets, batches)
        top = per_call_ns(board.get_top_users, [(10,)] * (2 * BATCH), batches)
        rank = per_call_ns(board.get_user_rank, [(t[0],) for t in targets], batches)
        rows.append((n, update, update_cffi, top, rank, heap_per_user, rss_per_user))
        board.close()
        del ids, targets
    return rows


def bench_push(n: int, rounds: int) -> dict:
    """Events/s of push_event in a loop and of push_many (lists of 1,000 4-tuples).

    The processor has a large ring and no callback (batches are discarded by the
    worker), so the figure is the producer's cost; median over rounds."""
    rng = random.Random(2)
    users = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(10_000)]
    events = [("message", users[i % 10_000], f"channel-{i % 97}", T0 + i // 100) for i in range(n)]
    chunks = [events[i : i + BATCH] for i in range(0, n, BATCH)]
    single, many = [], []
    for _ in range(rounds):
        with engagehub.EventStreamProcessor(1 << 21, 1, 1000, 1000) as p:
            push = p.push_event
            t = time.perf_counter()
            for kind, user, channel, ts in events:
                push(kind, user, channel, ts)
            single.append(n / (time.perf_counter() - t))
            assert p.stats().dropped == 0
            p.flush_now()
        with engagehub.EventStreamProcessor(1 << 21, 1, 1000, 1000) as p:
            push_many = p.push_many
            t = time.perf_counter()
            for chunk in chunks:
                push_many(chunk)
            many.append(n / (time.perf_counter() - t))
            assert p.stats().dropped == 0
    return {"push_event": statistics.median(single), "push_many": statistics.median(many)}


def bench_delivery(n: int, rounds: int, batch_format: str) -> float:
    """Events/s delivered into a Python callback that counts them.

    The first batch blocks the worker until all ``n`` events are queued, then the
    clock runs from its release until ``flush_now`` returns: worker pops, batching,
    decoding into Python objects and the callback itself."""
    rng = random.Random(3)
    users = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(10_000)]
    events = [("message", users[i % 10_000], f"channel-{i % 97}", T0 + i // 100) for i in range(n)]
    rates = []
    for _ in range(rounds):
        gate, count = threading.Event(), [0]

        def callback(batch) -> None:
            gate.wait()
            count[0] += len(batch)

        with engagehub.EventStreamProcessor(1 << 21, 1, 5000, 1000) as p:
            p.set_flush_callback(callback, batch_format=batch_format)
            for i in range(0, n, BATCH):
                p.push_many(events[i : i + BATCH])
            t = time.perf_counter()
            gate.set()
            p.flush_now()
            rates.append(n / (time.perf_counter() - t))
            assert count[0] == n
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--batches", type=int, default=101)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["leaderboard", "processor"], default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"engagehub {engagehub.__version__}, cffi {MODE} mode ({LIBRARY_PATH})")
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print()
    if args.only in (None, "processor"):
        print(f"EventStreamProcessor ({args.events:,} events, median of {args.rounds} rounds, events/s)")
        push = bench_push(args.events, args.rounds)
        print("| measure | events/s |")
        print("|---|---:|")
        print(f"| push_event loop | {push['push_event']:,.0f} |")
        print(f"| push_many (1,000 per call) | {push['push_many']:,.0f} |")
        for form in ("columns", "tuples", "dicts"):
            rate = bench_delivery(args.events, args.rounds, form)
            print(f"| delivery to a Python callback, batch_format={form!r} | {rate:,.0f} |")
        print()
    if args.only in (None, "leaderboard"):
        print("Leaderboard (median of 1,000-call batch means, ns per call)")
        print(f"update_user fast path (engagehub._engagehub_fast): {'yes' if FAST_UPDATES else 'not built'}")
        print("| users | update_user | update_user via cffi | get_top_users(10) | get_user_rank | heap B/user | RSS B/user |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, update, update_cffi, top, rank, heap, rss in bench_leaderboard(sizes, args.batches):
            print(f"| {n:,} | {update:,.0f} | {update_cffi:,.0f} | {top:,.0f} | {rank:,.0f} | {heap:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
