"""Time-decayed leaderboard: a drop-in for ``cpp_leaderboard.Leaderboard``.

:class:`Leaderboard`'s primary calls are ``add``, ``set``, ``remove``, ``clear``,
``top``, ``rank``, ``around``, ``len(board)``, ``stats``, ``save`` and ``load``;
the C++ extension's names (``update_user``, ``get_top_users``, ``get_user_rank``,
``size``, ``save_to_json``, ``load_from_json``) are the compatibility layer,
:class:`engagehub._compat.LeaderboardDropIns` (docs/compat.md).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import struct
import warnings
import weakref
from typing import Any, Callable, NamedTuple, Optional, Sequence

from . import errors
from ._compat import LeaderboardDropIns
from ._compiled import fast
from ._handle import NativeHandle, native_close
from ._native import _call, check, copied, encode, ffi, journal_args, lib, path_bytes, real_arg, timestamp_arg
from ._native import count_arg as _count
from ._types import RankedUser

TimeSource = Callable[[], float]

# Bound once: attribute lookups on `lib` cost as much as a small call.
_top = lib.eh_leaderboard_top
_ranking_free = lib.eh_ranking_free
_new = ffi.new
_EH_FULL = lib.EH_FULL
_real = real_arg

FAST_UPDATES: bool = fast is not None
"""True when ``Leaderboard.update_user`` (and ``add``) use the compiled fast path."""


_buffer = ffi.buffer
_ROW_SIZE = ffi.sizeof("eh_rank_row")
_ROW_STRUCTS: dict[int, struct.Struct] = {}


def _row_struct(n: int) -> struct.Struct:
    """A Struct for n native `eh_rank_row`s (rank u64, score f64, last_update i64,
    id_offset u64, id_len u64), cached per n."""
    cached = _ROW_STRUCTS.get(n)
    if cached is None:
        cached = _ROW_STRUCTS[n] = struct.Struct("=" + "QdqQQ" * n)
    return cached


class LeaderboardStats(NamedTuple):
    """Counters from :meth:`Leaderboard.stats`."""

    len: int
    """Users on the board."""
    evicted: int
    """Users evicted to make room for a higher-scoring newcomer (``max_users``)."""
    refused: int
    """Newcomers refused because the board was full and they ranked too low."""
    rebases: int
    """Times the decay landmark moved forward."""
    landmark: int
    """Current landmark, seconds since the epoch."""
    heap_bytes: int
    """Heap bytes held by the native board."""
    future_refused: int = 0
    """Updates refused for a timestamp later than the wall clock plus
    ``max_future_secs``."""
    pending: int = 0
    """Publishing to Redis: changes recorded and not yet drained by the publisher
    (users with a pending sum, plus sets and removes)."""
    pending_dropped: int = 0
    """Publishing: changes not recorded because ``max_pending`` were held (also
    logged); the shared board misses them."""
    published_batches: int = 0
    """Publishing: scripts applied by Redis (each a batch of changes)."""
    published_rows: int = 0
    """Publishing: changes (one per user per batch) applied by Redis."""
    publish_duplicates: int = 0
    """Publishing: retried batches Redis had already applied (a lost reply),
    recognised by their sequence number and not applied again."""
    publish_failures: int = 0
    """Publishing: attempts that failed (Redis down, slow, loading); retried."""
    publish_waiting: int = 0
    """Publishing: batches drained but not yet acknowledged by Redis."""
    trimmed: int = 0
    """Publishing: users removed from the shared board by ``max_users`` after this
    writer's batches."""
    journal_bytes: int = 0
    """``journal=``: bytes logged since the last checkpoint (a gauge)."""
    journal_checkpoints: int = 0
    """``journal=``: checkpoints written since this board opened."""
    journal_replayed: int = 0
    """``journal=``: log records replayed when it opened (0 after a clean close)."""
    journal_torn: int = 0
    """``journal=``: torn tails truncated when it opened (a kill during a write)."""
    journal_failing: int = 0
    """``journal=``: 1 when the maintenance thread's last sync or checkpoint failed
    (:attr:`Leaderboard.journal_error` says why; a gauge). An update that cannot be
    logged raises :class:`~engagehub.IOFailure` and changes nothing."""


#: Boards publishing to Redis, closed (within their close_timeout) at exit.
_PUBLISHING: "weakref.WeakSet[Leaderboard]" = weakref.WeakSet()


@atexit.register
def _close_publishing_boards() -> None:
    for board in list(_PUBLISHING):
        try:
            board.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            logging.getLogger("engagehub").exception("engagehub: closing a leaderboard at exit failed")


def _collected_unclosed(publisher: Any, key: str) -> None:
    if not publisher._closed:
        publisher.abandon()
        logging.getLogger("engagehub").error(
            "Leaderboard(key=%r) was garbage-collected without close(): its changes since the last "
            "publish (%d batches waiting) were not published", key, publisher.waiting,
        )


class SnapshotEntriesSkipped(UserWarning):
    """Issued by :meth:`Leaderboard.load_from_json` when entries of a C++ extension
    snapshot could not be loaded (the rest were); they are listed in
    :attr:`Leaderboard.last_load_skipped`."""


class SkippedEntry(NamedTuple):
    """An entry of a C++ extension snapshot left out of a load."""

    index: int
    """0-based position in the file's ``entries``."""
    user_id: str
    """Its id ("" if it had none)."""
    reason: str
    """Why it was skipped."""


def _skipped_at_load(handle: Any) -> "list[SkippedEntry]":
    count = ffi.new("uint64_t *")
    needed = ffi.new("size_t *")
    _call(lib.eh_leaderboard_load_skipped, handle, count, ffi.NULL, 0, needed)
    if count[0] == 0:
        return []
    buf = ffi.new("uint8_t[]", needed[0])
    _call(lib.eh_leaderboard_load_skipped, handle, count, buf, needed[0], needed)
    rows = json.loads(ffi.buffer(buf, needed[0])[:])
    return [SkippedEntry(r["index"], r["user_id"], r["reason"]) for r in rows]


class _BoardClock:
    """What both leaderboard handles (:class:`Leaderboard`, :class:`~engagehub.GuildLeaderboards`)
    share: the time source of updates and queries, and the count a close left
    unpublished."""

    _time_source: Optional[TimeSource]
    _publisher: Any

    @property
    def unpublished(self) -> int:
        """Changes a :meth:`close` could not publish to Redis within
        ``close_timeout`` (0 without ``redis=`` or when everything got there)."""
        return 0 if self._publisher is None else self._publisher.counters.unpublished_at_close

    def set_time_source(self, source: Optional[TimeSource]) -> None:
        """Uses ``source()`` (seconds since the epoch) as "now"; ``None`` restores the
        wall clock."""
        if source is not None and not callable(source):
            raise errors.InvalidType("time source must be callable or None", 1)
        self._time_source = source

    def _stamp(self, timestamp: Optional[float]) -> int:
        """An update's or a query's time: ``None`` is the time source's now (0, the
        native wall clock, without one)."""
        if timestamp is None:
            source = self._time_source
            return 0 if source is None else int(source())
        return timestamp_arg(timestamp)


class Leaderboard(_BoardClock, LeaderboardDropIns, NativeHandle):
    """Users ranked by exponentially decayed points.

    A user's score at time ``t`` is ``sum(points_i * decay_factor ** ((t - ts_i) /
    decay_period_secs))``. Updates are O(log n); ``top`` and ``rank`` never rescan
    the board. Timestamps are seconds since the Unix epoch; ``None`` (or a value
    <= 0) means "now" by the board's time source (the wall clock unless
    :meth:`set_time_source` set another).

    :meth:`close` (or leaving a ``with`` block) releases the board's memory; the
    garbage collector frees what remains. Later calls raise
    :class:`~engagehub.Closed`. A leaderboard is plain memory: a forked child works
    on its own copy.

    Thread safety: safe to share between threads. :meth:`close` may run while
    other threads use the board: it waits for their calls in progress (a save only
    for its serialisation), and their later calls raise :class:`~engagehub.Closed`.

    Sharing through Redis: with ``redis=<redis.Redis or RedisCluster>`` and
    ``key="..."`` every ``add``/``update_user``, ``set`` and ``remove`` is also
    published to the sorted set ``{key}:z`` (schema:
    :mod:`engagehub.shared.leaderboard`, README), where the updates of any number of
    writers add up; read it from any process with
    :class:`engagehub.shared.SharedLeaderboard`. Updates are summed per user
    natively in the same locked section (the update path is as fast as without
    Redis) and a background thread applies them every ``publish_interval_ms``,
    exactly once (publisher id + sequence number checked by the script), and
    completely in :meth:`publish_now` and :meth:`close`. Redis down or slow never
    blocks an update: changes wait (at most ``max_pending``; more are counted in
    ``stats().pending_dropped`` and logged) and are retried with backoff.

    This board's own queries (``top``, ``rank``, ``get_top_users``...) keep
    answering from its local board: its own updates only. A ``set`` is a ``ZADD``
    of the forward value on the shared board: it replaces every increment Redis
    has applied for that user so far, from every writer; increments other writers
    apply later add to it. ``remove`` is a ``ZREM`` (published even for a user the
    local board does not hold). ``clear`` and ``load_from_json`` are local (their
    pending changes are still published; loaded entries are not). Increments for
    users this board refuses or evicts at ``max_users`` are still published; the
    shared board keeps the ``max_users`` best after each batch (counted in
    ``stats().trimmed`` and ``{key}:meta`` ``trimmed``). After ``fork()`` the
    child publishes its own updates under a new publisher id (the parent publishes
    what was pending at the fork). ``publish_last_update=False`` leaves the shared
    last-update set ``{key}:last`` alone (about 40% of a publish's Redis time):
    :class:`~engagehub.shared.SharedLeaderboard` then reports ``last_update`` 0
    for users no writer published one for.
    """

    _kind = "leaderboard"
    _native_close = native_close(lib.eh_leaderboard_close)

    def __init__(
        self,
        decay_factor: float = 0.95,
        max_users: int = 100000,
        *,
        decay_period_secs: float = 86400.0,
        max_future_secs: int = 86400,
        redis: Any = None,
        key: Optional[str] = None,
        publish_interval_ms: int = 1000,
        max_pending: int = 1_000_000,
        close_timeout: Optional[float] = 30.0,
        publish_last_update: bool = True,
        journal: "Optional[str | os.PathLike[str]]" = None,
        journal_sync: "float | str" = 1.0,
    ) -> None:
        if isinstance(max_future_secs, bool) or not isinstance(max_future_secs, int):
            raise errors.InvalidType(f"max_future_secs must be an int, not {type(max_future_secs).__name__}", 1)
        if not isinstance(publish_last_update, bool):
            raise errors.InvalidType(f"publish_last_update must be a bool, not {type(publish_last_update).__name__}", 1)
        if max_future_secs < 1:
            raise errors.InvalidArgument(f"max_future_secs must be >= 1, got {max_future_secs}", 1)
        self.last_load_skipped: list[SkippedEntry] = []
        """Entries skipped by the last :meth:`load_from_json` of a C++ snapshot."""
        decay_factor = _real(decay_factor, "decay_factor")
        decay_period_secs = _real(decay_period_secs, "decay_period_secs")
        if isinstance(max_users, bool) or not isinstance(max_users, int):
            raise errors.InvalidType(f"max_users must be an int, not {type(max_users).__name__}", 1)
        if not 0 <= max_users < 2**64:
            raise errors.InvalidArgument(f"max_users must be in [0, 2**64), got {max_users}", 1)
        # 0 means "default" in the C config; here 0 is a real (invalid) value.
        if decay_factor == 0:
            raise errors.InvalidArgument("decay_factor must be in (0, 1], got 0", 1)
        if decay_period_secs == 0:
            raise errors.InvalidArgument("decay_period_secs must be positive, got 0", 1)
        journal_path, journal_sync_ms = journal_args(journal, journal_sync)
        config = ffi.new(
            "eh_leaderboard_config *",
            {
                "struct_size": ffi.sizeof("eh_leaderboard_config"),
                "decay_factor": decay_factor,
                "decay_period_secs": decay_period_secs,
                "max_users": max_users,
                "max_future_secs": min(max_future_secs, 2**63 - 1),
                "journal_path": journal_path,
                "journal_sync_ms": journal_sync_ms,
            },
        )
        out = ffi.new("eh_leaderboard **")
        self._time_source: Optional[TimeSource] = None
        _call(lib.eh_leaderboard_new, config, out)
        self._own(out[0], lib.eh_leaderboard_free)
        # The handle as a plain int, for the fast path. It stays valid for the
        # wrapper's whole life (ffi.gc frees the shell only with the wrapper), so a
        # fast call racing a close gets EH_SHUT_DOWN, never freed memory.
        self._address = int(ffi.cast("uintptr_t", self._cdata))
        self._publisher: Any = None
        if redis is not None:
            from .shared._publisher import Publisher, seconds_arg
            from .shared._sources import LeaderboardSource

            try:
                self._close_timeout = seconds_arg(close_timeout, "close_timeout")
                source = LeaderboardSource(
                    self, key, decay_factor=decay_factor, decay_period_secs=decay_period_secs,
                    max_users=max_users, last_update=publish_last_update,
                )
                pending = _count(max_pending, "max_pending")
                if pending > 65536 * 5000:
                    raise errors.InvalidArgument(f"max_pending must be at most {65536 * 5000}, got {pending}", 1)
                _call(lib.eh_leaderboard_publish_enable, self._cdata, pending)
                self._publisher = Publisher(source, redis, interval_ms=publish_interval_ms)
            except errors.EngageHubError:
                super().close()
                raise
            _PUBLISHING.add(self)
            # Never silent: a board collected without close() says what it lost.
            # (Not at exit: the exit hook above closes, and so publishes, first.)
            weakref.finalize(self, _collected_unclosed, self._publisher, key).atexit = False

    # -- publishing ----------------------------------------------------------------

    def publish_now(self, timeout: Optional[float] = None) -> bool:
        """Publishes every change made so far to Redis (a barrier): waits until
        Redis applied them, for at most ``timeout`` seconds (``None``:
        ``close_timeout``). True when everything was applied; False when Redis did
        not acknowledge in time, or at once when Redis refused the batch because one
        of the board's keys is not engagehub's (logged, naming the key); the
        publisher keeps retrying in the background either way. Raises
        :class:`~engagehub.InvalidArgument` when the shared board's stored decay
        refuses this writer (also logged). A board without ``redis=`` returns
        True."""
        self._h()
        if self._publisher is None:
            return True
        from .shared._publisher import seconds_arg

        wait = self._close_timeout if timeout is None else seconds_arg(timeout, "timeout")
        return bool(self._publisher.publish(wait))

    flush = publish_now

    def close(self) -> None:
        """Releases the board. With ``redis=``, first publishes every pending change,
        waiting at most ``close_timeout`` seconds for Redis; what is left then is
        logged as an error and counted in :attr:`unpublished`, and the board closes
        anyway (the interpreter's exit runs this too: a Redis that is down never
        holds it)."""
        if self._closed:
            return
        publisher = self._publisher
        if publisher is not None:
            publisher.close(self._close_timeout)
            _PUBLISHING.discard(self)
        super().close()

    def _repr_details(self) -> str:
        return f"{self.size()} users"

    # -- updates -----------------------------------------------------------------

    def _raise(self, status: int) -> None:
        # A close by another thread during the call: EH_SHUT_DOWN, i.e. Closed.
        check(status)

    def add(self, user_id: str, points: float, timestamp: Optional[float] = None) -> None:
        """Adds ``points`` earned at ``timestamp`` to the user (created if new).

        Raises :class:`~engagehub.errors.Full` when the board is at ``max_users``
        and the newcomer would rank below everyone; then nothing changes.
        """
        # The update path (compiled, or through cffi) is the drop-in update_user's,
        # which answers a refusal with False.
        if not self.update_user(user_id, points, timestamp):
            check(_EH_FULL)  # the refusal's message is this thread's last error

    def set(self, user_id: str, score: float, timestamp: Optional[float] = None) -> None:
        """Sets the user's score as of ``timestamp``, replacing its history."""
        h = self._h()
        uid = encode(user_id, "user_id")
        status = lib.eh_leaderboard_set(h, uid, len(uid), _real(score, "score"), self._stamp(timestamp))
        if status:
            self._raise(status)

    def remove(self, user_id: str) -> None:
        """Removes the user; raises :class:`~engagehub.errors.NotFound` if absent."""
        h = self._h()
        uid = encode(user_id, "user_id")
        _call(lib.eh_leaderboard_remove, h, uid, len(uid))

    def clear(self) -> None:
        """Removes every user."""
        _call(lib.eh_leaderboard_clear, self._h())

    # -- queries -----------------------------------------------------------------

    def _columns(self, fn: Callable[..., int], *args: Any) -> tuple[Sequence[Any], ...]:
        """Runs a ranking query; returns the columns (ids, ranks, scores, last_updates).

        Python on a small server spends ~100 ns per bytecode-level step, so the
        result is decoded with a fixed number of C-level calls instead of a loop.
        """
        ranking = _new("eh_ranking *")
        status = fn(*args, ranking)
        if status:
            self._raise(status)
        n = ranking.len
        if not n:
            _ranking_free(ranking)
            return ((), (), (), ())
        try:
            block = _buffer(ranking.rows, ranking.size)[:]
        finally:
            _ranking_free(ranking)
        # n native rows of (rank, score, last_update, id_offset, id_len), then the
        # ids, each followed by a NUL.
        fields = _row_struct(n).unpack_from(block)
        ids = block[n * _ROW_SIZE : -1].decode("utf-8").split("\0")
        if len(ids) != n:  # an id contains a NUL itself: use the offsets
            base = n * _ROW_SIZE
            ids = [
                block[base + off : base + off + size].decode("utf-8")
                for off, size in zip(fields[3::5], fields[4::5])
            ]
        return ids, fields[0::5], fields[1::5], fields[2::5]

    def top(self, k: int = 10, offset: int = 0, now: Optional[float] = None) -> list[RankedUser]:
        """Up to ``k`` users from 0-based position ``offset``, best first."""
        h = self._h()
        k, offset = _count(k, "k"), _count(offset, "offset")
        return list(map(RankedUser, *self._columns(_top, h, offset, k, self._stamp(now))))

    def around(self, user_id: str, radius: int = 5, now: Optional[float] = None) -> list[RankedUser]:
        """The users within ``radius`` places of ``user_id`` (NotFound if absent)."""
        h = self._h()
        radius = _count(radius, "radius")
        uid = encode(user_id, "user_id")
        columns = self._columns(lib.eh_leaderboard_around, h, uid, len(uid), radius, self._stamp(now))
        return list(map(RankedUser, *columns))

    def rank(self, user_id: str, now: Optional[float] = None) -> RankedUser:
        """The user's rank and score; raises :class:`~engagehub.errors.NotFound`."""
        h = self._h()
        uid = encode(user_id, "user_id")
        info = ffi.new("eh_rank_info *")
        _call(lib.eh_leaderboard_rank, h, uid, len(uid), self._stamp(now), info)
        return RankedUser(user_id, info.rank, info.score, info.last_update)

    def __len__(self) -> int:
        """The number of users."""
        out = ffi.new("size_t *")
        _call(lib.eh_leaderboard_len, self._h(), out)
        return int(out[0])

    def __contains__(self, user_id: object) -> bool:
        if not isinstance(user_id, (str, bytes)):
            return False
        h = self._h()
        uid = encode(user_id, "user_id")
        info = _new("eh_rank_info *")
        status = lib.eh_leaderboard_rank(h, uid, len(uid), self._stamp(None), info)
        if status == lib.EH_NOT_FOUND:
            return False
        if status:
            self._raise(status)
        return True

    def _native_stats(self) -> LeaderboardStats:
        out = ffi.new("eh_leaderboard_stats *", {"struct_size": ffi.sizeof("eh_leaderboard_stats")})
        _call(lib.eh_leaderboard_get_stats, self._h(), out)
        return LeaderboardStats(
            out.len,
            out.evicted,
            out.refused,
            out.rebases,
            out.landmark,
            out.heap_bytes,
            out.future_refused,
            out.pending,
            out.pending_dropped,
            journal_bytes=out.journal_bytes,
            journal_checkpoints=out.journal_checkpoints,
            journal_replayed=out.journal_replayed,
            journal_torn=out.journal_torn,
            journal_failing=out.journal_failing,
        )

    @property
    def journal_error(self) -> Optional[str]:
        """Why the journal's last sync or checkpoint failed (``None`` when it did
        not, or without ``journal=``)."""
        message = copied(lib.eh_leaderboard_journal_error, self._h()).decode("utf-8", "replace")
        return message or None

    def stats(self) -> LeaderboardStats:
        """Counters: size, evictions, refusals, rebases, landmark, heap bytes, and
        with ``redis=`` the publisher's (see :class:`LeaderboardStats`)."""
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

    # -- persistence -------------------------------------------------------------

    def save(self, path: "str | os.PathLike[str]") -> None:
        """Writes a snapshot atomically (temp file, fsync, rename); lossless.

        Holds the board only while serialising, not while writing: a :meth:`close`
        from another thread waits for the serialisation, then this call finishes
        writing. Raises :class:`~engagehub.IOFailure` with ``errno`` and
        ``filename`` set."""
        h = self._h()
        check(lib.eh_leaderboard_save(h, path_bytes(path)), path)

    def load(self, path: "str | os.PathLike[str]") -> None:
        """Replaces the board (and its decay settings) with a snapshot; reads the
        C++ extension's files too. On any error the board is unchanged and
        :class:`~engagehub.errors.Corrupt` or :class:`~engagehub.IOFailure` (with
        ``errno`` and ``filename``) is raised.

        Entries of a C++ extension snapshot that cannot be loaded (its writer left
        control characters and ``inf`` unescaped; bad ids, scores or timestamps,
        repeats, more than ``max_users``) are skipped, listed in
        :attr:`last_load_skipped` and announced by one
        :class:`SnapshotEntriesSkipped` warning; the others are loaded."""
        h = self._h()
        check(lib.eh_leaderboard_load(h, path_bytes(path)), path)
        self.last_load_skipped = _skipped_at_load(h)
        if self.last_load_skipped:
            first = self.last_load_skipped[0]
            warnings.warn(
                f"{os.fspath(path)!s}: {len(self.last_load_skipped)} entries skipped "
                f"(first: entries[{first.index}] {first.user_id!r}: {first.reason}); "
                "see Leaderboard.last_load_skipped",
                SnapshotEntriesSkipped,
                stacklevel=2,
            )


__all__ = [
    "FAST_UPDATES",
    "Leaderboard",
    "LeaderboardStats",
    "RankedUser",
    "SkippedEntry",
    "SnapshotEntriesSkipped",
    "TimeSource",
]
