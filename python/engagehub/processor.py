"""Event pipeline: a drop-in for ``cpp_event_processor.EventStreamProcessor``.

Events pushed from any thread go into a bounded lock-free ring; native worker
threads keep the sketches (unique users, trending channels) and hand events back in
batches to the flush callback, which runs on a worker thread holding the GIL.

Differences from the C++ extension, all deliberate:

* a flush callback that raises is a *failure*: the batch is retried with backoff,
  then handed to the dead-letter callback and counted; the exception is logged on
  the ``engagehub`` logger and kept in :attr:`EventStreamProcessor.last_callback_error`;
* with no callback set, batches are discarded and counted (``stats().discarded``),
  never accumulated, and :meth:`~EventStreamProcessor.flush` always returns;
* :meth:`~EventStreamProcessor.close` (or the garbage collector) drains and
  delivers everything accepted, with the GIL released while it waits, so a slow
  callback cannot deadlock it; from inside the processor's own callback it raises
  :class:`~engagehub.WouldDeadlock` and the processor stays usable;
* blocking waits (``flush``, ``close``, a push waiting for room under
  ``overflow="block"``) wait in native slices of 0.1 s, so Ctrl-C raises
  ``KeyboardInterrupt`` promptly;
* asyncio: a coroutine function callback is awaited on the event loop given as
  ``loop=`` (at most one batch in flight per worker thread), with ``await
  aflush()``, ``await aclose()`` and ``async with``;
* ``num_threads=0`` is a synchronous mode: no threads, delivery on the thread
  calling :meth:`~EventStreamProcessor.flush` or :meth:`~EventStreamProcessor.close`
  (so a test's transaction covers it).

The class is assembled from the parts in :mod:`engagehub._processor` (one concern
each: intake, callbacks, queries, asyncio, publishing, lifecycle) and the drop-in
names of :class:`engagehub._compat.ProcessorDropIns`; this module holds the
constructor, the lifetime and the flush barrier.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from . import errors
from ._compat import ProcessorDropIns
from ._compiled import fast
from ._handle import NativeHandle
from ._native import _call, check, ffi, lib
from ._processor.asyncio_bridge import AsyncMethods
from ._processor.callbacks import Batch, Callbacks, Dispatch, FlushCallback  # noqa: F401 (re-exported)
from ._processor.config import SLICE_MS, native_config
from ._processor.decode import EventColumns
from ._processor.intake import Intake
from ._processor.lifecycle import LIVE, free_native
from ._processor.publishing import Publishing
from ._processor.queries import ProcessorStats, Queries

_EH_TIMEOUT = lib.EH_TIMEOUT

FAST_PUSH: bool = fast is not None
"""True when ``push_event``, ``push_many``, batch delivery and the top-channels
queries use the compiled module (``engagehub._engagehub_fast``); otherwise they go
through cffi."""

# With the compiled module, the processor's C base class: where the compiled calls
# read its native address, overflow mode and GIL hand-off (_engagehub_fast.c).
_NATIVE_BASES: "tuple[type, ...]" = () if fast is None else (fast.ProcessorBase,)


class EventStreamProcessor(
    ProcessorDropIns, Intake, Callbacks, Queries, AsyncMethods, Publishing, NativeHandle, *_NATIVE_BASES  # type: ignore[misc]
):
    """Pushes events into native worker threads that sketch them and deliver batches.

    The drop-in arguments keep their names (``buffer_size`` ring slots, rounded up to
    a power of two; ``num_threads`` workers; ``batch_size``; ``flush_interval_ms``);
    keyword-only extras expose the rest of the native configuration:
    ``overflow`` (``"drop"``: a full ring refuses the event, or ``"block"``: wait up
    to ``block_timeout_ms``), ``max_retries`` and ``retry_backoff_ms`` for failing
    callbacks, ``clock`` (``"wall"`` or ``"event_time"`` for replays),
    ``window_minutes``, ``cms_depth``, ``cms_width``, ``topk_capacity``,
    ``max_future_skew_secs`` (timestamps later than the wall clock plus this are
    refused with :class:`~engagehub.InvalidArgument` and counted in
    ``stats().future_refused``, under both clocks).

    The calls: :meth:`push_event` and :meth:`push_many`; :meth:`set_flush_callback`
    and :meth:`set_dead_letter_callback`; :meth:`flush` (a barrier) and
    :meth:`close`; :meth:`stats`, :meth:`now`, :meth:`unique_users`,
    :meth:`users_sketch`, :meth:`top_channels`, :meth:`channel_count`;
    :meth:`publish_now` with ``redis=``. The C++ extension's names
    (:meth:`flush_now`, :meth:`get_top_channels`,
    :meth:`get_unique_users_last_hour`, :meth:`total_events_processed`,
    :meth:`events_dropped`) work too, each one of these calls (docs/compat.md).

    ``num_threads=0`` is the synchronous mode: no worker threads; events wait in
    the ring (``buffer_size`` still bounds memory: a full ring drops) and are
    sketched and delivered on the thread that calls :meth:`flush` or
    :meth:`close`, inside the call, in push order, in batches of at most
    ``batch_size`` (``flush_interval_ms`` is unused); queries count an event once
    a flush has processed it. ``overflow="block"`` is refused with it (nothing
    would drain the ring while a push waits).

    Sharing through Redis (docs/shared.md): with ``redis=`` (a ``redis.Redis`` or
    ``redis.cluster.RedisCluster``) and ``namespace=``, a background thread
    publishes the analytics every ``publish_interval_ms`` for
    :class:`engagehub.shared.SharedAnalytics` readers in any process, exactly once;
    pushes, queries and the constructor never touch Redis (all Redis calls run on
    that thread). :meth:`flush` and :meth:`close` also wait for Redis to hold
    everything processed, for at most ``publish_timeout`` seconds: then they log and
    count what is missing (``stats().publish_pending_events``) and return; the flush
    callback gets every event whatever Redis does. :meth:`publish_now` is the Redis
    barrier alone. ``publish_max_members`` bounds each published sorted set. Every
    writer of a namespace must use the same ``window_minutes`` and
    ``publish_max_members`` (stored in ``{ns}:config`` by the first): a writer
    whose settings differ is refused (logged; :meth:`publish_now` raises
    :class:`~engagehub.InvalidArgument`).

    Close it with :meth:`close` or a ``with`` block (both drain and deliver
    everything accepted), or ``await aclose()`` / ``async with`` in asyncio code;
    the garbage collector and interpreter exit do the same as a backstop.
    Survives ``os.fork()``: an inherited processor re-initialises itself on its
    first call in the child (fresh workers, an empty ring, counters and sketches
    starting empty, callbacks kept); the parent is unaffected.

    Thread safety: safe to share between threads. :meth:`close` may run while
    other threads push or query: their calls finish, or raise
    :class:`~engagehub.Closed`. From inside this processor's own callbacks,
    :meth:`close`, :meth:`flush` and the ``set_*_callback`` methods raise
    :class:`~engagehub.WouldDeadlock` and change nothing.
    """

    _kind = "processor"

    def __init__(
        self,
        buffer_size: int = 16384,
        num_threads: int = 1,
        batch_size: int = 500,
        flush_interval_ms: int = 1000,
        *,
        overflow: str = "drop",
        block_timeout_ms: int = 1000,
        max_retries: int = 3,
        retry_backoff_ms: int = 50,
        clock: str = "wall",
        window_minutes: int = 60,
        cms_depth: int = 4,
        cms_width: int = 2048,
        topk_capacity: int = 1024,
        max_future_skew_secs: int = 86400,
        redis: Any = None,
        namespace: Optional[str] = None,
        publish_interval_ms: int = 1000,
        publish_max_members: int = 1024,
        publish_timeout: float = 30.0,
        journal: "Optional[str | os.PathLike[str]]" = None,
        journal_sync: "float | str" = 1.0,
        history_days: int = 90,
    ) -> None:
        config, _keep = native_config(
            buffer_size, num_threads, batch_size, flush_interval_ms, overflow=overflow,
            block_timeout_ms=block_timeout_ms, max_retries=max_retries, retry_backoff_ms=retry_backoff_ms,
            clock=clock, window_minutes=window_minutes, cms_depth=cms_depth, cms_width=cms_width,
            topk_capacity=topk_capacity, max_future_skew_secs=max_future_skew_secs, journal=journal,
            journal_sync=journal_sync, history_days=history_days, publish_history=redis is not None,
        )
        out = ffi.new("eh_processor **")
        self._dispatch = Dispatch()
        self._loops = {}
        # Pushes under "block" wait for room, in slices (see _processor.intake).
        self._block_timeout = block_timeout_ms / 1000 if overflow == "block" else None
        _call(lib.eh_processor_new, config, out)
        # From a worker thread (the last reference dropped in a callback, or the
        # cyclic GC running there), eh_processor_free hands the close to a reaper.
        self._own(out[0], free_native)
        # What the compiled calls read (ProcessorBase): the shell's address
        # (valid for this wrapper's whole life: ffi.gc frees it) and whether a
        # push may wait for room (then they release the GIL).
        if fast is not None:
            self._bind_target(int(ffi.cast("uintptr_t", self._cdata)), overflow == "block", block_timeout_ms)
        LIVE.add(self)
        self._publisher = None
        self._publish_timeout = 30.0
        if redis is not None:
            self._start_publisher(
                redis, namespace, publish_interval_ms, window_minutes, clock, publish_max_members, publish_timeout,
                history_days,
            )

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Stops intake, delivers every accepted event through the callbacks, joins
        the workers and releases the native processor's resources. Blocks until
        done, with the GIL released so callbacks can run. Idempotent; later calls
        raise :class:`~engagehub.Closed`. Other threads' calls in progress finish or
        raise :class:`~engagehub.Closed`. From inside this processor's own callback:
        :class:`~engagehub.WouldDeadlock`, and the processor stays open and usable.

        Waits in native slices of 0.1 s, so Ctrl-C raises ``KeyboardInterrupt``
        promptly; the close is then under way (intake stopped, calls raise
        :class:`~engagehub.Closed`, the workers keep delivering) and calling
        ``close()`` again finishes it. With an async callback, on the thread
        running its event loop (which the remaining batches need):
        :class:`~engagehub.WouldDeadlock`; ``await aclose()`` instead.
        With ``redis=``: after the drain, publishes everything to Redis, retrying for
        up to ``publish_timeout`` seconds; what Redis still lacks then is logged as
        an error and counted in :attr:`unpublished`, and the close goes on (the
        interpreter's exit runs this too: a Redis that is down never holds it)."""
        if self._closed:
            return
        self._refuse_on_callback_loop("close()", "await processor.aclose()")
        if self._publisher is not None:
            self._finish_publishing()
        super().close()
        LIVE.discard(self)

    def _native_close(self, cdata: Any) -> None:
        while True:
            rc = lib.eh_processor_close_timeout(cdata, SLICE_MS)
            self._raise_interrupt()
            if rc != _EH_TIMEOUT:
                check(rc)
                return

    def _raise_interrupt(self) -> None:
        """Re-raises a KeyboardInterrupt that hit a callback run by this thread's
        wait (synchronous mode)."""
        exc = self._dispatch.interrupt
        if exc is not None:
            self._dispatch.interrupt = None
            raise exc

    def _repr_details(self) -> str:
        s = self.stats()
        return f"accepted={s.accepted} delivered={s.delivered} queued={s.queue_len}"

    # -- the barrier -------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> None:
        """Blocks until every event accepted before the call has been delivered (or
        dead-lettered, or discarded without a callback). ``timeout`` in seconds
        raises :class:`~engagehub.Timeout` when exceeded (``None``: no limit). The
        GIL is released while waiting. From a flush callback:
        :class:`~engagehub.WouldDeadlock`. In synchronous mode (``num_threads=0``)
        the events are sketched and delivered here, the callbacks running on this
        thread (``timeout`` then bounds only the wait for another thread's flush
        in progress, not the callbacks).

        It waits on one native flush ticket in slices of 0.1 s, between which
        Python runs signal handlers: Ctrl-C raises ``KeyboardInterrupt`` promptly
        (the flush itself carries on natively). It ends with
        :class:`~engagehub.Closed` as soon as the processor is closed. With an
        async callback, on the thread running its event loop:
        :class:`~engagehub.WouldDeadlock` (the callback needs that loop, which
        this call would block); ``await aflush()`` instead.

        With ``redis=``, it then waits for Redis to hold everything processed, for
        at most ``publish_timeout`` seconds (and within ``timeout``); if Redis does
        not acknowledge in time it logs a warning and returns (never raises for
        Redis: the events are delivered; :meth:`publish_now` tells whether Redis has
        them)."""
        self._flush_named("flush()", timeout)

    def _flush_named(self, what: str, timeout: Optional[float]) -> None:
        """:meth:`flush` as the call named ``what`` (``flush()``, ``flush_now()``)."""
        self._refuse_on_callback_loop(what, "await processor.aflush()")
        self._flush_blocking(timeout, what=what)

    def _flush_blocking(self, timeout: Optional[float], publish: bool = True, what: str = "flush()") -> None:
        p = self._h()
        deadline = None
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise errors.InvalidType(f"timeout must be a number or None, not {type(timeout).__name__}", 1)
            if not timeout >= 0:
                raise errors.InvalidArgument("timeout must be >= 0", 1)
            deadline = time.monotonic() + timeout
        ticket = ffi.new("uint64_t *")
        _call(lib.eh_processor_flush_start, p, ticket)
        while True:
            slice_ms = SLICE_MS
            if deadline is not None:
                slice_ms = max(0, min(SLICE_MS, int((deadline - time.monotonic()) * 1000)))
            rc = lib.eh_processor_flush_wait(p, ticket[0], slice_ms)
            self._raise_interrupt()
            if rc != _EH_TIMEOUT or (deadline is not None and time.monotonic() >= deadline):
                check(rc)
                break
            if self._closed:
                raise self._closed_error()
        if publish and self._publisher is not None:
            wait = self._publish_timeout
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            self._publish_within(wait, what)


__all__ = ["EventColumns", "EventStreamProcessor", "ProcessorStats"]