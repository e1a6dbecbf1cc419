"""engagehub: real-time community analytics on a native Rust engine.

* :class:`EventStreamProcessor`: pushes events into native worker threads that keep
  unique-user and trending-channel sketches and deliver batches to a callback.
* :class:`Leaderboard`: users ranked by exponentially decayed points, O(log n)
  updates, fast top-k and rank queries, lossless snapshots.
* :class:`GuildLeaderboards`: a leaderboard per guild in one handle (no thread or
  handle per guild), shared through Redis by one publisher thread.
* :class:`HyperLogLog`, :class:`CountMinSketch`: standalone mergeable sketches.

Every failing call raises a subclass of :class:`EngageHubError` (see
:mod:`engagehub.errors`) carrying the library's message.
"""

from __future__ import annotations

from . import errors
from ._handle import NativeHandle
from ._native import ffi, lib, status_name
from .errors import (
    Busy,
    Closed,
    Corrupt,
    EngageHubError,
    Full,
    InvalidArgument,
    InvalidType,
    IOFailure,
    NotFound,
    Panic,
    Poisoned,
    QueueFull,
    ShutDown,
    Timeout,
    WouldDeadlock,
)
from .leaderboard import Leaderboard, LeaderboardStats, RankedUser, SkippedEntry, SnapshotEntriesSkipped
from .guilds import GuildLeaderboards, GuildLeaderboardsStats
from ._history import Cohort
from ._types import DeadLetterCallback, DictsCallback, EventDict, EventTuple, GuildId, PushRow, UserRankDict
from .processor import EventColumns, EventStreamProcessor, ProcessorStats
from .sketch import CountMinSketch, HyperLogLog

__version__: str = ffi.string(lib.eh_version()).decode()
"""The native library's version (``eh_version()``)."""

__all__ = [
    "Busy",
    "Closed",
    "Cohort",
    "CountMinSketch",
    "Corrupt",
    "DeadLetterCallback",
    "DictsCallback",
    "EngageHubError",
    "EventDict",
    "EventColumns",
    "EventStreamProcessor",
    "EventTuple",
    "HyperLogLog",
    "Full",
    "GuildId",
    "GuildLeaderboards",
    "GuildLeaderboardsStats",
    "IOFailure",
    "InvalidArgument",
    "InvalidType",
    "Leaderboard",
    "SkippedEntry",
    "SnapshotEntriesSkipped",
    "LeaderboardStats",
    "NativeHandle",
    "NotFound",
    "Panic",
    "Poisoned",
    "ProcessorStats",
    "PushRow",
    "QueueFull",
    "RankedUser",
    "ShutDown",
    "Timeout",
    "UserRankDict",
    "WouldDeadlock",
    "__version__",
    "errors",
    "status_name",
]
