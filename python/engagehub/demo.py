"""The demo: a simulated month of points awarded on a Discord-like server, ranked by
the decayed leaderboard, saved to a snapshot and restored."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from .leaderboard import Leaderboard

DAY = 86_400
START = 1_767_225_600  # 2026-01-01T00:00:00Z
POINTS = {"message": 1.0, "reaction": 0.5, "voice_join": 2.0, "member_join": 5.0}


def _workload(users: int, updates: int, seed: int) -> list[tuple[str, float, int]]:
    rng = random.Random(seed)
    ids = [str(100_000_000_000_000_000 + rng.randrange(10**17)) for _ in range(users)]
    # Zipf-like activity: a few very active users, a long tail.
    weights = [1.0 / (i + 1) ** 1.1 for i in range(users)]
    chosen = rng.choices(ids, weights=weights, k=updates)
    kinds = rng.choices(list(POINTS), weights=[70, 25, 4, 1], k=updates)
    stamps = sorted(START + rng.randrange(30 * DAY) for _ in range(updates))
    return [(uid, POINTS[kind], ts) for uid, kind, ts in zip(chosen, kinds, stamps)]


def run_demo(args: argparse.Namespace) -> int:
    """Runs the leaderboard demo; returns 0 when every check passed."""
    print(f"generating {args.updates:,} updates for {args.users:,} users (seed {args.seed})...")
    work = _workload(args.users, args.updates, args.seed)
    now = work[-1][2]
    with Leaderboard(decay_factor=0.95, max_users=0) as board:
        started = time.perf_counter()
        add = board.add
        for uid, points, ts in work:
            add(uid, points, ts)
        elapsed = time.perf_counter() - started
        print(f"{len(work):,} updates in {elapsed:.2f} s ({len(work) / elapsed:,.0f} updates/s from Python)")
        print(f"{len(board):,} users ranked; top 10 at the end of the month (score decays 5%/day):")
        top = board.top(10, now=now)
        for row in top:
            print(f"  #{row.rank:<3} {row.user_id}  {row.score:10.2f}")
        snapshot = Path(tempfile.gettempdir()) / "engagehub-demo-leaderboard.json"
        board.save_to_json(snapshot)
        with Leaderboard() as restored:
            restored.load_from_json(snapshot)
            same = restored.top(10, now=now) == top and len(restored) == len(board)
        print(f"snapshot: {snapshot} ({snapshot.stat().st_size / 1e6:.1f} MB), reload identical: {same}")
        return 0 if same else 1
