"""Per-guild leaderboards (issue 22): what GuildLeaderboards costs next to the
alternatives, on this machine.

Run (release library; a redis-server on the PATH or $REDIS_SERVER for (c)):

    cargo build --release
    ENGAGEHUB_LIB=$PWD/target/release/libengagehub.so PYTHONPATH=$PWD/python \\
        .venv/bin/python benches/guild_boards_bench.py

(a) update_user, ns per call: 50,000 updates (a random guild of 10,000, a random
    user of its 20, all already on their boards) into one GuildLeaderboards, the
    same updates into one Leaderboard holding every (guild, user) as one id (its
    update_user, on the compiled fast path when it is built, and its cffi path),
    and into a dict of 10,000 Leaderboards (one per guild, what a bot does
    without a group). GuildLeaderboards.update_user is a cffi call (the fast
    module is not extended to it). Each figure is python_bench.py's per_call_ns (the median over batches
    of the mean time per call in a batch of 1,000), then the median over --runs
    runs; the floor is python_bench.py's empty function of four arguments in the
    same loop. Ratios are to the floor and to the single Leaderboard.
(b) memory per board: 10,000 guilds with 1 user, with 10 users, and emptied
    (every user removed): stats().heap_bytes / boards, and the process's RSS
    growth / boards (malloc's overhead included); the same for 10,000 Leaderboard
    handles with 10 users each.
(c) publishing: 10,000 boards through the one publisher thread to a private
    redis-server on a unix socket: publish_now() of the first batch of every board
    (3 users each: it creates the shared boards) and of a round where every board
    changed (1 update each), in boards/s and rows/s (median of --runs rounds).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benches"), str(ROOT / "tests" / "python")]

import python_bench  # noqa: E402  (its floor and timing loop)
from python_bench import BATCH, T0, per_call_ns, rss_bytes  # noqa: E402

from engagehub import GuildLeaderboards, Leaderboard  # noqa: E402
from engagehub._native import LIBRARY_PATH, MODE  # noqa: E402
from engagehub.leaderboard import FAST_UPDATES  # noqa: E402

GUILDS = 10_000
USERS = 20


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, CPython {platform.python_version()}"


def guild_id(g: int) -> str:
    return str(900_000_000_000_000_000 + 7919 * g)


def user_id(u: int) -> str:
    return str(100_000_000_000_000_000 + 104_729 * u)


def bench_updates(runs: int, batches: int) -> dict:
    rng = random.Random(1)
    group = GuildLeaderboards(max_users=0)
    board = Leaderboard(max_users=0)
    boards = {guild_id(g): Leaderboard(max_users=0) for g in range(GUILDS)}
    for g in range(GUILDS):
        gid = guild_id(g)
        for u in range(USERS):
            group.update_user(gid, user_id(u), 1.0, T0)
            board.update_user(gid + ":" + user_id(u), 1.0, T0)
            boards[gid].update_user(user_id(u), 1.0, T0)
    n = 50 * BATCH
    picks = [(rng.randrange(GUILDS), rng.randrange(USERS)) for _ in range(n)]
    # Fresh str objects, made in the order they are used (as python_bench does).
    group_args = [(guild_id(g), user_id(u), 1.5, T0 + i) for i, (g, u) in enumerate(picks)]
    board_args = [(guild_id(g) + ":" + user_id(u), 1.5, T0 + i) for i, (g, u) in enumerate(picks)]
    dict_args = [(guild_id(g), user_id(u), 1.5, T0 + i) for i, (g, u) in enumerate(picks)]

    def via_dict(guild: str, user: str, points: float, ts: int) -> bool:
        return boards[guild].update_user(user, points, ts)

    floor_args = [(guild_id(0), user_id(0), 1.5, T0)] * n
    out: dict = {"floor": [], "group": [], "board": [], "board_cffi": [], "dict": []}
    for _ in range(runs):  # interleaved, so drift hits every case alike
        out["floor"].append(per_call_ns(python_bench._empty, floor_args, batches))
        out["group"].append(per_call_ns(group.update_user, group_args, batches))
        out["board"].append(per_call_ns(board.update_user, board_args, batches))
        out["board_cffi"].append(per_call_ns(board._update_user_cffi, board_args, batches))
        out["dict"].append(per_call_ns(via_dict, dict_args, batches))
    group.close()
    board.close()
    for b in boards.values():
        b.close()
    return {k: statistics.median(v) for k, v in out.items()} | {"runs": runs}


MEMORY_CASES = ("group-1", "group-10", "group-emptied", "handles-10")


def memory_case(case: str) -> tuple:
    """One case of (b), in a process of its own (freed memory stays in malloc's
    pools, so cases in one process would hide each other's growth)."""
    before = rss_bytes()
    if case.startswith("group"):
        users = 1 if case == "group-1" else 10
        group = GuildLeaderboards(max_users=0)
        for g in range(GUILDS):
            for u in range(users):
                group.update_user(guild_id(g), user_id(u), 1.0, T0)
        if case == "group-emptied":
            for g in range(GUILDS):
                for u in range(users):
                    group.remove_user(guild_id(g), user_id(u))
        s = group.stats()
        return s.heap_bytes / s.boards, (rss_bytes() - before) / GUILDS
    boards = []
    for g in range(GUILDS):
        b = Leaderboard(max_users=0)
        for u in range(10):
            b.update_user(user_id(u), 1.0, T0)
        boards.append(b)
    return sum(b.stats().heap_bytes for b in boards) / GUILDS, (rss_bytes() - before) / GUILDS


def bench_memory() -> list:
    import json
    import subprocess

    labels = {
        "group-1": "GuildLeaderboards, 1 user each",
        "group-10": "GuildLeaderboards, 10 users each",
        "group-emptied": "GuildLeaderboards, emptied (10 users removed)",
        "handles-10": "10,000 Leaderboard handles, 10 users each",
    }
    rows = []
    for case in MEMORY_CASES:
        run = subprocess.run([sys.executable, __file__, "--memory-case", case], capture_output=True, text=True,
                             check=True)
        heap, rss = json.loads(run.stdout)
        rows.append((labels[case], heap, rss))
    return rows


def bench_publish(runs: int) -> dict:
    from redis_server import RedisServer, server_binary

    if server_binary() is None:
        return {}
    out: dict = {"first": [], "round": []}
    with RedisServer(persistent=False) as server:
        client = server.client(socket_timeout=30)
        before = set(threading.enumerate())
        for run in range(runs):
            group = GuildLeaderboards(decay_factor=1.0, redis=client, key_prefix=f"bench{run}",
                                      publish_interval_ms=3_600_000, close_timeout=60)
            for g in range(GUILDS):
                for u in range(3):
                    group.update_user(guild_id(g), user_id(u), 1.0, T0)
            threads = len(set(threading.enumerate()) - before)
            t = time.perf_counter()
            assert group.publish_now(120)
            out["first"].append((time.perf_counter() - t, group.stats().published_rows))
            for g in range(GUILDS):
                group.update_user(guild_id(g), user_id(g % 3), 1.0, T0)
            rows_before = group.stats().published_rows
            t = time.perf_counter()
            assert group.publish_now(120)
            out["round"].append((time.perf_counter() - t, group.stats().published_rows - rows_before))
            group.close()
            client.flushall()
        out["threads"] = threads
        out["redis"] = client.info("server")["redis_version"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--only", choices=("updates", "memory", "publish"))
    parser.add_argument("--memory-case", choices=MEMORY_CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        import json

        print(json.dumps(memory_case(args.memory_case)))
        return 0
    print(f"machine: {machine()}")
    print(f"library: {LIBRARY_PATH} ({MODE} mode); Leaderboard fast path: {FAST_UPDATES}")
    if args.only in (None, "updates"):
        u = bench_updates(args.runs, args.batches)
        print(f"\n(a) update_user, ns per call (median of {u['runs']} runs of per_call_ns)")
        print("| case | ns/call | / floor | / one Leaderboard |")
        print("|---|---|---|---|")
        for key, label in (
            ("floor", "floor: empty Python function, 4 args"),
            ("board", "one Leaderboard, 200,000 ids (guild:user)"),
            ("board_cffi", "the same through cffi (no compiled fast path)"),
            ("group", "GuildLeaderboards, 10,000 guilds x 20 users"),
            ("dict", "dict of 10,000 Leaderboards"),
        ):
            print(f"| {label} | {u[key]:.0f} | {u[key] / u['floor']:.1f} | {u[key] / u['board']:.2f} |")
    if args.only in (None, "memory"):
        print("\n(b) memory per board, 10,000 boards")
        print("| boards | heap bytes per board (stats) | RSS growth per board |")
        print("|---|---|---|")
        for label, heap, rss in bench_memory():
            print(f"| {label} | {heap:,.0f} | {rss:,.0f} |")
    if args.only in (None, "publish"):
        p = bench_publish(args.runs)
        if not p:
            print("\n(c) skipped: no redis-server (set REDIS_SERVER)")
        else:
            print(f"\n(c) publishing 10,000 boards through {p['threads']} publisher thread "
                  f"(redis-server {p['redis']}, unix socket; median of {args.runs} rounds)")
            print("| publish | seconds | boards/s | rows/s |")
            print("|---|---|---|---|")
            for key, label in (("first", "first batch of every board (3 users each)"),
                               ("round", "every board changed (1 update each)")):
                secs = statistics.median(s for s, _ in p[key])
                rows = statistics.median(r for _, r in p[key])
                print(f"| {label} | {secs:.2f} | {GUILDS / secs:,.0f} | {rows / secs:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
