"""Reading the analytics that writer processes publish to Redis.

:class:`SharedAnalytics` (a blocking redis-py client) and
:class:`AsyncSharedAnalytics` (a ``redis.asyncio`` client, every query awaited)
answer the :class:`~engagehub.EventStreamProcessor` analytics queries, with their
names, shapes and window semantics, from the keys that processors created with
``redis=client, namespace=ns`` publish (the schema is in
:mod:`engagehub.shared._schema` and docs/shared.md). A process that pushed nothing
(a gunicorn worker serving the dashboard) sees the union of every writer's events.
Both run the same plans (:mod:`._read`): same keys, same answers, same errors.
"""

from __future__ import annotations

import datetime as _dt

import time
from typing import Any, Dict, List, Optional, Tuple, Union

from .. import _history, errors
from .._history import Cohort
from ..sketch import HyperLogLog
from . import _schema
from ._read import Op, Plan, Reads


class _AnalyticsReader:
    """What both readers share: arguments, keys and the plan of each query."""

    def __init__(self, client: Any, namespace: str, window_minutes: int = 60, *, check_eviction: bool = True) -> None:
        if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
            raise errors.InvalidArgument(f"namespace must be a non-empty str without braces, got {namespace!r}", 1)
        if isinstance(window_minutes, bool) or not isinstance(window_minutes, int) or window_minutes <= 0:
            raise errors.InvalidArgument(f"window_minutes must be a positive integer, got {window_minutes!r}", 1)
        self.client = client
        self.namespace = namespace
        self.window_minutes = window_minutes
        self._reads = Reads(client, f"{type(self).__name__} {namespace!r}", check_eviction, "analytics")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r} window_minutes={self.window_minutes}>"

    def _key(self, *parts: object) -> str:
        return _schema.key(self.namespace, *parts)

    # -- plans -----------------------------------------------------------------

    def _now(self) -> "Plan[int]":
        key = self._key("clock")
        clock = yield from self._reads.integer(key, Op("get", key))
        return clock if clock is not None else int(time.time())

    def _minutes(self, window_secs: Any, now: Optional[float]) -> "Plan[Optional[Tuple[int, int]]]":
        """First and last minute start of the window, or ``None`` for all time
        (``window_secs`` ``None`` or 0, as in the processor)."""
        if window_secs is None:
            return None
        if isinstance(window_secs, bool) or not isinstance(window_secs, (int, float)):
            raise errors.InvalidType(f"window_secs must be a number or None, not {type(window_secs).__name__}", 1)
        if not 0 <= window_secs < 2**63:
            raise errors.InvalidArgument(f"window_secs must be >= 0, got {window_secs}", 1)
        window_secs = int(window_secs)
        if window_secs == 0:
            return None
        minutes = -(-window_secs // 60)
        if minutes > self.window_minutes:
            raise errors.InvalidArgument(
                f"window_secs {window_secs} is longer than the configured window of "
                f"{self.window_minutes} minutes ({self.window_minutes * 60} s); raise window_minutes to query it",
                1,
            )
        if now is None:
            now = yield from self._now()
        if isinstance(now, bool) or not isinstance(now, (int, float)) or now <= 0:
            raise errors.InvalidArgument(f"now must be a positive unix time, got {now!r}", 1)
        last = int(now) // 60 * 60
        return last - (minutes - 1) * 60, last

    def _user_keys(self, window_secs: Optional[int], now: Optional[int]) -> "Plan[List[str]]":
        span = yield from self._minutes(window_secs, now)
        return [self._key("uu", "all")] if span is None else _schema.minute_keys(self.namespace, "uu", *span)

    def _unique_users(self, window_secs: Optional[int], now: Optional[int]) -> "Plan[int]":
        keys = yield from self._user_keys(window_secs, now)
        return int((yield from self._reads.call(keys, "a HyperLogLog", Op("pfcount", *keys))))

    def _top_channels(self, k: int, window_secs: Optional[int], now: Optional[int]) -> "Plan[List[Tuple[str, int]]]":
        if isinstance(k, bool) or not isinstance(k, int):
            raise errors.InvalidType(f"k must be an int, not {type(k).__name__}", 1)
        if k < 0:
            raise errors.InvalidArgument(f"k must be >= 0, got {k}", 1)
        if k == 0:
            return []
        span = yield from self._minutes(window_secs, now)
        sources = [self._key("ch", "all")] if span is None else _schema.minute_keys(self.namespace, "ch", *span)
        keys = [self._key("tmp", "top")] + sources
        reply = yield from self._reads.script(_schema.ANALYTICS_TOP, keys, [k])
        rows = []
        for i in range(0, len(reply), 2):
            member = reply[i]
            if isinstance(member, bytes):
                member = member.decode("utf-8")
            rows.append((member, int(float(reply[i + 1]))))
        rows.sort(key=lambda r: (-r[1], r[0].encode("utf-8")))
        return rows[:k]

    def _count(self, name: str) -> "Plan[int]":
        key = self._key(name)
        value = yield from self._reads.integer(key, Op("get", key))
        return 0 if value is None else value

    def _users_sketch(self, window_secs: Optional[int], now: Optional[int]) -> "Plan[HyperLogLog]":
        keys = yield from self._user_keys(window_secs, now)
        values = yield from self._reads.call(keys, "a HyperLogLog", Op("mget", keys))
        out = HyperLogLog()
        for key, value in zip(keys, values):
            if value is not None:
                try:
                    out.merge(HyperLogLog.from_redis(value))
                except errors.Corrupt as exc:
                    raise errors.Corrupt(f"{key} is not a valid HyperLogLog: {exc}", errors.Corrupt.status) from None
        return out

    # -- the daily history ----------------------------------------------------------

    def _history(self, guild_id: Any, args: List[Any]) -> "Plan[Any]":
        guild = _history.check_guild(guild_id)
        keys = [self._key("config"), self._key("clock"), self._key("hd", guild or "")]
        return (yield from self._reads.script(_schema.HISTORY_READ, keys, [int(time.time())] + args))

    def _active_users(self, day: Any, period: Any, guild_id: Any) -> "Plan[int]":
        number = _history.day_number(day)
        code = {"day": "a", "week": "w", "month": "m"}[_history.check_period(period, tuple(_history.PERIODS))]
        return int((yield from self._history(guild_id, ["active", number, code])))

    def _retention(self, period: Any, cohorts: Any, now: Any, guild_id: Any) -> "Plan[List[Cohort]]":
        period = _history.check_period(period, _history.COHORT_PERIODS)
        n = _history.check_count(cohorts, "cohorts")
        flat = yield from self._history(guild_id, ["retention", _history.check_now(now), period, n])
        out, i = [], 0
        for c in range(n):
            start, size = int(flat[i]), int(flat[i + 1])
            span = n - c
            out.append(_history.cohort(start, size, [int(v) for v in flat[i + 2 : i + 2 + span]]))
            i += 2 + span
        return out

    def _heatmap(self, days: Any, now: Any, channel_id: Any, guild_id: Any) -> "Plan[List[List[int]]]":
        n = _history.check_count(days, "days")
        if channel_id is not None and not isinstance(channel_id, str):
            raise errors.InvalidType(f"channel_id must be a str or None, not {type(channel_id).__name__}", 1)
        args = ["heatmap", _history.check_now(now), n, "0" if channel_id is None else "1", channel_id or ""]
        flat = yield from self._history(guild_id, args)
        return [[int(v) for v in flat[d * 24 : d * 24 + 24]] for d in range(7)]

    def _config(self) -> "Plan[Dict[str, int]]":
        key = self._key("config")
        stored = yield from self._reads.call([key], "a hash", Op("hgetall", key))
        try:
            return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in stored.items()}
        except ValueError:
            raise errors.Corrupt(f"{key} holds a value that is not an integer", errors.Corrupt.status) from None


class SharedAnalytics(_AnalyticsReader):
    """The shared analytics of namespace ``namespace`` in Redis ``client`` (a
    ``redis.Redis`` or ``redis.cluster.RedisCluster``; ``decode_responses`` may be
    on or off). For a ``redis.asyncio`` client: :class:`AsyncSharedAnalytics`.

    ``window_minutes`` is the longest window a query may ask for (at most the
    writers' own ``window_minutes``: minute keys expire after the writers' window
    plus 10 minutes).

    "Now": a query's ``now=None`` means the newest event time published by
    ``clock="event_time"`` writers (``{ns}:clock``) if there is one, else the wall
    clock, the same "now" the writers' own queries use.

    Every query is one Redis round trip, two for a window with ``now=None`` (it
    reads ``{ns}:clock`` first); the constructor makes none (the first query also
    reads the eviction policy once, and warns unless it is ``noeviction``, when
    ``check_eviction``). Errors: a key of another type or an
    invalid value raises :class:`~engagehub.Corrupt` naming the key; redis-py's
    own ``ConnectionError`` and ``TimeoutError`` pass through unchanged (bound
    them with the client's ``socket_timeout``). Thread safety: as safe as the
    client (redis-py clients are).
    """

    def now(self) -> int:
        """The default "now" of the queries (see the class docs)."""
        return self._reads.run("now", self._now())

    def unique_users(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> int:
        """Distinct users of every writer in the ``window_secs`` before ``now``
        (rounded up to whole minutes; ``None``: all time): ``PFCOUNT`` over the
        minute keys, equal to what one processor fed every writer's events answers
        (the sketches are register-identical)."""
        return self._reads.run("unique_users", self._unique_users(window_secs, now))

    def get_unique_users_last_hour(self) -> int:
        """Drop-in: distinct users in the last hour."""
        return self._reads.run("get_unique_users_last_hour", self._unique_users(3600, None))

    def top_channels(
        self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
    ) -> List[Tuple[str, int]]:
        """The ``k`` busiest channels as ``(channel_id, count)``, busiest first and
        ties by channel id, over the ``window_secs`` before ``now`` (``None``: all
        time, from ``{ns}:ch:all``). One script: the sum of the minute sets, then
        its top ``k``."""
        return self._reads.run("top_channels", self._top_channels(k, window_secs, now))

    def get_top_channels(self, k: int = 10) -> List[Tuple[str, int]]:
        """Drop-in: the ``k`` busiest channels of all time."""
        return self._reads.run("get_top_channels", self._top_channels(k, None, None))

    def total_events_processed(self) -> int:
        """Events processed by every writer (``{ns}:events``)."""
        return self._reads.run("total_events_processed", self._count("events"))

    def events_dead_lettered(self) -> int:
        """Events of every writer whose batch the flush callback failed on every
        attempt (``{ns}:dead_lettered``): processed and counted by the analytics,
        but not in your database. Show it beside :meth:`total_events_processed`."""
        return self._reads.run("events_dead_lettered", self._count("dead_lettered"))

    def users_sketch(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> HyperLogLog:
        """The union of the window's minute sketches as a
        :class:`~engagehub.HyperLogLog` (for merging with other sketches)."""
        return self._reads.run("users_sketch", self._users_sketch(window_secs, now))

    def config(self) -> Dict[str, int]:
        """The namespace's configuration as its first writer stored it
        (``{ns}:config``: ``window_minutes``, ``max_members``, ``history_days``),
        ``{}`` before any writer published."""
        return self._reads.run("config", self._config())

    def active_users(
        self, day: "Union[_dt.date, str]", period: str = "day", guild_id: Union[str, int, None] = None
    ) -> int:
        """Users of every writer active on ``day`` (a ``datetime.date`` or
        ``"YYYY-MM-DD"``, UTC), or in the 7 (``period="week"``) or 30
        (``"month"``) days ending with it, in guild ``guild_id`` (``None``: every
        event). Exact, and equal to one processor fed every writer's events; one
        round trip. A day outside the writers' ``history_days`` ending today (the
        namespace's clock or the wall clock) raises
        :class:`~engagehub.InvalidArgument`."""
        return self._reads.run("active_users", self._active_users(day, period, guild_id))

    def retention(
        self, period: str = "week", cohorts: int = 8, now: Optional[int] = None, guild_id: Union[str, int, None] = None
    ) -> List[Cohort]:
        """The ``cohorts`` retention cohorts of ``period`` (``"week"``: Monday to
        Sunday, UTC; or ``"day"``) ending with the one holding ``now``, oldest
        first, as :class:`~engagehub.Cohort`: the users first seen in each, and the
        fraction of them active in each later period. Exact; one round trip."""
        return self._reads.run("retention", self._retention(period, cohorts, now, guild_id))

    def activity_heatmap(
        self,
        days: int = 28,
        now: Optional[int] = None,
        channel_id: Optional[str] = None,
        guild_id: Union[str, int, None] = None,
    ) -> List[List[int]]:
        """Events of every writer by weekday (7 rows, Monday first) and UTC hour
        (24 columns) over the ``days`` days ending with the day of ``now``, in
        ``channel_id`` and ``guild_id`` (``None``: all). Exact; one round trip."""
        return self._reads.run("activity_heatmap", self._heatmap(days, now, channel_id, guild_id))


class AsyncSharedAnalytics(_AnalyticsReader):
    """:class:`SharedAnalytics` for a ``redis.asyncio`` client
    (``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``): the same
    queries, each a coroutine, with the same answers and the same errors. The
    constructor makes no network call. Use it from the loop the client belongs to."""

    async def now(self) -> int:
        """The default "now" of the queries (see :class:`SharedAnalytics`)."""
        return await self._reads.arun("now", self._now())

    async def unique_users(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> int:
        """See :meth:`SharedAnalytics.unique_users`."""
        return await self._reads.arun("unique_users", self._unique_users(window_secs, now))

    async def get_unique_users_last_hour(self) -> int:
        """Drop-in: distinct users in the last hour."""
        return await self._reads.arun("get_unique_users_last_hour", self._unique_users(3600, None))

    async def top_channels(
        self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
    ) -> List[Tuple[str, int]]:
        """See :meth:`SharedAnalytics.top_channels`."""
        return await self._reads.arun("top_channels", self._top_channels(k, window_secs, now))

    async def get_top_channels(self, k: int = 10) -> List[Tuple[str, int]]:
        """Drop-in: the ``k`` busiest channels of all time."""
        return await self._reads.arun("get_top_channels", self._top_channels(k, None, None))

    async def total_events_processed(self) -> int:
        """Events processed by every writer (``{ns}:events``)."""
        return await self._reads.arun("total_events_processed", self._count("events"))

    async def events_dead_lettered(self) -> int:
        """See :meth:`SharedAnalytics.events_dead_lettered`."""
        return await self._reads.arun("events_dead_lettered", self._count("dead_lettered"))

    async def users_sketch(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> HyperLogLog:
        """See :meth:`SharedAnalytics.users_sketch`."""
        return await self._reads.arun("users_sketch", self._users_sketch(window_secs, now))

    async def config(self) -> Dict[str, int]:
        """See :meth:`SharedAnalytics.config`."""
        return await self._reads.arun("config", self._config())

    async def active_users(
        self, day: "Union[_dt.date, str]", period: str = "day", guild_id: Union[str, int, None] = None
    ) -> int:
        """See :meth:`SharedAnalytics.active_users`."""
        return await self._reads.arun("active_users", self._active_users(day, period, guild_id))

    async def retention(
        self, period: str = "week", cohorts: int = 8, now: Optional[int] = None, guild_id: Union[str, int, None] = None
    ) -> List[Cohort]:
        """See :meth:`SharedAnalytics.retention`."""
        return await self._reads.arun("retention", self._retention(period, cohorts, now, guild_id))

    async def activity_heatmap(
        self,
        days: int = 28,
        now: Optional[int] = None,
        channel_id: Optional[str] = None,
        guild_id: Union[str, int, None] = None,
    ) -> List[List[int]]:
        """See :meth:`SharedAnalytics.activity_heatmap`."""
        return await self._reads.arun("activity_heatmap", self._heatmap(days, now, channel_id, guild_id))


__all__ = ["AsyncSharedAnalytics", "SharedAnalytics"]
