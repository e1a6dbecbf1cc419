"""Leaderboards shared by many processes through Redis.

Writers publish: ``Leaderboard(..., redis=client, key=key)``. Any process reads:
:class:`SharedLeaderboard`, with the in-process names and shapes. The key schema is
a stable contract (README, "Shared leaderboard through Redis"). Needs redis-py
(``pip install engagehub[redis]``).
"""

from __future__ import annotations

from .leaderboard import SharedLeaderboard

__all__ = ["SharedLeaderboard"]
