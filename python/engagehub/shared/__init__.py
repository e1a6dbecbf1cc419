"""Analytics and leaderboards shared by many processes through Redis.

Writers publish: ``EventStreamProcessor(..., redis=client, namespace=ns)``,
``Leaderboard(..., redis=client, key=key)`` and ``GuildLeaderboards(...,
redis=client, key_prefix=prefix)`` (a board per guild, ``{prefix}:{guild}``). Any process reads:
:class:`SharedAnalytics` (unique users, top channels, event and dead-lettered
totals) and :class:`SharedLeaderboard`, with the in-process names and shapes; with
a ``redis.asyncio`` client, :class:`AsyncSharedAnalytics` and
:class:`AsyncSharedLeaderboard` (the same queries, awaited). The key schemas are a
stable contract (docs/shared.md). Needs redis-py (``pip install engagehub[redis]``).
"""

from __future__ import annotations

from .analytics import AsyncSharedAnalytics, SharedAnalytics
from .leaderboard import AsyncSharedLeaderboard, SharedLeaderboard

__all__ = ["AsyncSharedAnalytics", "AsyncSharedLeaderboard", "SharedAnalytics", "SharedLeaderboard"]
