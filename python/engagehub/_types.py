"""The shapes of the rows the API takes and returns: the drop-in API's dict and
tuple rows, for type checkers (``TypedDict`` rows are plain ``dict`` objects at run
time), and :class:`RankedUser`, the rows of a ranking (the leaderboard's and the
shared leaderboard's).

Exported from :mod:`engagehub`; only the standard library's :mod:`typing`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Tuple, TypedDict, Union


class _EventFields(TypedDict):
    type: str
    """The event's kind (``"message"``, ``"reaction"``...)."""
    user_id: str
    channel_id: str
    timestamp: int
    """Unix seconds (an event pushed with 0 or ``None`` carries the time it was
    stamped with)."""


class EventDict(_EventFields, total=False):
    """One event of a batch delivered as ``batch_format="dicts"`` (the drop-in
    form) and of a dead-lettered batch; ``payload`` and ``guild_id`` only when
    the event was pushed with one. :meth:`~engagehub.EventStreamProcessor.push_many`
    takes these too (``guild_id`` also as an int there)."""

    payload: bytes
    guild_id: str


EventTuple = Tuple[str, str, str, int]
"""One event of a batch delivered as ``batch_format="tuples"``:
``(type, user_id, channel_id, timestamp)``."""

Id = Union[str, bytes]
"""An id or kind as pushed: ``str`` (sent as UTF-8) or UTF-8 ``bytes``."""

Timestamp = Union[int, float, None]
"""Unix seconds; 0 or ``None`` means now."""

GuildId = Union[str, int, bytes, None]
"""A guild as pushed: a ``str``, an ``int`` (discord.py's ``guild.id``, taken as
its decimal digits), UTF-8 ``bytes``, or ``None`` (no guild)."""

PushRow = Union[Tuple[Id, Id, Id], Tuple[Id, Id, Id, Timestamp], Tuple[Id, Id, Id, Timestamp, GuildId], EventDict]
"""One event for :meth:`~engagehub.EventStreamProcessor.push_many`:
``(type, user_id, channel_id[, timestamp[, guild_id]])`` or an :class:`EventDict`."""


class RankedUser(NamedTuple):
    """One row of a ranking."""

    user_id: str
    """The user's id."""
    rank: int
    """1-based rank (1 = highest score)."""
    score: float
    """Decayed score at the query time."""
    last_update: int
    """Newest timestamp (seconds) of any update to the user."""


RankedUser.__module__ = "engagehub.leaderboard"  # where users import it from


class UserRankDict(TypedDict):
    """A row of :meth:`~engagehub.Leaderboard.get_top_users` and the answer of
    :meth:`~engagehub.Leaderboard.get_user_rank` (the drop-in forms; ``top`` and
    ``rank`` return :class:`~engagehub.RankedUser` tuples)."""

    user_id: str
    rank: int
    """1-based."""
    score: float
    """The decayed score at the query's time."""
    last_update: int
    """Unix seconds of the user's newest update."""


DictsCallback = Union[
    Callable[[List[EventDict]], object],
    # Callbacks written before the rows had a type (``list[dict[str, Any]]``).
    Callable[[List[Dict[str, Any]]], object],
]
"""A flush callback for ``batch_format="dicts"`` (may be ``async def``)."""

DeadLetterCallback = Union[
    Callable[[List[EventDict], str], object],
    Callable[[List[Dict[str, Any]], str], object],
]
"""``callback(events, error)`` for batches given up on (may be ``async def``)."""

__all__ = [
    "DeadLetterCallback",
    "DictsCallback",
    "EventDict",
    "EventTuple",
    "Id",
    "GuildId",
    "PushRow",
    "RankedUser",
    "Timestamp",
    "UserRankDict",
]
