"""The demo's workload: a seeded, Discord-like stream of events.

:func:`generate_events` draws ``n`` events (Zipf-distributed users and channels, a
daily activity curve given by :func:`activity`, 70% messages, 22% reactions, 5%
voice joins, 3% member joins) as a :class:`Workload` of parallel columns sorted by
timestamp; the same arguments always give the same events. Every user belongs to
one of three guilds (or to none: :data:`GUILD_WEIGHTS`), and its events carry it.
With ``history_days`` and ``history_events`` the workload starts with the weeks
before the simulated days: lighter activity of users who join the community over
those weeks (the analytics' retention cohorts). :data:`POINTS` is what the demo
awards on the leaderboard per event of each kind.

It depends on the standard library only, so it can feed any pipeline::

    from engagehub.demo.workload import generate_events

    work = generate_events(100_000, seed=7)
    processor.push_many(work.rows())
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
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

GUILD_WEIGHTS = (55, 30, 10, 5)
"""Share of users, in percent, in each of the three guilds (busiest first) and, last,
in none (their events carry no guild)."""
JOINED_BEFORE = 0.6
"""Share of users who joined during the history (the others are first seen on the
simulated days)."""
CHURNED = 0.5
"""Users who came and went during the history (active from their join day for a
while, about 10 days on average, never on the simulated days), per user of the
simulated days."""
CHURNED_SHARE = 0.35
"""Share of the history's events made by those users."""


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
    """Generated events as parallel columns, sorted by timestamp: the history's
    events (the first :attr:`history` ones, all before :attr:`start_ts`), then the
    simulated days'."""

    kinds: List[str]
    user_ids: List[str]
    channel_ids: List[str]
    timestamps: List[int]
    guild_ids: List[Optional[str]]
    """Each event's guild: its user's (``None`` for users in no guild)."""
    guilds: Tuple[str, ...] = ()
    """The three guilds' ids, the busiest first."""
    history: int = 0
    """How many of the events are the history's (they come first)."""
    start_ts: int = START
    """Start of the simulated days (the history ends there)."""

    def __len__(self) -> int:
        return len(self.timestamps)

    def rows(self, start: int = 0, stop: Optional[int] = None) -> List[Tuple[str, str, str, int, Optional[str]]]:
        """Events ``start:stop`` as ``(type, user_id, channel_id, timestamp, guild_id)``
        tuples (what ``EventStreamProcessor.push_many`` takes)."""
        return list(
            zip(
                self.kinds[start:stop],
                self.user_ids[start:stop],
                self.channel_ids[start:stop],
                self.timestamps[start:stop],
                self.guild_ids[start:stop],
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
    history_days: int = 0,
    history_events: int = 0,
) -> Workload:
    """A reproducible Discord-like stream of ``n`` events over ``days`` from ``start_ts``,
    after ``history_events`` events over the ``history_days`` days before it.

    Users and channels get 18-digit snowflake-like ids and Zipf-distributed activity
    (exponents ``user_skew`` and ``channel_skew``: a few very busy ones, a long
    tail); timestamps follow :func:`activity` (quiet at night, busiest in the
    evening); kinds are 70% messages, 22% reactions, 5% voice joins and 3% member
    joins. Each user belongs to one of three guilds (snowflake-like ids, shares
    :data:`GUILD_WEIGHTS`) or to none, and its events carry that guild. The same
    arguments always give the same events.

    The history (``history_events`` events spread over the ``history_days`` days
    before ``start_ts``; none by default): :data:`JOINED_BEFORE` of the users get a
    join day in it (more in the first weeks: the core of a growing community), and
    :data:`CHURNED` as many others come and go in it (they make
    :data:`CHURNED_SHARE` of its events). Each history event is drawn like the
    day's (a Zipf user and channel, a time of day on the daily curve), on a day
    of its user's stay, later days more likely. The other users of the simulated
    days are first seen on them.

    The simulated days' columns are each drawn with one ``random.choices`` call
    (from ``Random(seed)``, so they do not depend on the history or the guilds,
    which have generators of their own); only the timestamps are sorted (the other
    columns are independent draws, so their order is as random after the sort as
    before).
    """
    if n < 0 or users < 1 or channels < 1 or days < 1:
        raise ValueError("n must be >= 0; users, channels and days >= 1")
    if history_days < 0 or history_events < 0 or (history_events and not history_days):
        raise ValueError("history_days and history_events must be >= 0, and history_events needs history_days")
    rng = random.Random(seed)
    user_pool = [str(i) for i in rng.sample(range(10**17, 10**18), users)]
    channel_pool = [str(i) for i in rng.sample(range(10**17, 10**18), channels)]
    user_weights = zipf_cum_weights(users, user_skew)
    channel_weights = zipf_cum_weights(channels, channel_skew)
    kind_weights = list(accumulate(KIND_WEIGHTS))
    user_ids = rng.choices(user_pool, cum_weights=user_weights, k=n)
    channel_ids = rng.choices(channel_pool, cum_weights=channel_weights, k=n)
    kinds = rng.choices(KINDS, cum_weights=kind_weights, k=n)
    # One weight per second of the simulation: each minute's activity, 60 times.
    per_minute = [activity(m) for m in range(1440)]
    second_weights = list(accumulate(w for w in per_minute * days for _ in range(60)))
    seconds = range(start_ts, start_ts + days * DAY)
    timestamps = sorted(rng.choices(seconds, cum_weights=second_weights, k=n))

    # The guilds: ids and each user's, from a generator of their own.
    grng = random.Random(f"guilds-{seed}")
    guilds = tuple(str(i) for i in grng.sample(range(10**17, 10**18), 3))
    homes = grng.choices(guilds + (None,), cum_weights=list(accumulate(GUILD_WEIGHTS)), k=users)
    guild_of = dict(zip(user_pool, homes))

    if history_events:
        hrng = random.Random(f"history-{seed}")
        first_day = start_ts // DAY - history_days

        def join_days(k: int) -> List[int]:
            # A core from the first weeks, then a steady stream.
            return [int(r**1.3 * history_days) for r in [hrng.random() for _ in range(k)]]

        # Each user's days in the history, as [first, end) day indexes: the users of
        # the simulated days who joined before (until the end), and churned users
        # (ids of their own, a guild each too) who stayed a while.
        joined_before = [user for user in user_pool if hrng.random() < JOINED_BEFORE]
        stay = {user: (day, history_days) for user, day in zip(joined_before, join_days(len(joined_before)))}
        churned: List[str] = []
        taken = set(user_pool)
        while len(churned) < int(users * CHURNED):
            user = str(hrng.randrange(10**17, 10**18))
            if user not in taken:
                taken.add(user)
                churned.append(user)
        for user, joined in zip(churned, join_days(len(churned))):
            stay[user] = (joined, min(joined + 1 + int(hrng.expovariate(0.1)), history_days))
        homes = hrng.choices(guilds + (None,), cum_weights=list(accumulate(GUILD_WEIGHTS)), k=len(churned))
        guild_of.update(zip(churned, homes))

        # Each event: a user (Zipf among the day's users who joined before, or among
        # the churned ones), then a day of its stay, later days more likely
        # (weights growing from 0.3 to 1: a growing community).
        n_churned = round(history_events * CHURNED_SHARE)
        h_users = hrng.choices(churned, cum_weights=zipf_cum_weights(len(churned), user_skew), k=n_churned)
        while len(h_users) < history_events:
            want = int((history_events - len(h_users)) / JOINED_BEFORE * 1.1) + 100
            h_users += [u for u in hrng.choices(user_pool, cum_weights=user_weights, k=want) if u in stay]
        del h_users[history_events:]
        day_weights = list(accumulate(0.3 + 0.7 * (d + 1) / history_days for d in range(history_days)))
        h_days = []
        for user, r in zip(h_users, [hrng.random() for _ in range(history_events)]):
            lo, hi = stay[user]
            below = day_weights[lo - 1] if lo else 0.0
            x = below + r * (day_weights[hi - 1] - below)
            h_days.append(first_day + min(bisect_right(day_weights, x, lo, hi), hi - 1))
        day_seconds = second_weights[: 1440 * 60]
        offsets = hrng.choices(range(DAY), cum_weights=day_seconds, k=history_events)
        h_ts = [day * DAY + offset for day, offset in zip(h_days, offsets)]
        order = sorted(range(history_events), key=h_ts.__getitem__)
        user_ids = [h_users[i] for i in order] + user_ids
        timestamps = [h_ts[i] for i in order] + timestamps
        channel_ids = hrng.choices(channel_pool, cum_weights=channel_weights, k=history_events) + channel_ids
        kinds = hrng.choices(KINDS, cum_weights=kind_weights, k=history_events) + kinds
    guild_ids = list(map(guild_of.__getitem__, user_ids))
    return Workload(kinds, user_ids, channel_ids, timestamps, guild_ids, guilds, history_events, start_ts)


__all__ = [
    "CHURNED",
    "CHURNED_SHARE",
    "DAY",
    "GUILD_WEIGHTS",
    "JOINED_BEFORE",
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
