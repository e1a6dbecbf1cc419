"""Reading a leaderboard that writers share through Redis.

Writers: ``Leaderboard(..., redis=client, key="lb")``. Every update's
forward-decayed delta is summed per user inside the native board (the update hot
path is unchanged); the writer's publisher thread applies the sums every
``publish_interval_ms`` to a Redis sorted set, exactly once (see
:mod:`engagehub.shared._publisher` and :mod:`engagehub.shared._sources`). Readers:
:class:`SharedLeaderboard` (a blocking redis-py client) and
:class:`AsyncSharedLeaderboard` (a ``redis.asyncio`` client) with ``get_top_users``,
``get_user_rank``, ``top``, ``rank``, ``around``, ``size``, and
:class:`~engagehub.Leaderboard`'s names, shapes and tie order, from any process;
both run the same plans (:mod:`._read`). The key schema is in
:mod:`engagehub.shared._schema` and docs/shared.md.
"""

from __future__ import annotations

import math
import time
from typing import Any, List, Optional

from .. import errors
from .._native import count_arg as _count
from .._types import RankedUser, UserRankDict
from . import _schema
from ._read import Op, Plan, Reads



def keys_of(key: str) -> "tuple[str, str, str]":
    """``({K}:z, {K}:meta, {K}:last)``."""
    return _schema.board_keys(key)


class _LeaderboardReader:
    """What both readers share: arguments, keys and the plan of each query."""

    def __init__(self, client: Any, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgument("key must be a non-empty str", 1)
        self._client = client
        self.key = key
        self._keys = keys_of(key)
        self._reads = Reads(client, f"{type(self).__name__} {key!r}", False, "leaderboard")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key={self.key!r}>"

    def _rows(self, *args: Any, now: Optional[float]) -> "Plan[List[RankedUser]]":
        meta, start, flat, lasts = yield from self._reads.script(_schema.LEADERBOARD_READ, list(self._keys), list(args))
        start = int(start)
        if start < 0 or not flat or meta[0] is None:
            return []
        landmark, decay, period = int(meta[0]), float(meta[1]), float(meta[2])
        lam = -math.log(decay) / period
        t = int(time.time()) if now is None else int(now)
        factor = math.exp(-lam * (t - landmark)) if lam else 1.0
        out = []
        for i in range(0, len(flat), 2):
            member = flat[i]
            user = member.decode("utf-8") if isinstance(member, bytes) else member
            value = -float(flat[i + 1]) + 0.0
            score = value * factor if value and lam else value
            if math.isinf(score):
                score = math.copysign(1.7976931348623157e308, value)
            last = lasts[i // 2]
            out.append(RankedUser(user, start + i // 2 + 1, score, int(float(last)) if last is not None else 0))
        return out

    def _top(self, k: int, offset: int, now: Optional[float]) -> "Plan[List[RankedUser]]":
        k, offset = _count(k, "k"), _count(offset, "offset")
        if k == 0:
            return []
        stop = offset + k - 1
        return (yield from self._rows("top", offset, -1 if stop >= 2**62 else stop, now=now))

    def _absent(self, user_id: str) -> errors.NotFound:
        return errors.NotFound(f"user {user_id!r} is not on {self._keys[0]}", errors.NotFound.status)

    def _rank(self, user_id: str, now: Optional[float]) -> "Plan[RankedUser]":
        rows = yield from self._rows("rank", user_id, now=now)
        if not rows:
            raise self._absent(user_id)
        return rows[0]

    def _around(self, user_id: str, radius: int, now: Optional[float]) -> "Plan[List[RankedUser]]":
        radius = min(_count(radius, "radius"), 2**62)
        rows = yield from self._rows("around", user_id, radius, now=now)
        if not rows:
            raise self._absent(user_id)
        return rows

    def _top_users(self, k: int) -> "Plan[List[UserRankDict]]":
        rows = yield from self._top(k, 0, None)
        return [{"user_id": r.user_id, "score": r.score, "rank": r.rank, "last_update": r.last_update} for r in rows]

    def _user_rank(self, user_id: str) -> "Plan[Optional[UserRankDict]]":
        rows = yield from self._rows("rank", user_id, now=None)
        if not rows:
            return None
        r = rows[0]
        return {"user_id": user_id, "rank": r.rank, "score": r.score, "last_update": r.last_update}

    def _size(self) -> "Plan[int]":
        z = self._keys[0]
        return int((yield from self._reads.call([z], "a sorted set", Op("zcard", z))))

    def _trimmed(self) -> "Plan[int]":
        meta = self._keys[1]
        value = yield from self._reads.integer(meta, Op("hget", meta, "trimmed"), "a hash")
        return value if value is not None else 0


class SharedLeaderboard(_LeaderboardReader):
    """Reads a leaderboard that writers publish to Redis (``Leaderboard(...,
    redis=client, key=key)``), from any process, with :class:`~engagehub.Leaderboard`'s
    names, return shapes and tie order (higher score, then id ascending). ``client``
    is a ``redis.Redis`` or ``redis.cluster.RedisCluster``; for a ``redis.asyncio``
    client: :class:`AsyncSharedLeaderboard`.

    Scores are computed at ``now`` (seconds; ``None`` = the wall clock) from the
    stored values and ``{K}:meta``. ``top``, ``rank`` and ``around`` are one round
    trip each (one Lua script, so a concurrent rebase never mixes old and new
    values). Answers include every writer's updates that have been published
    (every ``publish_interval_ms``; a writer's own :class:`~engagehub.Leaderboard`
    queries answer from its local board).

    The constructor makes no network call. Errors: a key of another type or an
    invalid value raises :class:`~engagehub.Corrupt` naming the key; redis-py's
    ``ConnectionError`` and ``TimeoutError`` pass through unchanged.
    """

    def top(self, k: int = 10, offset: int = 0, now: Optional[float] = None) -> List[RankedUser]:
        """Up to ``k`` users from 0-based position ``offset``, best first."""
        return self._reads.run("top", self._top(k, offset, now))

    def rank(self, user_id: str, now: Optional[float] = None) -> RankedUser:
        """The user's rank and score; raises :class:`~engagehub.errors.NotFound`."""
        return self._reads.run("rank", self._rank(user_id, now))

    def around(self, user_id: str, radius: int = 5, now: Optional[float] = None) -> List[RankedUser]:
        """The users within ``radius`` places of ``user_id`` (NotFound if absent)."""
        return self._reads.run("around", self._around(user_id, radius, now))

    def get_top_users(self, k: int = 10) -> List[UserRankDict]:
        """Drop-in: ``[{"user_id", "score", "rank", "last_update"}]``, best first."""
        return self._reads.run("get_top_users", self._top_users(k))

    def get_user_rank(self, user_id: str) -> Optional[UserRankDict]:
        """Drop-in: ``{"user_id", "rank", "score", "last_update"}`` or ``None``."""
        return self._reads.run("get_user_rank", self._user_rank(user_id))

    def size(self) -> int:
        """Users on the shared board (``ZCARD``)."""
        return self._reads.run("size", self._size())

    def __len__(self) -> int:
        return self.size()

    def trimmed(self) -> int:
        """Users removed from the shared board by writers' ``max_users``."""
        return self._reads.run("trimmed", self._trimmed())


class AsyncSharedLeaderboard(_LeaderboardReader):
    """:class:`SharedLeaderboard` for a ``redis.asyncio`` client: the same queries,
    each a coroutine, with the same answers and the same errors (``len()`` is
    ``await board.size()``). The constructor makes no network call."""

    async def top(self, k: int = 10, offset: int = 0, now: Optional[float] = None) -> List[RankedUser]:
        """See :meth:`SharedLeaderboard.top`."""
        return await self._reads.arun("top", self._top(k, offset, now))

    async def rank(self, user_id: str, now: Optional[float] = None) -> RankedUser:
        """See :meth:`SharedLeaderboard.rank`."""
        return await self._reads.arun("rank", self._rank(user_id, now))

    async def around(self, user_id: str, radius: int = 5, now: Optional[float] = None) -> List[RankedUser]:
        """See :meth:`SharedLeaderboard.around`."""
        return await self._reads.arun("around", self._around(user_id, radius, now))

    async def get_top_users(self, k: int = 10) -> List[UserRankDict]:
        """Drop-in: ``[{"user_id", "score", "rank", "last_update"}]``, best first."""
        return await self._reads.arun("get_top_users", self._top_users(k))

    async def get_user_rank(self, user_id: str) -> Optional[UserRankDict]:
        """Drop-in: ``{"user_id", "rank", "score", "last_update"}`` or ``None``."""
        return await self._reads.arun("get_user_rank", self._user_rank(user_id))

    async def size(self) -> int:
        """Users on the shared board (``ZCARD``)."""
        return await self._reads.arun("size", self._size())

    async def trimmed(self) -> int:
        """See :meth:`SharedLeaderboard.trimmed`."""
        return await self._reads.arun("trimmed", self._trimmed())


__all__ = ["AsyncSharedLeaderboard", "SharedLeaderboard", "keys_of"]
