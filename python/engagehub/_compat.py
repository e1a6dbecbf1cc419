"""The compatibility layer: the names of the C++ extension's Python API
(``cpp_event_processor.EventStreamProcessor``, ``cpp_leaderboard.Leaderboard``),
kept so that code written for it runs unchanged (docs/compat.md).

Each name is one primary call with the drop-in's argument names, return shape and
refusal behaviour (``update_user`` returns ``False`` where ``add`` raises
:class:`~engagehub.Full`; ``get_top_users`` returns dicts where ``top`` returns
:class:`~engagehub.RankedUser` tuples). New code uses the primary vocabulary.
The mixins here hold no state of their own; :class:`~engagehub.EventStreamProcessor`
and :class:`~engagehub.Leaderboard` derive from them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from ._compiled import fast
from ._handle import NativeHandle
from ._native import count_arg, encode, ffi, lib, real_arg
from ._processor.queries import ProcessorStats, compiled_top_channels
from ._types import UserRankDict

_fast_add: Any = fast.leaderboard_add if fast is not None else None
_add = lib.eh_leaderboard_add
_top = lib.eh_leaderboard_top
_rank = lib.eh_leaderboard_rank
_new = ffi.new
_EH_FULL = lib.EH_FULL
_EH_BUSY = lib.EH_BUSY
_EH_NOT_FOUND = lib.EH_NOT_FOUND


class ProcessorDropIns(NativeHandle):
    """``EventStreamProcessor``'s drop-in names, each over a primary call."""

    if TYPE_CHECKING:

        def _flush_named(self, what: str, timeout: Optional[float]) -> None: ...
        def _top_channels_general(
            self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
        ) -> List[Tuple[str, int]]: ...
        def unique_users(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> int: ...
        def stats(self) -> ProcessorStats: ...

    def flush_now(self, timeout: Optional[float] = None) -> None:
        """Drop-in for :meth:`~engagehub.EventStreamProcessor.flush`: blocks until
        every event accepted before the call has been delivered (or
        dead-lettered, or discarded without a callback); ``timeout`` in seconds
        raises :class:`~engagehub.Timeout` (``None``: no limit)."""
        self._flush_named("flush_now()", timeout)

    def _get_top_channels_general(self, k: int = 10) -> List[Tuple[str, int]]:
        """Drop-in: the ``k`` busiest channels of all time as ``(channel_id, count)``."""
        return self._top_channels_general(k)

    if TYPE_CHECKING:  # the compiled descriptor's signature, for type checkers

        def get_top_channels(self, k: int = 10) -> List[Tuple[str, int]]:
            """Drop-in: the ``k`` busiest channels of all time (``top_channels(k)``)."""

    else:
        # A compiled method descriptor as top_channels is (one native call, the
        # answer's tuples reused while it is unchanged); unusual arguments run
        # _get_top_channels_general.
        get_top_channels = compiled_top_channels(_get_top_channels_general, "get_top_channels", True)

    def get_unique_users_last_hour(self) -> int:
        """Drop-in: distinct users in the last hour of the processor's clock
        (``unique_users(3600)``)."""
        return self.unique_users(3600)

    def total_events_processed(self) -> int:
        """Drop-in: events taken from the ring and sketched by the workers
        (``stats().processed``)."""
        return self.stats().processed

    def events_dropped(self) -> int:
        """Drop-in: events refused because the ring was full (``stats().dropped``)."""
        return self.stats().dropped

    def events_dead_lettered(self) -> int:
        """Beside :meth:`total_events_processed`, in its style
        (``stats().dead_lettered``): events whose batch the flush callback failed
        on every attempt (handed to the dead-letter callback). They were sketched
        before delivery, so :meth:`total_events_processed` and the analytics count
        them although your database may not hold them: show this beside them."""
        return self.stats().dead_lettered


class LeaderboardDropIns(NativeHandle):
    """``Leaderboard``'s drop-in names, each over a primary call. ``update_user``
    is the board's update path itself (compiled, or through cffi), which
    :meth:`~engagehub.Leaderboard.add` raises :class:`~engagehub.Full` over: so
    the drop-in call costs no extra frame."""

    _address: int
    _time_source: Optional[Callable[[], float]]

    if TYPE_CHECKING:

        def _stamp(self, timestamp: Optional[float]) -> int: ...
        def _raise(self, status: int) -> None: ...
        def _columns(self, fn: Callable[..., int], *args: Any) -> Tuple[Sequence[Any], ...]: ...
        def save(self, path: "str | os.PathLike[str]") -> None: ...
        def load(self, path: "str | os.PathLike[str]") -> None: ...
        def __len__(self) -> int: ...

    def update_user(self, user_id: str, points: float, timestamp: Optional[float] = None) -> bool:
        """Drop-in for :meth:`~engagehub.Leaderboard.add`: adds points; returns False
        (and counts it in ``stats().refused``) if the board is full and the newcomer
        ranks too low, where ``add`` raises :class:`~engagehub.Full`."""
        # Through cffi, which releases the GIL for the call and waits for the board
        # if another thread is using it. Written for the usual str id and int (or
        # omitted) timestamp: one native call and nothing else; other types take
        # the except branches and give the same results, a little slower.
        if self._closed:
            raise self._closed_error()
        try:
            uid = user_id.encode()
        except (AttributeError, UnicodeEncodeError):  # bytes, or a lone surrogate
            uid = encode(user_id, "user_id")
        if timestamp is None:
            source = self._time_source
            timestamp = 0 if source is None else int(source())
        try:
            status = _add(self._cdata, uid, len(uid), points, timestamp)
        except (TypeError, OverflowError):  # a float timestamp, points not a number, out of range
            status = _add(self._cdata, uid, len(uid), real_arg(points, "points"), self._stamp(timestamp))
        return True if status == 0 else self._update_failed(status)

    _update_user_cffi = update_user

    def _update_failed(self, status: int) -> bool:
        """update_user's answer to a non-zero status: False for a refusal (the board
        is full), an exception for anything else."""
        if status == _EH_FULL:
            return False
        self._raise(status)
        return False  # unreachable: _raise raised

    if _fast_add is not None:

        def update_user(  # noqa: F811 (the compiled module is there: the fast path)
            self, user_id: str, points: float, timestamp: Optional[float] = None
        ) -> bool:
            """Drop-in for :meth:`~engagehub.Leaderboard.add`: adds points; returns
            False (and counts it in ``stats().refused``) if the board is full and
            the newcomer ranks too low, where ``add`` raises
            :class:`~engagehub.Full`.

            Takes the compiled fast path (``engagehub._engagehub_fast``): the GIL
            stays held for the sub-microsecond update, which never waits for the
            board; if another thread is using it, or the arguments are not a str
            id, int or float points and an int timestamp, the call goes through
            cffi instead (releasing the GIL while it waits). On a closed board the
            native call answers EH_SHUT_DOWN (the address stays valid for the
            wrapper's whole life), so it raises :class:`~engagehub.Closed` as the
            cffi path does.
            """
            if timestamp is None:
                source = self._time_source
                timestamp = 0 if source is None else int(source())
            try:
                status = _fast_add(self._address, user_id, points, timestamp)
            except UnicodeEncodeError:  # a lone surrogate: as the cffi path decides
                return self._update_user_cffi(user_id, points, timestamp)
            if status == 0:
                return True
            if status is None or status == _EH_BUSY:
                return self._update_user_cffi(user_id, points, timestamp)
            return self._update_failed(status)

    def get_top_users(self, k: int = 10) -> List[UserRankDict]:
        """Drop-in for :meth:`~engagehub.Leaderboard.top`: ``[{"user_id", "score",
        "rank", "last_update"}]``, best first."""
        h = self._h()
        ids, ranks, scores, lasts = self._columns(_top, h, 0, count_arg(k, "k"), self._stamp(None))
        return [
            {"user_id": u, "score": s, "rank": r, "last_update": t}
            for u, r, s, t in zip(ids, ranks, scores, lasts)
        ]

    def get_user_rank(self, user_id: str) -> Optional[UserRankDict]:
        """Drop-in for :meth:`~engagehub.Leaderboard.rank`: ``{"user_id", "rank",
        "score", "last_update"}``, or ``None`` if the user is absent (where ``rank``
        raises :class:`~engagehub.NotFound`)."""
        h = self._h()
        uid = user_id.encode() if type(user_id) is str else encode(user_id, "user_id")
        info = _new("eh_rank_info *")
        status = _rank(h, uid, len(uid), self._stamp(None), info)
        if status:
            if status == _EH_NOT_FOUND:
                return None
            self._raise(status)
        return {"user_id": user_id, "rank": info.rank, "score": info.score, "last_update": info.last_update}

    def size(self) -> int:
        """Drop-in: the number of users (``len(board)``)."""
        return len(self)

    def save_to_json(self, path: "str | os.PathLike[str]") -> None:
        """Drop-in for :meth:`~engagehub.Leaderboard.save`: writes a snapshot
        atomically; lossless."""
        self.save(path)

    def load_from_json(self, path: "str | os.PathLike[str]") -> None:
        """Drop-in for :meth:`~engagehub.Leaderboard.load`: replaces the board with
        a snapshot (also the C++ extension's files)."""
        self.load(path)


__all__ = ["LeaderboardDropIns", "ProcessorDropIns"]
