"""What a journal (``journal=``) costs from Python, each case against the same run's
baseline without one (issue 23's bars: push_event and push_many within 10%,
update_user within 25%, with the default ``journal_sync=1.0``; and what a sync per
call, ``journal_sync="always"``, costs).

Run: ``make bench-journal`` (release library, compiled module). Each case runs in a
fresh process, the variants of a case interleaved (off, interval, always, off,
...), ``--rounds`` times; the table shows medians and the ratio of each variant to
the same round's run without a journal, and to the empty-call floor (an empty
Python function called with the same arguments in the same loop, measured in the
same process just before: the hot-paths issue's floor).

Cases:

* ``push_event``: N calls with the same four arguments into a ring large enough
  that nothing drops (the producer's cost; the journal is written by the worker).
* ``dicts``: N push_event calls of 10,000 users over 97 channels with a dict flush
  callback reading every field, from the first push until ``flush_now()`` returns:
  the worker's logging included.
* ``push_many``: N events as lists of 1,000 tuples, until ``flush_now()`` returns.
* ``update_user``: a board of 100,000 users; the median over batches of the mean
  time per call in a batch of 1,000 (as ``python_bench.py``'s board figures).

Journals go to a temporary directory on the filesystem of ``--dir`` (default: the
system's temporary directory); its type is printed, since ``always`` costs what
its ``fsync`` costs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

import engagehub

T0 = 1_767_225_600
BATCH = 1_000
VARIANTS = {"off": None, "interval": 1.0, "always": "always"}
CASES = ("push_event", "dicts", "push_many", "update_user")


def _empty(a, b, c, d) -> None:
    pass


def _same_args_loop(fn, n: int) -> float:
    kind, user, channel, ts = "message", "123456789012345678", "channel-7", T0
    t = time.perf_counter()
    for _ in itertools.repeat(None, n):
        fn(kind, user, channel, ts)
    return time.perf_counter() - t


def _events(n: int) -> list:
    rng = random.Random(3)
    users = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(10_000)]
    channels = [f"channel-{i}" for i in range(97)]
    return [("message", users[i % 10_000], channels[i % 97], T0 + i // 100) for i in range(n)]


def run_case(case: str, variant: str, n: int, folder: str) -> dict:
    sync = VARIANTS[variant]
    journal = None if sync is None else tempfile.mkdtemp(prefix=f"eh-bench-{case}-", dir=folder)
    kwargs = {} if journal is None else {"journal": journal, "journal_sync": sync}
    out: dict = {"case": case, "variant": variant, "n": n, "floor_s": _same_args_loop(_empty, n)}
    if case == "push_event":
        p = engagehub.EventStreamProcessor(1 << 21, 1, 1000, 1000, **kwargs)
        out["s"] = _same_args_loop(p.push_event, n)
        out["dropped"] = p.events_dropped()
        p.flush_now()
        p.close()
    elif case in ("dicts", "push_many"):
        events = _events(n)
        p = engagehub.EventStreamProcessor(65536, 2, 1000, 100, overflow="block", **kwargs)
        seen = [0]

        def read(batch) -> None:
            rows = [(e["type"], e["user_id"], e["channel_id"], e["timestamp"]) for e in batch]
            seen[0] += len(rows)

        p.set_flush_callback(read)
        t = time.perf_counter()
        if case == "dicts":
            push = p.push_event
            for kind, user, channel, ts in events:
                push(kind, user, channel, ts)
        else:
            for i in range(0, n, BATCH):
                p.push_many(events[i : i + BATCH])
        p.flush_now()
        out["s"] = time.perf_counter() - t
        out["dropped"] = p.events_dropped()
        out["delivered"] = seen[0]
        p.close()
    elif case == "update_user":
        rng = random.Random(1)
        ids = [str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)) for _ in range(100_000)]
        board = engagehub.Leaderboard(max_users=0, **kwargs)
        for i, uid in enumerate(ids):
            board.update_user(uid, rng.random() * 1000, T0 + i % 86_400)
        targets = [(ids[rng.randrange(len(ids))].encode().decode(), 1.5, T0 + 86_400 + i) for i in range(n)]
        means = []
        for b in range(0, n, BATCH):
            chunk = targets[b : b + BATCH]
            update = board.update_user
            t = time.perf_counter_ns()
            for args in chunk:
                update(*args)
            means.append((time.perf_counter_ns() - t) / BATCH)
        out["s"] = statistics.median(means) * 1e-9 * n  # the median batch's rate, for N calls
        floor = []
        for b in range(0, n, BATCH):
            t = time.perf_counter_ns()
            for args in targets[b : b + BATCH]:
                _empty3(*args)
            floor.append((time.perf_counter_ns() - t) / BATCH)
        out["floor_s"] = statistics.median(floor) * 1e-9 * n
        board.close()
    else:
        raise ValueError(case)
    out["ratio"] = out["s"] / out["floor_s"]
    return out


def _empty3(a, b, c) -> None:
    pass


def _fresh(case: str, variant: str, n: int, folder: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", case, "--variant", variant, "--n", str(n), "--dir", folder],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _filesystem(folder: str) -> str:
    try:
        out = subprocess.run(["df", "-T", folder], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=CASES)
    ap.add_argument("--variant", choices=tuple(VARIANTS))
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--only", choices=CASES, action="append")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.variant, args.n, args.dir)))
        return 0
    print(f"engagehub {engagehub.__version__}, {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; journals on {args.dir} ({_filesystem(args.dir)})")
    results: dict = {}
    for case in args.only or CASES:
        n = 100_000 if case == "update_user" else args.n
        for r in range(args.rounds):
            for variant in VARIANTS:
                res = _fresh(case, variant, n, args.dir)
                results.setdefault((case, variant), []).append(res)
                if res.get("dropped"):
                    print(f"warning: {case}/{variant} dropped {res['dropped']} events", file=sys.stderr)
    print(f"\n{args.rounds} rounds; medians; 'vs off': the ratio to the same round's run without a journal")
    print("| case | journal | median s (N calls) | ratio to floor | vs off (median, min–max) |")
    print("|---|---|---|---|---|")
    for case in args.only or CASES:
        offs = [r["s"] for r in results[(case, "off")]]
        for variant in VARIANTS:
            rs = results[(case, variant)]
            vs = [r["s"] / off for r, off in zip(rs, offs)]
            print(f"| {case} | {variant} | {statistics.median(r['s'] for r in rs):.3f} | "
                  f"{statistics.median(r['ratio'] for r in rs):.2f}× | "
                  f"{statistics.median(vs):.3f} ({min(vs):.3f}–{max(vs):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
