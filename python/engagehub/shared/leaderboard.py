"""Reading a leaderboard that writers share through Redis.

Writers: ``Leaderboard(..., redis=client, key="lb")``. Every update's
forward-decayed delta is summed per user inside the native board (the update hot
path is unchanged); the writer's publisher thread applies the sums every
``publish_interval_ms`` to a Redis sorted set, exactly once (see
:mod:`engagehub.shared._publisher` and :mod:`engagehub.shared._sources`). Readers:
:class:`SharedLeaderboard` (``get_top_users``, ``get_user_rank``, ``top``,
``rank``, ``around``, ``size``) with :class:`~engagehub.Leaderboard`'s names,
shapes and tie order, from any process. The key schema is in
:mod:`engagehub.shared._schema` and docs/shared.md.
"""

from __future__ import annotations

import math
import time
from typing import Any, List, Optional

from .. import errors
from .._native import count_arg as _count
from .._types import RankedUser
from . import _schema
from ._read import Reads


def keys_of(key: str) -> "tuple[str, str, str]":
    """``({K}:z, {K}:meta, {K}:last)``."""
    return _schema.board_keys(key)


class SharedLeaderboard:
    """Reads a leaderboard that writers publish to Redis (``Leaderboard(...,
    redis=client, key=key)``), from any process, with :class:`~engagehub.Leaderboard`'s
    names, return shapes and tie order (higher score, then id ascending).

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

    def __init__(self, client: Any, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgument("key must be a non-empty str", 1)
        self._client = client
        self.key = key
        self._keys = keys_of(key)
        self._reads = Reads(client, f"SharedLeaderboard {key!r}", False)

    def _rows(self, *args: Any, now: Optional[float]) -> List[RankedUser]:
        meta, start, flat, lasts = self._reads.script(_schema.LEADERBOARD_READ, list(self._keys), list(args))
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

    def top(self, k: int = 10, offset: int = 0, now: Optional[float] = None) -> List[RankedUser]:
        """Up to ``k`` users from 0-based position ``offset``, best first."""
        k, offset = _count(k, "k"), _count(offset, "offset")
        if k == 0:
            return []
        stop = offset + k - 1
        return self._rows("top", offset, -1 if stop >= 2**62 else stop, now=now)

    def rank(self, user_id: str, now: Optional[float] = None) -> RankedUser:
        """The user's rank and score; raises :class:`~engagehub.errors.NotFound`."""
        rows = self._rows("rank", user_id, now=now)
        if not rows:
            raise errors.NotFound(f"user {user_id!r} is not on {self._keys[0]}", errors.NotFound.status)
        return rows[0]

    def around(self, user_id: str, radius: int = 5, now: Optional[float] = None) -> List[RankedUser]:
        """The users within ``radius`` places of ``user_id`` (NotFound if absent)."""
        radius = min(_count(radius, "radius"), 2**62)
        rows = self._rows("around", user_id, radius, now=now)
        if not rows:
            raise errors.NotFound(f"user {user_id!r} is not on {self._keys[0]}", errors.NotFound.status)
        return rows

    def get_top_users(self, k: int = 10) -> List[dict]:
        """Drop-in: ``[{"user_id", "score", "rank", "last_update"}]``, best first."""
        return [
            {"user_id": r.user_id, "score": r.score, "rank": r.rank, "last_update": r.last_update}
            for r in self.top(k)
        ]

    def get_user_rank(self, user_id: str) -> Optional[dict]:
        """Drop-in: ``{"user_id", "rank", "score", "last_update"}`` or ``None``."""
        rows = self._rows("rank", user_id, now=None)
        if not rows:
            return None
        r = rows[0]
        return {"user_id": user_id, "rank": r.rank, "score": r.score, "last_update": r.last_update}

    def size(self) -> int:
        """Users on the shared board (``ZCARD``)."""
        z = self._keys[0]
        return int(self._reads.call([z], "a sorted set", lambda: self._client.zcard(z)))

    def __len__(self) -> int:
        return self.size()

    def trimmed(self) -> int:
        """Users removed from the shared board by writers' ``max_users``."""
        meta = self._keys[1]
        value = self._reads.integer(meta, lambda: self._client.hget(meta, "trimmed"), "a hash")
        return value if value is not None else 0


__all__ = ["SharedLeaderboard", "keys_of"]
