"""Analytics and leaderboards shared by many processes through Redis.

Writers publish: ``EventStreamProcessor(..., redis=client, namespace=ns)``.
Any process reads: :class:`SharedAnalytics` (unique users, top channels, event
total) and :class:`SharedLeaderboard`, with the in-process names and shapes. The
key schema is a stable contract (README, "Shared through Redis"). Needs redis-py
(``pip install engagehub[redis]``).
"""

from __future__ import annotations

from .analytics import SharedAnalytics
from .leaderboard import SharedLeaderboard

__all__ = ["SharedAnalytics", "SharedLeaderboard"]
