"""Python-level benchmarks of the engagehub package (what a Django or discord.py
service pays per call).

Run: ``make bench-python`` (builds the release library and the compiled cffi module);
``--only processor`` for the event pipeline (every figure as a ratio to an empty
Python call, see below), ``--only top`` for its top-channels queries alone;
``--compare --cpp-path DIR`` runs the pipeline cases on
engagehub and on the C++ extension's ``cpp_event_processor`` module found in DIR
(built by you; this script builds nothing), interleaved, a fresh process each.

Method: each figure is the median, over many batches, of the mean time per call in
a batch of 1,000 calls (timing single calls would mostly measure the timer on this
machine). Targets are uniformly random existing users with 18-digit ids.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
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


# -- event pipeline: every figure as a ratio to the empty-call floor ----------------
#
# The floor: an empty Python function called N times with the same four arguments
# as push_event, in the same loop shape, measured in the same process right before
# each case (so a ratio compares like with like on a noisy machine). The cases:
#
# push_event   N calls with the same four arguments (str, str, str, int); no
#              callback, a ring large enough that nothing is dropped.
# push_event_block  the same under overflow="block" (the ring never fills: the
#              cost of the blocking class's push when there is room).
# push_many    N events as lists of 1,000 4-tuples; reported as a rate and as a
#              multiple of push_event's rate.
# push_many_block  the same under overflow="block" (the ring never fills: the
#              cost of the blocking push_many when there is room).
# dicts        N push_event calls (10,000 users, 97 channels, distinct objects
#              from a prepared list) into buffer_size=65536, num_threads=2,
#              batch_size=1000, flush_interval_ms=100, with a dict callback that
#              reads every field of every event (as bulk_create does); the clock
#              runs from the first push until flush_now() returns. Nothing may be
#              dropped.
# columns      the same events pushed with push_many (1,000 per call) and
#              delivered as batch_format="columns" to a callback that reads every
#              event; end to end as above.
# top10        get_top_channels(10) after the dicts case's million events: median
#              of 1,000 calls, in microseconds.
# top_channels get_top_channels(10) and top_channels(10, window_secs=3600) with 0, 1
#              and 2 workers, each after 200,000 events (now) over 2,000 channels
#              and a flush: the median over batches of the mean µs per call in a
#              batch of 1,000 (as the leaderboard's figures), through the compiled
#              descriptors and through the general (cffi) methods, i.e. the code
#              before them, alternately in the same process; the floor is an
#              empty function called with the same arguments in the same loop.
#              "first after flush": one query right after a flush that changed
#              the counts (the native merge it pays), median of 21; "after an
#              empty flush": the same after a flush that delivered nothing.
# *_cffi       push_event and dicts through the general paths (cffi calls and the
#              Python decoder): the code before the compiled fast paths.
#
# Each case can run in a fresh process (--case) on engagehub or on the C++
# extension (--impl cpp, imported from --cpp-path); --compare runs them
# interleaved, one fresh process per case and implementation, --pairs times.

PIPELINE_CONFIG = (65536, 2, 1000, 100)
_KEEP: list = []
CASES = (
    "push_event",
    "push_event_block",
    "push_many",
    "push_many_block",
    "dicts",
    "columns",
    "push_event_cffi",
    "dicts_cffi",
    "top_channels",
)
CPP_CASES = ("push_event", "dicts")


def _empty(a, b, c, d) -> None:
    pass


def _same_args_loop(fn, n: int, cpu: list | None = None) -> float:
    kind, user, channel, ts = "message", "123456789012345678", "channel-7", T0
    c = time.thread_time()
    t = time.perf_counter()
    for _ in itertools.repeat(None, n):
        fn(kind, user, channel, ts)
    elapsed = time.perf_counter() - t
    if cpu is not None:
        cpu.append(time.thread_time() - c)
    return elapsed


def _empty_top(k, window_secs=None) -> None:
    pass


def _top_call_us(fn, kwargs: dict, batches: int) -> float:
    """Median over batches of the mean µs per call of fn(10, **kwargs)."""
    means = []
    for _ in range(batches):
        t = time.perf_counter_ns()
        for _ in itertools.repeat(None, BATCH):
            fn(10, **kwargs)
        means.append((time.perf_counter_ns() - t) / BATCH / 1000)
    return statistics.median(means)


def _top_channels_case(out: dict) -> None:
    """The top_channels case (see the comment above CASES)."""
    rows = [("message", str(100_000_000_000_000_000 + i % 10_000), f"channel-{i % 2000}", 0) for i in range(200_000)]
    for workers in (0, 1, 2):
        p = engagehub.EventStreamProcessor(65536, workers, 1000, 100)
        for i in range(0, len(rows), BATCH):
            p.push_many(rows[i : i + BATCH])
        p.flush_now()
        calls = (
            ("all", {}, p.get_top_channels, p._get_top_channels_general),
            ("window", {"window_secs": 3600}, p.top_channels, p._top_channels_general),
        )
        for name, kwargs, compiled, general_path in calls:
            floor, fast, general = [], [], []
            for _ in range(5):  # alternately, so load changes hit all three alike
                floor.append(_top_call_us(_empty_top, kwargs, 21))
                fast.append(_top_call_us(compiled, kwargs, 21))
                general.append(_top_call_us(general_path, kwargs, 21))
            key = f"top_{name}_w{workers}"
            out[key + "_floor_us"] = statistics.median(floor)
            out[key + "_us"] = statistics.median(fast)
            out[key + "_general_us"] = statistics.median(general)
            assert p.top_channels(10, **kwargs) == p._top_channels_general(10, **kwargs)
        first = []
        for j in range(21):
            p.push_many([("message", "u", f"channel-{j}", 0)] * (j + 1))
            p.flush_now()
            t = time.perf_counter_ns()
            p.get_top_channels(10)
            first.append((time.perf_counter_ns() - t) / 1000)
        out[f"top_first_w{workers}_us"] = statistics.median(first)
        idle = []
        for _ in range(21):  # a flush that delivered nothing new
            p.flush_now()
            t = time.perf_counter_ns()
            p.get_top_channels(10)
            idle.append((time.perf_counter_ns() - t) / 1000)
        out[f"top_idle_w{workers}_us"] = statistics.median(idle)
        p.close()


def _events(n: int) -> list:
    rng = random.Random(3)
    users = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(10_000)]
    channels = [f"channel-{i}" for i in range(97)]
    return [("message", users[i % 10_000], channels[i % 97], T0 + i // 100) for i in range(n)]


def _list_loop(fn, events: list) -> None:
    for kind, user, channel, ts in events:
        fn(kind, user, channel, ts)


def run_case(case: str, impl: str, n: int) -> dict:
    """One case in this process: its seconds, the floor's, and the counters."""
    if impl == "cpp":
        import cpp_event_processor as module  # type: ignore[import-not-found]

        Processor = module.EventStreamProcessor
    else:
        Processor = engagehub.EventStreamProcessor
    floor_cpu: list = []
    floor = _same_args_loop(_empty, n, floor_cpu)
    out: dict = {"case": case, "impl": impl, "n": n, "floor_s": floor}
    # CPU seconds too: on a loaded machine a thread waits for a core, and the wall
    # clock then charges the scheduler. Pushes: the pushing thread's CPU time;
    # deliveries: the whole process's (workers included), against the floor's.
    cpu0 = time.process_time()
    if case in ("push_event", "push_event_block", "push_event_cffi"):
        p = Processor(1 << 21, 1, 1000, 1000, **({"overflow": "block"} if case == "push_event_block" else {}))
        push_cpu: list = []
        push = p._push_event_general if case == "push_event_cffi" else p.push_event
        out["s"] = _same_args_loop(push, n, push_cpu)
        out["cpu_s"] = push_cpu[0]
        out["dropped"] = p.events_dropped()
        if impl != "cpp":  # the C++ flush_now waits forever without a callback
            p.flush_now()
    elif case in ("push_many", "push_many_block"):
        events = _events(n)
        chunks = [events[i : i + BATCH] for i in range(0, n, BATCH)]
        p = Processor(1 << 21, 1, 1000, 1000, **({"overflow": "block"} if case == "push_many_block" else {}))
        c = time.thread_time()
        t = time.perf_counter()
        for chunk in chunks:
            p.push_many(chunk)
        out["s"] = time.perf_counter() - t
        out["cpu_s"] = time.thread_time() - c
        out["dropped"] = p.events_dropped()
        p.flush_now()
    elif case in ("dicts", "dicts_cffi", "columns"):
        if case == "dicts_cffi":  # the general paths: cffi pushes and the Python decoder
            from engagehub._processor import decode

            decode.build_batch = None
        events = _events(n)
        seen = [0]

        def read_dicts(batch) -> None:
            rows = [(e["type"], e["user_id"], e["channel_id"], e["timestamp"]) for e in batch]
            seen[0] += len(rows)

        def read_columns(batch) -> None:
            rows = list(zip(batch.types, batch.user_ids, batch.channel_ids, batch.timestamps))
            seen[0] += len(rows)

        # columns: push_many outruns the GIL-bound deliveries (~20M events/s against
        # a few million), so under "drop" it would drop; "block" waits for room
        # with the GIL released instead, as a producer that must not drop would.
        p = Processor(*PIPELINE_CONFIG, **({"overflow": "block"} if case == "columns" else {}))
        if case != "columns":
            p.set_flush_callback(read_dicts)
            gc.collect()
            cpu0 = time.process_time()
            t = time.perf_counter()
            _list_loop(p.push_event if case == "dicts" else p._push_event_general, events)
            p.flush_now()
        else:
            p.set_flush_callback(read_columns, batch_format="columns")
            chunks = [events[i : i + BATCH] for i in range(0, n, BATCH)]
            gc.collect()
            cpu0 = time.process_time()
            t = time.perf_counter()
            for chunk in chunks:
                p.push_many(chunk)
            p.flush_now()
        out["s"] = time.perf_counter() - t
        out["cpu_s"] = time.process_time() - cpu0
        out["dropped"] = p.events_dropped()
        out["delivered"] = seen[0]
        if case != "columns":
            top = [0.0] * 1000
            for i in range(len(top)):
                t = time.perf_counter_ns()
                p.get_top_channels(10)
                top[i] = (time.perf_counter_ns() - t) / 1000
            out["top10_us"] = statistics.median(top)
    elif case == "top_channels":
        t = time.perf_counter()
        _top_channels_case(out)
        out["s"] = out["cpu_s"] = time.perf_counter() - t
        out["dropped"] = 0
        p = None
    else:
        raise ValueError(case)
    if p is None:
        pass
    elif impl == "cpp":
        _KEEP.append(p)  # its destructor waits forever for a flush without a callback
    else:
        p.close()
    out["ratio"] = out["s"] / floor
    out["floor_cpu_s"] = floor_cpu[0]
    out["cpu_ratio"] = out["cpu_s"] / floor_cpu[0]
    out["events_per_s"] = n / out["s"]
    return out


def _fresh(case: str, impl: str, n: int, cpp_path: str | None) -> dict:
    env = dict(os.environ)
    if impl == "cpp":
        env["PYTHONPATH"] = cpp_path + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--case", case, "--impl", impl, "--events", str(n)]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pipeline_table(results: list[dict]) -> None:
    raw = os.environ.get("ENGAGEHUB_BENCH_JSON")
    if raw:  # every run's figures, one JSON object a line
        with open(raw, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    print("| case | impl | runs | median s | floor s | ratio to floor (min–max) | CPU ratio | events/s | dropped (max) | extra |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    tops = [r for r in results if r["case"] == "top_channels"]
    results = [r for r in results if r["case"] != "top_channels"]
    keys = []
    for r in results:
        if (r["case"], r["impl"]) not in keys:
            keys.append((r["case"], r["impl"]))
    for case, impl in keys:
        rs = [r for r in results if r["case"] == case and r["impl"] == impl]
        extra = ""
        if "top10_us" in rs[0]:
            extra = f"get_top_channels(10) {statistics.median(r['top10_us'] for r in rs):.1f} µs"
        if "delivered" in rs[0]:
            extra += f"; delivered (min) {min(r['delivered'] for r in rs):,}"
        print(
            f"| {case} | {impl} | {len(rs)} | {statistics.median(r['s'] for r in rs):.3f} | "
            f"{statistics.median(r['floor_s'] for r in rs):.3f} | "
            f"{statistics.median(r['ratio'] for r in rs):.2f} "
            f"({min(r['ratio'] for r in rs):.2f}–{max(r['ratio'] for r in rs):.2f}) | "
            f"{statistics.median(r['cpu_ratio'] for r in rs):.2f} | "
            f"{statistics.median(r['events_per_s'] for r in rs):,.0f} | {max(r['dropped'] for r in rs):,} | {extra} |"
        )
    if tops:
        _top_table(tops)
    pe = [r["events_per_s"] for r in results if r["case"] == "push_event" and r["impl"] == "engagehub"]
    pm = [r["events_per_s"] for r in results if r["case"] == "push_many" and r["impl"] == "engagehub"]
    if pe and pm:
        print(f"\npush_many / push_event rate (medians): {statistics.median(pm) / statistics.median(pe):.2f}x")


def _top_table(tops: list[dict]) -> None:
    med = lambda key: statistics.median(r[key] for r in tops)  # noqa: E731
    print(f"\ntop channels, µs per call (medians of {len(tops)} processes; floor: an empty call, same arguments)")
    print("| call | workers | compiled | general (cffi) | floor | compiled / floor | first after flush | after an empty flush |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, call in (("all", "get_top_channels(10)"), ("window", "top_channels(10, window_secs=3600)")):
        for w in (0, 1, 2):
            key = f"top_{name}_w{w}"
            first = f"{med(f'top_first_w{w}_us'):.0f} | {med(f'top_idle_w{w}_us'):.1f}" if name == "all" else " |"
            print(
                f"| `{call}` | {w} | {med(key + '_us'):.2f} | {med(key + '_general_us'):.2f} | "
                f"{med(key + '_floor_us'):.3f} | {med(key + '_us') / med(key + '_floor_us'):.1f}× | {first} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--batches", type=int, default=101)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["leaderboard", "processor", "top"], default=None)
    parser.add_argument("--case", choices=CASES, help="run one pipeline case in this process; print JSON")
    parser.add_argument("--impl", choices=["engagehub", "cpp"], default="engagehub")
    parser.add_argument("--cpp-path", help="folder holding the C++ extension's cpp_event_processor module")
    parser.add_argument("--compare", action="store_true", help="engagehub vs the C++ extension, interleaved")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.impl, args.events)), flush=True)
        if args.impl == "cpp":
            os._exit(0)  # its destructor may wait for a flush that never comes
        return 0
    if args.compare:
        if not args.cpp_path:
            parser.error("--compare needs --cpp-path")
        print(f"engagehub {engagehub.__version__}, cffi {MODE} mode, vs the C++ extension from {args.cpp_path}; "
              f"{args.pairs} interleaved pairs, a fresh process per case")
        results = []
        for _ in range(args.pairs):
            for case in CASES:
                impls = ["engagehub", "cpp"] if case in CPP_CASES else ["engagehub"]
                for impl in impls:
                    results.append(_fresh(case, impl, args.events, args.cpp_path))
        _pipeline_table(results)
        return 0
    if args.only == "top":
        print(f"engagehub {engagehub.__version__}, cffi {MODE} mode ({LIBRARY_PATH}); {args.rounds} fresh processes")
        _top_table([_fresh("top_channels", "engagehub", args.events, None) for _ in range(args.rounds)])
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"engagehub {engagehub.__version__}, cffi {MODE} mode ({LIBRARY_PATH})")
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print()
    if args.only in (None, "processor"):
        from engagehub.processor import FAST_PUSH

        print(f"EventStreamProcessor ({args.events:,} events; fast paths: {'yes' if FAST_PUSH else 'not built'}; "
              f"{args.rounds} fresh processes per case)")
        results = [_fresh(case, "engagehub", args.events, None) for _ in range(args.rounds) for case in CASES]
        _pipeline_table(results)
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
