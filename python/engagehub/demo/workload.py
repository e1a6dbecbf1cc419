"""The demo's workload: a seeded, Discord-like stream of events.

:func:`generate_events` draws ``n`` events (Zipf-distributed users and channels, a
daily activity curve given by :func:`activity`, 70% messages, 22% reactions, 5%
voice joins, 3% member joins) as a :class:`Workload` of parallel columns sorted by
timestamp; the same arguments always give the same events. :data:`POINTS` is what
the demo awards on the leaderboard per event of each kind.

It depends on the standard library only, so it can feed any pipeline::

    from engagehub.demo.workload import generate_events

    work = generate_events(100_000, seed=7)
    processor.push_many(work.rows())
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import accumulate
from typing import List, Optional, Tuple

DAY = 86_400
START = 1_767_225_600
"""Default start of the simulated day: 2026-01-01T00:00:00Z."""

KINDS = ("message", "reaction", "voice_join", "member_join")
KIND_WEIGHTS = (70, 22, 5, 3)
"""Share of each event kind, in percent."""
POINTS = {"message": 1.0, "reaction": 0.5, "voice_join": 3.0, "member_join": 5.0}
"""Leaderboard points awarded per persisted event of each kind."""

QUIET_AT_MIN = 4 * 60 + 30
"""Minute of the day with the least activity (04:30)."""
PEAK_AT_MIN = 21 * 60
"""Minute of the day with the most activity (21:00)."""
NIGHT_FLOOR = 0.08
"""Activity at the quietest minute, relative to the peak."""


def activity(minute: int) -> float:
    """Relative activity at ``minute`` of the day (0..1439): a half-cosine rising
    from the night floor at 04:30 to the peak at 21:00, then falling back."""
    minute %= 1440
    rise = (PEAK_AT_MIN - QUIET_AT_MIN) % 1440
    since_quiet = (minute - QUIET_AT_MIN) % 1440
    if since_quiet <= rise:
        x = since_quiet / rise
    else:
        x = 1.0 - (since_quiet - rise) / (1440 - rise)
    return NIGHT_FLOOR + (1.0 - NIGHT_FLOOR) * (1.0 - math.cos(math.pi * x)) / 2.0


def zipf_cum_weights(n: int, s: float) -> List[float]:
    """Cumulative weights of ranks 1..n under Zipf's law with exponent ``s``."""
    return list(accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


@dataclass(frozen=True)
class Workload:
    """Generated events as parallel columns, sorted by timestamp."""

    kinds: List[str]
    user_ids: List[str]
    channel_ids: List[str]
    timestamps: List[int]

    def __len__(self) -> int:
        return len(self.timestamps)

    def rows(self, start: int = 0, stop: Optional[int] = None) -> List[Tuple[str, str, str, int]]:
        """Events ``start:stop`` as ``(type, user_id, channel_id, timestamp)`` tuples."""
        return list(
            zip(
                self.kinds[start:stop],
                self.user_ids[start:stop],
                self.channel_ids[start:stop],
                self.timestamps[start:stop],
            )
        )


def generate_events(
    n: int,
    *,
    seed: int = 42,
    start_ts: int = START,
    days: int = 1,
    users: int = 50_000,
    channels: int = 2_000,
    user_skew: float = 1.05,
    channel_skew: float = 1.1,
) -> Workload:
    """A reproducible Discord-like stream of ``n`` events over ``days`` from ``start_ts``.

    Users and channels get 18-digit snowflake-like ids and Zipf-distributed activity
    (exponents ``user_skew`` and ``channel_skew``: a few very busy ones, a long
    tail); timestamps follow :func:`activity` (quiet at night, busiest in the
    evening); kinds are 70% messages, 22% reactions, 5% voice joins and 3% member
    joins. The same arguments always give the same events.

    Each column is drawn with one ``random.choices`` call; only the timestamps are
    sorted (the other columns are independent draws, so their order is as random
    after the sort as before).
    """
    if n < 0 or users < 1 or channels < 1 or days < 1:
        raise ValueError("n must be >= 0; users, channels and days >= 1")
    rng = random.Random(seed)
    user_pool = [str(i) for i in rng.sample(range(10**17, 10**18), users)]
    channel_pool = [str(i) for i in rng.sample(range(10**17, 10**18), channels)]
    user_ids = rng.choices(user_pool, cum_weights=zipf_cum_weights(users, user_skew), k=n)
    channel_ids = rng.choices(channel_pool, cum_weights=zipf_cum_weights(channels, channel_skew), k=n)
    kinds = rng.choices(KINDS, cum_weights=list(accumulate(KIND_WEIGHTS)), k=n)
    # One weight per second of the simulation: each minute's activity, 60 times.
    per_minute = [activity(m) for m in range(1440)] * days
    second_weights = accumulate(w for w in per_minute for _ in range(60))
    seconds = range(start_ts, start_ts + days * DAY)
    timestamps = sorted(rng.choices(seconds, cum_weights=list(second_weights), k=n))
    return Workload(kinds, user_ids, channel_ids, timestamps)


__all__ = [
    "DAY",
    "KIND_WEIGHTS",
    "KINDS",
    "NIGHT_FLOOR",
    "PEAK_AT_MIN",
    "POINTS",
    "QUIET_AT_MIN",
    "START",
    "Workload",
    "activity",
    "generate_events",
    "zipf_cum_weights",
]
