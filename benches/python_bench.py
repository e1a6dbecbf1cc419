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
import time

import engagehub
from engagehub import Leaderboard
from engagehub._native import LIBRARY_PATH, MODE

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
        targets = [(ids[rng.randrange(n)], 1.5, T0 + 86_400 + i) for i in range(50 * BATCH)]
        board.set_time_source(lambda: T0 + 2 * 86_400)
        update = per_call_ns(board.update_user, targets, batches)
        top = per_call_ns(board.get_top_users, [(10,)] * (2 * BATCH), batches)
        rank = per_call_ns(board.get_user_rank, [(t[0],) for t in targets], batches)
        rows.append((n, update, top, rank, heap_per_user, rss_per_user))
        board.close()
        del ids, targets
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--batches", type=int, default=101)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"engagehub {engagehub.__version__}, cffi {MODE} mode ({LIBRARY_PATH})")
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print()
    print("Leaderboard (median of 1,000-call batch means, ns per call)")
    print("| users | update_user | get_top_users(10) | get_user_rank | heap B/user | RSS B/user |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, update, top, rank, heap, rss in bench_leaderboard(sizes, args.batches):
        print(f"| {n:,} | {update:,.0f} | {top:,.0f} | {rank:,.0f} | {heap:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
