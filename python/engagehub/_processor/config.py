"""The processor's configuration: the constructor's arguments checked and turned
into the native ``eh_processor_config``.

0 means "default" in the C config; from Python every size is a real value, so 0
is refused here (with the argument's name) rather than silently replaced. The
native side checks the real ranges and names the field.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from .. import errors
from .._native import ffi, journal_args, lib

SLICE_MS = 100
"""Longest native wait between two returns to Python, where signal handlers
(Ctrl-C: KeyboardInterrupt) run: well under the half second a user notices.
Every blocking call of the processor waits in slices of this."""

OVERFLOW = {"drop": lib.EH_OVERFLOW_DROP_NEWEST, "block": lib.EH_OVERFLOW_BLOCK}
CLOCK = {"wall": lib.EH_CLOCK_WALL, "event_time": lib.EH_CLOCK_EVENT_TIME}


def native_config(
    buffer_size: int,
    num_threads: int,
    batch_size: int,
    flush_interval_ms: int,
    *,
    overflow: str,
    block_timeout_ms: int,
    max_retries: int,
    retry_backoff_ms: int,
    clock: str,
    window_minutes: int,
    cms_depth: int,
    cms_width: int,
    topk_capacity: int,
    max_future_skew_secs: int,
    journal: "Optional[str | os.PathLike[str]]",
    journal_sync: "float | str",
    history_days: int = 90,
    publish_history: bool = False,
) -> Tuple[Any, Any]:
    """The ``eh_processor_config *`` for the arguments (as
    :class:`~engagehub.EventStreamProcessor` names them), and what it points to
    (the journal path), to keep alive until ``eh_processor_new`` returns. Raises
    :class:`~engagehub.InvalidArgument` naming the first bad argument."""
    for name, value, limit in (
        ("buffer_size", buffer_size, 2**64),
        ("batch_size", batch_size, 2**32),
        ("flush_interval_ms", flush_interval_ms, 2**32),
        ("block_timeout_ms", block_timeout_ms, 2**32),
        ("retry_backoff_ms", retry_backoff_ms, 2**32),
        ("window_minutes", window_minutes, 2**32),
        ("cms_depth", cms_depth, 2**32),
        ("cms_width", cms_width, 2**32),
        ("topk_capacity", topk_capacity, 2**32),
        ("max_future_skew_secs", max_future_skew_secs, 2**32),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < limit:
            raise errors.InvalidArgument(f"{name} must be a positive integer, got {value!r}", 1)
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or not 0 <= num_threads < 2**32 - 1:
        raise errors.InvalidArgument(f"num_threads must be an integer >= 0, got {num_threads!r}", 1)
    if overflow not in OVERFLOW:
        raise errors.InvalidArgument(f"overflow must be 'drop' or 'block', got {overflow!r}", 1)
    if clock not in CLOCK:
        raise errors.InvalidArgument(f"clock must be 'wall' or 'event_time', got {clock!r}", 1)
    if not isinstance(max_retries, int) or max_retries < 0:
        raise errors.InvalidArgument(f"max_retries must be >= 0, got {max_retries!r}", 1)
    if isinstance(history_days, bool) or not isinstance(history_days, int) or not 0 <= history_days <= 400:
        raise errors.InvalidArgument(f"history_days must be an integer from 0 (off) to 400, got {history_days!r}", 1)
    journal_path, journal_sync_ms = journal_args(journal, journal_sync)
    config = ffi.new(
        "eh_processor_config *",
        {
            "struct_size": ffi.sizeof("eh_processor_config"),
            "capacity": buffer_size,
            # 0 threads: the synchronous mode, EH_WORKERS_NONE in C (0 there is
            # the default, one worker).
            "workers": num_threads if num_threads else lib.EH_WORKERS_NONE,
            "batch_size": batch_size,
            "flush_interval_ms": flush_interval_ms,
            "overflow": OVERFLOW[overflow],
            "block_timeout_ms": block_timeout_ms,
            "max_retries": -1 if max_retries == 0 else min(max_retries, 2**31 - 1),
            "retry_backoff_ms": retry_backoff_ms,
            "clock": CLOCK[clock],
            "window_minutes": window_minutes,
            "cms_depth": cms_depth,
            "cms_width": cms_width,
            "topk_capacity": topk_capacity,
            "max_future_skew_secs": max_future_skew_secs,
            "journal_path": journal_path,
            "journal_sync_ms": journal_sync_ms,
            # 0 from Python turns the history off (-1 in C, where 0 is the default).
            "history_days": history_days if history_days else -1,
            "publish_history": int(publish_history and history_days > 0),
        },
    )
    return config, journal_path


__all__ = ["CLOCK", "OVERFLOW", "SLICE_MS", "native_config"]
