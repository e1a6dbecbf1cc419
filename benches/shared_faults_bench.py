"""Issue 20's figures, the code before and after measured side by side in one run.

Run: ``make bench-shared-faults`` (builds both), or by hand:
``python3 benches/shared_faults_bench.py --baseline DIR`` where ``DIR`` is a
checkout of the code to compare with whose ``target/release/libengagehub.so`` is
built (``--baseline-ref REF`` makes one under build/: a git worktree at REF and a
release build). Each variant runs in child processes of its own (PYTHONPATH and
ENGAGEHUB_LIB pointing at it), rounds interleaved (before, after, before...),
against one redis-server on a unix socket started here (no persistence).

1. **Rebase**: a shared board of ``--users`` users (default 1M; written straight
   into Redis in the schema both versions share), then one writer's batch whose
   landmark is far ahead, which rebases the shared set. This process PINGs Redis
   on a connection of its own all along and reports the worst PING latency seen
   while the rebase ran, and the rebase's own duration.
2. **Leaderboard publish rate**: ``--lb-users`` users pending, timed from
   ``publish_now()`` until Redis acknowledged them (users/s).
3. **Analytics publish rate**: ``--events`` events over 60 minutes and 200
   channels pushed, then ``flush_now()``, which delivers and publishes in both
   versions (events/s of the whole flush, the native part the same in both).
Medians over ``--rounds`` rounds, each round's values in brackets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, math, os, random, sys, time
import redis
import engagehub
mode, sock, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = redis.Redis(unix_socket_path=sock, socket_timeout=600)
T_NEW = 1_764_633_600
if mode == "rebase":
    # The shared set is ready (the parent wrote it); one update far ahead rebases it.
    lb = engagehub.Leaderboard(max_users=0, decay_factor=0.5, decay_period_secs=10.0, redis=client,
                               key="bench-rebase", publish_interval_ms=3_600_000)
    lb.update_user("trigger", 1.0, T_NEW)
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    assert lb.publish_now(600)
    # The new code rebases in steps after the batch: wait until they are done.
    while client.hget("{bench-rebase}:meta", "rebase_landmark") is not None:
        time.sleep(0.001)
    print(json.dumps({"seconds": time.perf_counter() - t,
                      "landmark": int(client.hget("{bench-rebase}:meta", "landmark"))}), flush=True)
    lb.close()
elif mode == "lb":
    rng = random.Random(2)
    lb = engagehub.Leaderboard(max_users=0, redis=client, key=f"bench-lb-{os.getpid()}",
                               publish_interval_ms=3_600_000, max_pending=n + 1)
    now = int(time.time())
    for i in range(n):
        lb.update_user(str(100_000_000_000_000_000 + rng.randrange(900_000_000_000_000_000)), rng.random() * 1000,
                       now - rng.randrange(86_400))
    t = time.perf_counter()
    assert lb.publish_now(600)
    print(json.dumps({"rate": n / (time.perf_counter() - t)}), flush=True)
    lb.close()
elif mode == "analytics":
    rng = random.Random(3)
    p = engagehub.EventStreamProcessor(buffer_size=1 << 20, clock="event_time", redis=client,
                                       namespace=f"bench-an-{os.getpid()}", publish_interval_ms=3_600_000)
    events = [("message", f"u{rng.randrange(200_000)}", f"c{rng.randrange(200)}", T_NEW + i * 3600 // n)
              for i in range(n)]
    p.push_many(events)
    t = time.perf_counter()
    p.flush_now(600)
    print(json.dumps({"rate": n / (time.perf_counter() - t)}), flush=True)
    p.close()
"""


def start_redis(tmp: str) -> "tuple[subprocess.Popen, str]":
    import redis

    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--dir", tmp, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=sock)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, sock
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def env_for(checkout: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout / "python")
    env["ENGAGEHUB_LIB"] = str(checkout / "target" / "release" / "libengagehub.so")
    env.pop("ENGAGEHUB_EXPECT_FAST", None)
    return env


def worker(checkout: Path, mode: str, sock: str, n: int) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, sock, str(n)], env=env_for(checkout),
                         capture_output=True, text=True, timeout=1200, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def fill_board(client: Any, users: int) -> None:
    """``users`` users in ``{bench-rebase}:z`` (values 1..1000), landmark 2,000 s
    before the trigger's timestamp, written with pipelined ZADDs."""
    import random

    client.delete("{bench-rebase}:z", "{bench-rebase}:meta", "{bench-rebase}:last", "{bench-rebase}:z:old")
    rng = random.Random(5)
    pipe = client.pipeline(transaction=False)
    for start in range(0, users, 10_000):
        pipe.zadd("{bench-rebase}:z", {f"u{i}": -rng.uniform(1, 1000) for i in range(start, min(users, start + 10_000))})
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()
    client.hset("{bench-rebase}:meta", mapping={"version": "1", "landmark": 1_764_633_600 - 2000,
                                                  "decay_factor": "0.5", "decay_period_secs": "10.0"})


def rebase_round(checkout: Path, sock: str, users: int) -> Dict[str, Any]:
    import redis

    client = redis.Redis(unix_socket_path=sock, socket_timeout=600)
    fill_board(client, users)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, "rebase", sock, "0"], env=env_for(checkout),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    pinger = redis.Redis(unix_socket_path=sock, socket_timeout=600)
    worst, done = [0.0], threading.Event()

    def ping() -> None:
        # A script running past lua-time-limit (5 s) makes Redis answer BUSY to
        # everything: a client waits from its first BUSY until a PONG comes.
        refused_since = None
        while not done.is_set():
            t = time.perf_counter()
            try:
                pinger.ping()
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSY"):
                    raise
                refused_since = refused_since or t
                time.sleep(0.01)
                continue
            start, refused_since = refused_since or t, None
            worst[0] = max(worst[0], time.perf_counter() - start)

    thread = threading.Thread(target=ping)
    thread.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = json.loads(proc.stdout.readline())
    done.set()
    thread.join()
    proc.wait(60)
    assert result["landmark"] == 1_764_633_600, result  # the shared set was rebased
    assert client.zcard("{bench-rebase}:z") == users + 1  # and the trigger
    return {"worst_ping_ms": worst[0] * 1000, "rebase_s": result["seconds"]}


def baseline_checkout(ref: str) -> Path:
    where = ROOT / "build" / f"baseline-{ref}"
    if not where.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=where, check=True)
    return where


def fmt(values: List[float], unit: str, digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} {unit} [{', '.join(f'{v:,.{digits}f}' for v in values)}]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, help="a checkout to compare with (its release library built)")
    ap.add_argument("--baseline-ref", default=None, help="make one under build/ from this git ref")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--lb-users", type=int, default=200_000)
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = {"after": ROOT}
    if args.baseline_ref:
        variants = {"before": baseline_checkout(args.baseline_ref), **variants}
    elif args.baseline:
        variants = {"before": args.baseline, **variants}
    tmp = tempfile.mkdtemp(prefix="eh-bench-")
    proc, sock = start_redis(tmp)
    results: Dict[str, Dict[str, List[float]]] = {v: {} for v in variants}
    try:
        for _ in range(args.rounds):
            for name, checkout in variants.items():
                r = results[name]
                rb = rebase_round(checkout, sock, args.users)
                r.setdefault("worst_ping_ms", []).append(rb["worst_ping_ms"])
                r.setdefault("rebase_s", []).append(rb["rebase_s"])
                r.setdefault("lb", []).append(worker(checkout, "lb", sock, args.lb_users)["rate"])
                r.setdefault("an", []).append(worker(checkout, "analytics", sock, args.events)["rate"])
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    for name in variants:
        r = results[name]
        print(f"{name} ({variants[name]}):")
        print(f"  rebase of a {args.users:,}-user shared board: worst PING {fmt(r['worst_ping_ms'], 'ms', 1)}, "
              f"rebase took {fmt(r['rebase_s'], 's', 2)}")
        print(f"  leaderboard publish, {args.lb_users:,} new users: {fmt(r['lb'], 'users/s')}")
        print(f"  analytics flush_now (deliver + publish), {args.events:,} events: {fmt(r['an'], 'events/s')}")
    if "before" in results:
        b, a = results["before"], results["after"]
        print("after / before (medians): "
              f"worst PING {statistics.median(a['worst_ping_ms']) / statistics.median(b['worst_ping_ms']):.3f}, "
              f"leaderboard publish {statistics.median(a['lb']) / statistics.median(b['lb']):.2f}, "
              f"analytics {statistics.median(a['an']) / statistics.median(b['an']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
