"""The processor's counters and analytics: ``stats``, ``now``, ``unique_users``,
``users_sketch``, ``top_channels``, ``channel_count``, and the daily history's
``active_users``, ``retention`` and ``activity_heatmap``.

Every query answers from the native sketches, for a window of seconds before
"now" (the processor's clock, or ``now=``); ``window_secs=None`` means all time.
``top_channels`` is a compiled method descriptor when the compiled module is
there: one native call and the ``(channel_id, count)`` tuples built there, reused
while the native answer is unchanged; every unusual call runs the general
method, which raises what it raises for the same arguments.
"""

from __future__ import annotations

import datetime as _dt

import struct
from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional, Tuple, Union

from .. import _history, errors
from .._compiled import fast
from .._handle import NativeHandle
from .._native import _call, check, copied, encode, ffi, guild_arg, lib, timestamp_arg
from ..sketch import HyperLogLog

_EH_SHUT_DOWN = lib.EH_SHUT_DOWN
_buffer = ffi.buffer
_PERIOD = {"day": lib.EH_PERIOD_DAY, "week": lib.EH_PERIOD_WEEK, "month": lib.EH_PERIOD_MONTH}
_NO_GUILD = (ffi.NULL, 0)


def _guild(guild_id: Any) -> Tuple[Any, int]:
    """A query's guild: ``(bytes, len)``, or NULL for every event (``None`` or
    ``""``)."""
    if guild_id is None:
        return _NO_GUILD
    g = guild_arg(guild_id)
    return (g, len(g)) if g else _NO_GUILD


class ProcessorStats(NamedTuple):
    """Counters from :meth:`EventStreamProcessor.stats` (cheap to poll)."""

    pushed: int
    """Events offered (accepted + dropped)."""
    accepted: int
    """Events placed in the ring."""
    dropped: int
    """Events refused because the ring was full."""
    processed: int
    """Events taken by the workers and sketched."""
    delivered: int
    """Events in batches the flush callback accepted."""
    discarded: int
    """Events in batches dropped because no flush callback was set."""
    batches: int
    """Batches the flush callback accepted."""
    failures: int
    """Failed flush attempts (each retried or dead-lettered)."""
    retries: int
    """Retries of failed flushes."""
    dead_lettered: int
    """Events given up on after the last retry (handed to the dead-letter callback)."""
    dead_letter_batches: int
    """Batches given up on."""
    queue_len: int
    """Events waiting in the ring."""
    future_refused: int = 0
    """Events refused because their timestamp was later than the wall clock plus
    ``max_future_skew_secs``."""
    published_batches: int = 0
    """Publishes Redis acknowledged (``redis=`` only)."""
    publish_failures: int = 0
    """Publish attempts that failed (Redis down, slow or refusing); each retried."""
    publish_duplicates: int = 0
    """Retries Redis had already applied (a lost reply): counted once, not twice."""
    publish_lost_minutes: int = 0
    """Minutes that left the window while Redis was unreachable, so their late
    events could not be published (also logged)."""
    publish_pending_events: int = 0
    """Events processed that Redis has not acknowledged yet (0 when everything is
    published)."""
    journal_bytes: int = 0
    """``journal=``: bytes logged since the last checkpoint (folded into the next
    one once the log outgrows the last; a gauge)."""
    journal_checkpoints: int = 0
    """``journal=``: checkpoints written since this processor opened."""
    journal_replayed: int = 0
    """``journal=``: log records replayed when it opened (0 after a clean close)."""
    journal_torn: int = 0
    """``journal=``: torn tails truncated when it opened (a kill during a write)."""
    journal_failing: int = 0
    """``journal=``: 1 when the journal stopped being written (a full disk) or its
    last sync failed: the processor goes on in memory; :attr:`journal_error` says
    why (a gauge)."""


ProcessorStats.__module__ = "engagehub.processor"  # where users import it from


def window_arg(window_secs: Optional[int]) -> int:
    """A query window in seconds (``None``: all time, 0 on the C side)."""
    if window_secs is None:
        return 0
    if isinstance(window_secs, bool) or not isinstance(window_secs, (int, float)):
        raise errors.InvalidType(f"window_secs must be a number or None, not {type(window_secs).__name__}", 1)
    if not 0 <= window_secs < 2**63:  # NaN fails too
        raise errors.InvalidArgument(f"window_secs must be >= 0, got {window_secs}", 1)
    return int(window_secs)


def now_arg(now: Optional[float]) -> int:
    """A query's "now" (``None``: the processor's clock, 0 on the C side)."""
    return 0 if now is None else timestamp_arg(now, "now")


def compiled_top_channels(general: Any, name: str, all_time: bool) -> Any:
    """``general`` (a query method over ``(k, ...)``) as the compiled method
    descriptor for a class body, which names itself ``name`` (argument errors
    name the method as users call it); ``general`` itself without the compiled
    module."""
    if fast is None:
        return general
    general.__name__ = name
    general.__qualname__ = f"EventStreamProcessor.{name}"
    return fast.TopChannels(general, all_time)


class Queries(NativeHandle):
    """The counters and the analytics."""

    if TYPE_CHECKING:

        def _publish_counters(self) -> Tuple[int, ...]: ...

    def _native_stats(self) -> Any:
        """The native counters (``eh_processor_stats``)."""
        out = ffi.new("eh_processor_stats *", {"struct_size": ffi.sizeof("eh_processor_stats")})
        _call(lib.eh_processor_get_stats, self._h(), out)
        return out[0]

    def stats(self) -> ProcessorStats:
        """All counters at once."""
        s = self._native_stats()
        return ProcessorStats(
            s.pushed, s.accepted, s.dropped, s.processed, s.delivered, s.discarded,
            s.batches, s.failures, s.retries, s.dead_lettered, s.dead_letter_batches, s.queue_len,
            s.future_refused, *self._publish_counters(),
        )._replace(
            journal_bytes=s.journal_bytes, journal_checkpoints=s.journal_checkpoints,
            journal_replayed=s.journal_replayed, journal_torn=s.journal_torn, journal_failing=s.journal_failing,
        )

    @property
    def journal_error(self) -> Optional[str]:
        """Why the journal stopped being written or its last sync failed (``None``
        when it did not, or without ``journal=``)."""
        message = copied(lib.eh_processor_journal_error, self._h()).decode("utf-8", "replace")
        return message or None

    def now(self) -> int:
        """The processor's "now": the wall clock, or the newest event timestamp under
        ``clock="event_time"``."""
        out = ffi.new("int64_t *")
        _call(lib.eh_processor_now, self._h(), out)
        return int(out[0])

    def unique_users(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> int:
        """Estimated distinct users in the ``window_secs`` before ``now`` (``None``:
        the processor's clock); ``window_secs=None`` counts all time. HyperLogLog:
        ±0.81% standard error, near exact for small counts."""
        out = ffi.new("uint64_t *")
        h = self._h()
        _call(lib.eh_processor_unique_users, h, window_arg(window_secs), now_arg(now), out)
        return int(out[0])

    def users_sketch(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> HyperLogLog:
        """The sketch behind :meth:`unique_users`, to merge with other processes'."""
        out = ffi.new("eh_hll **")
        h = self._h()
        _call(lib.eh_processor_users_sketch, h, window_arg(window_secs), now_arg(now), out)
        return HyperLogLog._adopt(out[0])

    def _top_channels_general(
        self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
    ) -> List[Tuple[str, int]]:
        """The ``k`` busiest channels as ``(channel_id, count)``, busiest first, over
        the ``window_secs`` before ``now`` (``None``: all time). Counts come from a
        bounded Space-Saving summary: upper bounds, exact for heavy hitters."""
        if isinstance(k, bool) or not isinstance(k, int):
            raise errors.InvalidType(f"k must be an int, not {type(k).__name__}", 1)
        if k < 0:
            raise errors.InvalidArgument(f"k must be >= 0, got {k}", 1)
        k = min(k, 2**32 - 1)  # more than any summary holds: "all of them"
        out = ffi.new("eh_channel_list *")
        h = self._h()
        _call(lib.eh_processor_top_channels, h, k, window_arg(window_secs), now_arg(now), out)
        try:
            n = out.len
            if n == 0:
                return []
            rows = struct.unpack("=" + "QQQ" * n, _buffer(out.rows, 24 * n))
            ids = _buffer(out.ids, out.size - 24 * n)[:]
            return [
                (ids[rows[3 * i + 1] : rows[3 * i + 1] + rows[3 * i + 2]].decode("utf-8"), rows[3 * i])
                for i in range(n)
            ]
        finally:
            lib.eh_channel_list_free(out)

    def _top_failed(self, status: int) -> List[Tuple[str, int]]:
        """The compiled top_channels' answer to a non-zero status: what the general
        path raises for it (Closed as for a closed wrapper when that is why)."""
        if status == _EH_SHUT_DOWN and self._closed:
            raise self._closed_error()
        check(status)
        return []  # unreachable: check() raised

    if TYPE_CHECKING:  # the compiled descriptor's signature, for type checkers

        def top_channels(
            self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
        ) -> List[Tuple[str, int]]:
            """The ``k`` busiest channels as ``(channel_id, count)``, busiest first."""

    else:
        top_channels = compiled_top_channels(_top_channels_general, "top_channels", False)

    # -- the daily history (history_days) ------------------------------------------

    def active_users(
        self, day: "Union[_dt.date, str]", period: str = "day", guild_id: Union[str, int, None] = None
    ) -> int:
        """Distinct users active on ``day`` (a ``datetime.date``, a ``datetime``
        (its UTC date) or ``"YYYY-MM-DD"``; UTC days), or in the 7
        (``period="week"``) or 30 (``"month"``) days ending with it, among the
        events of guild ``guild_id`` (``None``: every event). Exact. Stickiness
        is ``active_users(d) / active_users(d, "month")``. A day outside the
        ``history_days`` ending with the processor's day, an unknown period or a
        processor made with ``history_days=0`` raise
        :class:`~engagehub.InvalidArgument`."""
        period = _history.check_period(period, tuple(_PERIOD))
        ts = _history.day_number(day) * 86400 + 43200  # noon: inside the day, > 0 from 1970-01-01
        if ts <= 0:
            raise errors.InvalidArgument(f"day {day} is before 1970 and outside any history", 1)
        g, g_len = _guild(guild_id)
        out = ffi.new("uint64_t *")
        _call(lib.eh_processor_active_users, self._h(), ts, _PERIOD[period], g, g_len, out)
        return int(out[0])

    def retention(
        self,
        period: str = "week",
        cohorts: int = 8,
        now: Optional[int] = None,
        guild_id: Union[str, int, None] = None,
    ) -> List[_history.Cohort]:
        """The ``cohorts`` retention cohorts of ``period`` (``"week"``: Monday to
        Sunday, UTC; or ``"day"``) ending with the one holding ``now`` (``None``:
        the processor's clock), oldest first, as :class:`~engagehub.Cohort`: the
        users first seen in each (``size``), and for each period from that one to
        the one holding ``now`` the fraction of them active in it
        (``retained[0] == 1.0``). Exact (each user's active days are kept); in
        guild ``guild_id`` (``None``: every event). A cohort reaching before the
        history raises :class:`~engagehub.InvalidArgument`."""
        period = _history.check_period(period, _history.COHORT_PERIODS)
        n = _history.check_count(cohorts, "cohorts")
        if n > lib.EH_MAX_COHORTS:
            raise errors.InvalidArgument(f"cohorts must be at most {lib.EH_MAX_COHORTS}, got {n}", 1)
        g, g_len = _guild(guild_id)
        starts = ffi.new("int64_t[]", n)
        sizes = ffi.new("uint64_t[]", n)
        active = ffi.new("uint64_t[]", n * n)
        _call(
            lib.eh_processor_retention, self._h(), _PERIOD[period], n, _history.check_now(now), g, g_len,
            starts, sizes, active,
        )
        flat = ffi.unpack(active, n * n)
        return [
            _history.cohort(starts[c] // 86400, sizes[c], flat[c * n : c * n + n - c])
            for c in range(n)
        ]

    def activity_heatmap(
        self,
        days: int = 28,
        now: Optional[int] = None,
        channel_id: Union[str, bytes, None] = None,
        guild_id: Union[str, int, None] = None,
    ) -> List[List[int]]:
        """Events by weekday (7 rows, Monday first) and UTC hour (24 columns) over
        the ``days`` days ending with the day of ``now`` (``None``: the
        processor's clock), in channel ``channel_id`` and guild ``guild_id``
        (``None``: all). Exact. ``days`` above ``history_days`` raises
        :class:`~engagehub.InvalidArgument`."""
        n = _history.check_count(days, "days")
        g, g_len = _guild(guild_id)
        if channel_id is None:
            c: Any = ffi.NULL
            c_len = 0
        else:
            c = encode(channel_id, "channel_id")
            c_len = len(c)
        out = ffi.new("uint64_t[]", 7 * 24)
        _call(
            lib.eh_processor_heatmap, self._h(), min(n, 2**32 - 1), _history.check_now(now), c, c_len, g, g_len, out
        )
        flat = ffi.unpack(out, 7 * 24)
        return [flat[d * 24 : d * 24 + 24] for d in range(7)]

    def channel_count(self, channel_id: Union[str, bytes]) -> int:
        """All-time events in ``channel_id`` by the Count-Min sketch (never
        undercounts; overcounts by at most e/width of all events, w.h.p.)."""
        c = encode(channel_id, "channel_id")
        out = ffi.new("uint64_t *")
        _call(lib.eh_processor_channel_count, self._h(), c, len(c), out)
        return int(out[0])


__all__ = ["ProcessorStats", "Queries", "compiled_top_channels", "now_arg", "window_arg"]
