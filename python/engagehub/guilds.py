"""Leaderboards per guild in one handle: :class:`GuildLeaderboards`."""

from __future__ import annotations

import logging
import weakref
from typing import Any, NamedTuple, Optional, Sequence

from . import errors
from ._handle import NativeHandle, native_close
from ._native import _call, check, encode, ffi, guild_arg, last_error, lib
from ._types import UserRankDict
from .leaderboard import _PUBLISHING, Leaderboard, RankedUser, TimeSource, _BoardClock, _count, _real

# Bound once: attribute lookups on `lib` cost as much as a small call.
_add = lib.eh_board_group_add
_top = lib.eh_board_group_top
_rank = lib.eh_board_group_rank
_EH_FULL = lib.EH_FULL
_EH_NOT_FOUND = lib.EH_NOT_FOUND
_SIZE_MAX = 2 ** (8 * ffi.sizeof("size_t")) - 1


def _guild(guild_id: Any) -> bytes:
    """A guild id as UTF-8 bytes (:func:`engagehub._native.guild_arg`); a board's
    guild is never ``None``."""
    if guild_id is None:
        raise errors.InvalidType("guild_id must be str, int or bytes, not NoneType", 1)
    return guild_arg(guild_id)


class GuildLeaderboardsStats(NamedTuple):
    """Counters from :meth:`GuildLeaderboards.stats`, summed over every guild's
    board."""

    boards: int
    """Boards (guilds) held."""
    users: int
    """Users over every board."""
    heap_bytes: int
    """Heap bytes: the guild tables and every board (see docs/guilds.md)."""
    evicted: int
    """Users evicted at ``max_users`` (per board)."""
    refused: int
    """Newcomers refused at ``max_users`` (``update_user`` returned False)."""
    future_refused: int
    """Updates refused for a timestamp later than the wall clock plus
    ``max_future_secs``."""
    rebases: int
    """Times a board's decay landmark moved forward."""
    pending: int = 0
    """Publishing: changes recorded and not yet taken by the publisher."""
    pending_dropped: int = 0
    """Publishing: changes not recorded because a board held ``max_pending`` (also
    logged); the shared boards miss them."""
    dirty: int = 0
    """Publishing: guilds changed since their last batch was taken."""
    in_flight: int = 0
    """Publishing: guilds whose batch was taken and not yet acknowledged by Redis."""
    unpublished_dropped: int = 0
    """Publishing: changes not yet taken that :meth:`GuildLeaderboards.drop_guild`
    discarded."""
    published_batches: int = 0
    """Publishing: scripts applied by Redis (each a chunk of one guild's batch)."""
    published_rows: int = 0
    """Publishing: changes (one per user per batch) applied by Redis."""
    publish_duplicates: int = 0
    """Publishing: resent scripts Redis had already applied (a lost reply),
    recognised by their sequence number and not applied again."""
    publish_failures: int = 0
    """Publishing: attempts that failed (Redis down, slow, a refused key); retried."""
    publish_waiting: int = 0
    """Publishing: scripts frozen but not yet acknowledged by Redis."""
    trimmed: int = 0
    """Publishing: users removed from the shared boards by ``max_users`` after this
    writer's batches."""


def _collected_unclosed(publisher: Any, key_prefix: str) -> None:
    if not publisher._closed:
        publisher.abandon()
        logging.getLogger("engagehub").error(
            "GuildLeaderboards(key_prefix=%r) was garbage-collected without close(): its changes since the last "
            "publish (%d batches waiting) were not published", key_prefix, publisher.waiting,
        )


class GuildLeaderboards(_BoardClock, NativeHandle):
    """A time-decayed leaderboard per guild, all in one native handle.

    Each guild's board is a :class:`~engagehub.Leaderboard`'s board (the same decay,
    tie order, ``max_users`` rule and input checks), made on the guild's first
    update with the settings given here. The methods are :class:`Leaderboard`'s
    with a leading ``guild_id`` (a str, or an int such as discord.py's
    ``guild.id``, taken as its decimal digits): the answers for a guild are those
    of a ``Leaderboard`` fed that guild's updates. No thread and no handle per
    guild: guilds are spread over 64 lock stripes, so updates of different guilds
    rarely wait for each other; an empty board costs about 1.2 KB, one of 10 users
    about 2.3 KB (docs/guilds.md). ``max_guilds`` (0 = unbounded) bounds the
    boards: an update of one more guild raises :class:`~engagehub.Full`.

    Sharing through Redis: with ``redis=<client>`` and ``key_prefix="..."`` the
    board of guild ``g`` is published to the shared board ``f"{key_prefix}:{g}"``
    (the key schema of ``Leaderboard(redis=, key=)``; read it with
    ``SharedLeaderboard(client, f"{key_prefix}:{g}")``), every guild through ONE
    publisher thread, taking batches only from the guilds that changed, exactly
    once (one publisher id for the group, a sequence key per board). The
    guarantees are those of docs/shared.md: no Redis call outside that thread, a
    constructor that makes no network call, bounded waits in :meth:`publish_now`
    and :meth:`close`, refusal of a writer whose decay differs from a board's
    stored one. No ``journal=`` yet: what was not published is lost with the
    process.

    Thread safety: safe to share between threads; :meth:`close` may run while
    other threads use it (their later calls raise :class:`~engagehub.Closed`).
    After ``fork()`` the child keeps every board and publishes its own later
    changes under a new publisher id (the parent publishes what was pending).
    """

    _kind = "guild leaderboards"
    _native_close = native_close(lib.eh_board_group_close)
    # Leaderboard's decoder of a native ranking (it calls only self._raise).
    _columns = Leaderboard._columns

    def __init__(
        self,
        decay_factor: float = 0.95,
        max_users: int = 100000,
        *,
        decay_period_secs: float = 86400.0,
        max_future_secs: int = 86400,
        max_guilds: int = 0,
        redis: Any = None,
        key_prefix: Optional[str] = None,
        publish_interval_ms: int = 1000,
        max_pending: int = 100_000,
        close_timeout: Optional[float] = 30.0,
        publish_last_update: bool = True,
    ) -> None:
        if isinstance(max_future_secs, bool) or not isinstance(max_future_secs, int):
            raise errors.InvalidType(f"max_future_secs must be an int, not {type(max_future_secs).__name__}", 1)
        if max_future_secs < 1:
            raise errors.InvalidArgument(f"max_future_secs must be >= 1, got {max_future_secs}", 1)
        if not isinstance(publish_last_update, bool):
            raise errors.InvalidType(f"publish_last_update must be a bool, not {type(publish_last_update).__name__}", 1)
        decay_factor = _real(decay_factor, "decay_factor")
        decay_period_secs = _real(decay_period_secs, "decay_period_secs")
        for value, what in ((max_users, "max_users"), (max_guilds, "max_guilds")):
            if isinstance(value, bool) or not isinstance(value, int):
                raise errors.InvalidType(f"{what} must be an int, not {type(value).__name__}", 1)
            if not 0 <= value < 2**64:
                raise errors.InvalidArgument(f"{what} must be in [0, 2**64), got {value}", 1)
        # 0 means "default" in the C config; here 0 is a real (invalid) value.
        if decay_factor == 0:
            raise errors.InvalidArgument("decay_factor must be in (0, 1], got 0", 1)
        if decay_period_secs == 0:
            raise errors.InvalidArgument("decay_period_secs must be positive, got 0", 1)
        config = ffi.new(
            "eh_board_group_config *",
            {
                "struct_size": ffi.sizeof("eh_board_group_config"),
                "decay_factor": decay_factor,
                "decay_period_secs": decay_period_secs,
                "max_users": max_users,
                "max_future_secs": min(max_future_secs, 2**63 - 1),
                "max_guilds": max_guilds,
            },
        )
        out = ffi.new("eh_board_group **")
        self._time_source: Optional[TimeSource] = None
        self._publisher: Any = None
        _call(lib.eh_board_group_new, config, out)
        self._own(out[0], lib.eh_board_group_free)
        if redis is not None:
            from .shared._publisher import Publisher, seconds_arg
            from .shared._sources import GroupSource

            try:
                self._close_timeout = seconds_arg(close_timeout, "close_timeout")
                source = GroupSource(
                    self, key_prefix, decay_factor=decay_factor, decay_period_secs=decay_period_secs,
                    max_users=max_users, last_update=publish_last_update,
                )
                pending = _count(max_pending, "max_pending")
                if not 0 < pending <= 65536 * 5000:
                    raise errors.InvalidArgument(f"max_pending must be 1 to {65536 * 5000}, got {pending}", 1)
                _call(lib.eh_board_group_publish_enable, self._cdata, pending)
                self._publisher = Publisher(source, redis, interval_ms=publish_interval_ms)
            except errors.EngageHubError:
                super().close()
                raise
            _PUBLISHING.add(self)  # type: ignore[arg-type]  # closed (published) at exit
            weakref.finalize(self, _collected_unclosed, self._publisher, key_prefix).atexit = False

    # -- publishing ----------------------------------------------------------------

    def publish_now(self, timeout: Optional[float] = None) -> bool:
        """Publishes every guild's pending changes now, waiting for Redis at most
        ``timeout`` seconds (``None``: ``close_timeout``). True when everything was
        applied; False when Redis did not acknowledge in time, or at once when
        Redis refused a batch because a key is not engagehub's (logged, naming the
        key); the publisher keeps retrying in the background either way. Raises
        :class:`~engagehub.InvalidArgument` when a guild's shared board has another
        decay than this writer's (also logged). Without ``redis=``: True."""
        self._h()
        if self._publisher is None:
            return True
        from .shared._publisher import seconds_arg

        wait = self._close_timeout if timeout is None else seconds_arg(timeout, "timeout")
        return bool(self._publisher.publish(wait))

    flush = publish_now

    def close(self) -> None:
        """Releases every board. With ``redis=``, first publishes what is pending,
        waiting at most ``close_timeout`` seconds; what is left then is logged and
        counted in :attr:`unpublished`, and the boards close anyway."""
        if self._closed:
            return
        publisher = self._publisher
        if publisher is not None:
            publisher.close(self._close_timeout)
            _PUBLISHING.discard(self)  # type: ignore[arg-type]
        super().close()

    def _repr_details(self) -> str:
        return f"{self._native_stats().boards} guilds"

    def _raise(self, status: int) -> None:
        check(status)

    # -- updates -------------------------------------------------------------------

    def update_user(self, guild_id: "str | int", user_id: str, points: float,
                    timestamp: Optional[float] = None) -> bool:
        """Adds ``points`` earned at ``timestamp`` (``None`` or <= 0: now) to the
        user on the guild's board (made if new). Returns False (counted in
        ``stats().refused``) when the guild's board is at ``max_users`` and the
        newcomer ranks below everyone; raises :class:`~engagehub.Full` for a new
        guild beyond ``max_guilds``."""
        # Written for the usual str ids and int (or omitted) timestamp: one native
        # call and little else; other types take the except branches and give
        # the same results (as Leaderboard.update_user's cffi path).
        if self._closed:
            raise self._closed_error()
        try:
            gid = guild_id.encode()  # type: ignore[union-attr]
        except (AttributeError, UnicodeEncodeError):  # an int, bytes, a lone surrogate
            gid = _guild(guild_id)
        try:
            uid = user_id.encode()
        except (AttributeError, UnicodeEncodeError):
            uid = encode(user_id, "user_id")
        if timestamp is None:
            source = self._time_source
            timestamp = 0 if source is None else int(source())
        try:
            status = _add(self._cdata, gid, len(gid), uid, len(uid), points, timestamp)
        except (TypeError, OverflowError):  # a float timestamp, points not a number, out of range
            status = _add(self._cdata, gid, len(gid), uid, len(uid), _real(points, "points"), self._stamp(timestamp))
        if status == 0:
            return True
        if status == _EH_FULL and "max_guilds" not in last_error():
            return False
        self._raise(status)
        return False  # unreachable: _raise raised

    def add(self, guild_id: "str | int", user_id: str, points: float, timestamp: Optional[float] = None) -> None:
        """:meth:`update_user` that raises :class:`~engagehub.Full` for a refusal."""
        h = self._h()
        gid = _guild(guild_id)
        uid = encode(user_id, "user_id")
        _call(_add, h, gid, len(gid), uid, len(uid), _real(points, "points"), self._stamp(timestamp))

    def set_score(self, guild_id: "str | int", user_id: str, score: float, timestamp: Optional[float] = None) -> None:
        """Sets the user's score on the guild's board as of ``timestamp``, replacing
        its history (:meth:`Leaderboard.set`)."""
        h = self._h()
        gid = _guild(guild_id)
        uid = encode(user_id, "user_id")
        _call(lib.eh_board_group_set, h, gid, len(gid), uid, len(uid), _real(score, "score"),
              self._stamp(timestamp))

    def remove_user(self, guild_id: "str | int", user_id: str) -> None:
        """Removes the user from the guild's board; raises
        :class:`~engagehub.NotFound` if absent. With ``redis=`` the removal is
        published even then (as :meth:`Leaderboard.remove`)."""
        h = self._h()
        gid = _guild(guild_id)
        uid = encode(user_id, "user_id")
        _call(lib.eh_board_group_remove, h, gid, len(gid), uid, len(uid))

    def drop_guild(self, guild_id: "str | int") -> bool:
        """Drops the guild's board and frees its memory; False if there was none.
        With ``redis=``, changes of the guild not yet taken by the publisher are
        discarded (counted in ``stats().unpublished_dropped``; call
        :meth:`publish_now` first to keep them); the shared board stays in Redis.
        A later update of the guild starts a new, empty board."""
        h = self._h()
        gid = _guild(guild_id)
        discarded = ffi.new("uint64_t *")
        status = lib.eh_board_group_drop(h, gid, len(gid), discarded)
        if status == _EH_NOT_FOUND:
            return False
        self._raise(status)
        return True

    # -- queries -------------------------------------------------------------------

    def top(self, guild_id: "str | int", k: int = 10, offset: int = 0, now: Optional[float] = None) -> list[RankedUser]:
        """Up to ``k`` users of the guild's board from 0-based position ``offset``,
        best first (``[]`` for a guild without a board)."""
        h = self._h()
        gid = _guild(guild_id)
        k, offset = _count(k, "k"), _count(offset, "offset")
        return list(map(RankedUser, *self._columns(_top, h, gid, len(gid), offset, k, self._stamp(now))))

    def around(self, guild_id: "str | int", user_id: str, radius: int = 5,
               now: Optional[float] = None) -> list[RankedUser]:
        """The users within ``radius`` places of ``user_id`` on the guild's board
        (:class:`~engagehub.NotFound` if absent)."""
        h = self._h()
        gid = _guild(guild_id)
        radius = _count(radius, "radius")
        uid = encode(user_id, "user_id")
        columns = self._columns(lib.eh_board_group_around, h, gid, len(gid), uid, len(uid), radius,
                                self._stamp(now))
        return list(map(RankedUser, *columns))

    def rank(self, guild_id: "str | int", user_id: str, now: Optional[float] = None) -> RankedUser:
        """The user's rank and score on the guild's board; raises
        :class:`~engagehub.NotFound`."""
        h = self._h()
        gid = _guild(guild_id)
        uid = encode(user_id, "user_id")
        info = ffi.new("eh_rank_info *")
        _call(_rank, h, gid, len(gid), uid, len(uid), self._stamp(now), info)
        return RankedUser(user_id, info.rank, info.score, info.last_update)

    def get_top_users(self, guild_id: "str | int", k: int = 10) -> list[UserRankDict]:
        """Drop-in shape: ``[{"user_id", "score", "rank", "last_update"}]``."""
        return [
            {"user_id": r.user_id, "score": r.score, "rank": r.rank, "last_update": r.last_update}
            for r in self.top(guild_id, k)
        ]

    def get_user_rank(self, guild_id: "str | int", user_id: str) -> Optional[UserRankDict]:
        """Drop-in shape: ``{"user_id", "rank", "score", "last_update"}`` or
        ``None`` if absent."""
        h = self._h()
        gid = _guild(guild_id)
        uid = encode(user_id, "user_id")
        info = ffi.new("eh_rank_info *")
        status = _rank(h, gid, len(gid), uid, len(uid), self._stamp(None), info)
        if status:
            if status == _EH_NOT_FOUND:
                return None
            self._raise(status)
        return {"user_id": user_id, "rank": info.rank, "score": info.score, "last_update": info.last_update}

    def size(self, guild_id: "str | int") -> int:
        """Users on the guild's board (0 for a guild without a board)."""
        h = self._h()
        gid = _guild(guild_id)
        out = ffi.new("size_t *")
        _call(lib.eh_board_group_len, h, gid, len(gid), out)
        return int(out[0])

    def guilds(self) -> list[str]:
        """The guilds with a board, in id byte order (for digit ids of one
        length, numeric order)."""
        h = self._h()
        out = ffi.new("eh_guild_list *")
        _call(lib.eh_board_group_guilds, h, ffi.NULL, 0, _SIZE_MAX, out)
        n = out.len
        try:
            if not n:
                return []
            block = ffi.buffer(out.rows, out.size)[:]
        finally:
            lib.eh_guild_list_free(out)
        row_size = ffi.sizeof("eh_guild_row")
        ids = block[n * row_size : -1].decode("utf-8").split("\0")
        if len(ids) != n:  # a guild id contains a NUL itself: use the offsets
            words: Sequence[int] = memoryview(block)[: n * row_size].cast("Q").tolist()
            base = n * row_size
            ids = [block[base + o : base + o + s].decode("utf-8") for o, s in zip(words[1::3], words[2::3])]
        return ids

    def _native_stats(self) -> GuildLeaderboardsStats:
        out = ffi.new("eh_board_group_stats *", {"struct_size": ffi.sizeof("eh_board_group_stats")})
        _call(lib.eh_board_group_get_stats, self._h(), out)
        return GuildLeaderboardsStats(
            out.boards, out.users, out.heap_bytes, out.evicted, out.refused, out.future_refused, out.rebases,
            out.pending, out.pending_dropped, out.dirty, out.in_flight, out.unpublished_dropped,
        )

    def stats(self) -> GuildLeaderboardsStats:
        """Counters summed over every board and, with ``redis=``, the publisher's
        (see :class:`GuildLeaderboardsStats`). O(guilds)."""
        s = self._native_stats()
        p = self._publisher
        if p is None:
            return s
        c, source = p.counters, p.source
        return s._replace(
            published_batches=c.batches,
            published_rows=source.rows,
            publish_duplicates=c.duplicates,
            publish_failures=c.failures,
            publish_waiting=p.waiting,
            trimmed=source.trimmed,
        )


__all__ = ["GuildLeaderboards", "GuildLeaderboardsStats"]
