"""Event pipeline: a drop-in for ``cpp_event_processor.EventStreamProcessor``.

Events pushed from any thread go into a bounded lock-free ring; native worker
threads keep the sketches (unique users, trending channels) and hand events back in
batches to the flush callback, which runs on a worker thread holding the GIL.

Differences from the C++ extension, all deliberate:

* a flush callback that raises is a *failure*: the batch is retried with backoff,
  then handed to the dead-letter callback and counted; the exception is logged on
  the ``engagehub`` logger and kept in :attr:`EventStreamProcessor.last_callback_error`;
* with no callback set, batches are discarded and counted (``stats().discarded``),
  never accumulated, and :meth:`flush_now` always returns;
* :meth:`close` (or the garbage collector) drains and delivers everything accepted,
  with the GIL released while it waits, so a slow callback cannot deadlock it;
  from inside the processor's own callback it raises
  :class:`~engagehub.WouldDeadlock` and the processor stays usable;
* blocking waits (:meth:`~EventStreamProcessor.flush_now`,
  :meth:`~EventStreamProcessor.close`) wait in native slices of 0.1 s, so Ctrl-C
  raises ``KeyboardInterrupt`` promptly;
* asyncio: a coroutine function callback is awaited on the event loop given as
  ``loop=`` (at most one batch in flight per worker thread), with ``await
  aflush()``, ``await aclose()`` and ``async with``;
* ``num_threads=0`` is a synchronous mode: no threads, delivery on the thread
  calling :meth:`~EventStreamProcessor.flush_now` or
  :meth:`~EventStreamProcessor.close` (so a test's transaction covers it).

Lifetimes: the callbacks' context (the Python callables, reached by the native
side through ``user_data``) lives in a module-level registry, one entry per
registration, released only by the native ``user_data_free`` finalizer, which runs
after the callback's last call. So a processor collected anywhere (even by the
cyclic GC on one of its own worker threads, where the native free hands the close
to a reaper thread) keeps delivering its remaining batches to live callables.

Fork: an inherited processor re-initialises itself natively on its first call in
the child (fresh workers, an empty ring, counters and sketches starting empty,
callbacks kept); the wrapper's Python locks are reset by an
``os.register_at_fork`` hook, so a lock some other thread of the parent held at
fork time cannot block the child.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import logging
import os
import struct
import threading
import time
import weakref
from array import array
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Literal,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from . import errors
from ._handle import NativeHandle
from ._native import _call, check, encode, ffi, journal_args, lib, timestamp_arg
from ._types import DeadLetterCallback, DictsCallback, EventDict, EventTuple, PushRow
from .sketch import HyperLogLog

log = logging.getLogger("engagehub")

_push = lib.eh_processor_push
_push_fields = lib.eh_processor_push_fields
_push_columns = lib.eh_processor_push_columns
_columns = lib.eh_events_columns
_NULL = ffi.NULL
_EH_QUEUE_FULL = lib.EH_QUEUE_FULL
_EH_TIMEOUT = lib.EH_TIMEOUT
# Longest native wait between two returns to Python, where signal handlers
# (Ctrl-C: KeyboardInterrupt) run: well under the half second a user notices.
_SLICE_MS = 100
_buffer = ffi.buffer
_unpack = ffi.unpack

_new = ffi.new
_from_buffer = ffi.from_buffer
_EH_INVALID_ARGUMENT = lib.EH_INVALID_ARGUMENT

_EH_SHUT_DOWN = lib.EH_SHUT_DOWN
_EH_OK = lib.EH_OK
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _load_fast() -> Any:
    """``engagehub._engagehub_fast`` bound to the push functions of the library cffi
    loaded (API or ABI mode), or None when the compiled module is absent, older than
    this file, or compiled from another version of the header: push_event,
    push_many and delivery then go through cffi."""
    try:
        from . import _engagehub_fast as fast  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(fast, "HEADER_VERSION", None) != lib.eh_version_number():
        return None
    address = lambda name: int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))  # noqa: E731
    fast.bind_processor(
        address("eh_processor_push"),
        address("eh_processor_push_batch"),
        address("eh_processor_push_batch_wait"),
        address("eh_processor_push_wait"),
    )
    fast.bind_top_channels(address("eh_processor_top_channels"), address("eh_channel_list_free"))
    return fast


_fast = _load_fast()
FAST_PUSH: bool = _fast is not None
"""True when ``push_event``, ``push_many`` and batch delivery use the compiled module
(``engagehub._engagehub_fast``); otherwise they go through cffi."""
_build_batch = _fast.build_batch if _fast is not None else None
# top_channels and get_top_channels as compiled method descriptors.
_FAST_TOP = _fast is not None
_push_rows = _fast.push_rows if _fast is not None else None
_FORM_CODE = {"dicts": 0, "tuples": 1, "columns": 2}


def _compiled_push_event(general: Callable[..., bool]) -> Any:
    """``push_event`` for a class body: the compiled descriptor over ``general``
    (which then names itself as users call it, in argument errors), or
    ``general`` itself without the compiled module."""
    if _fast is None:
        return general
    general.__name__ = "push_event"
    general.__qualname__ = "EventStreamProcessor.push_event"
    return _fast.PushEvent(general)

_OVERFLOW = {"drop": lib.EH_OVERFLOW_DROP_NEWEST, "block": lib.EH_OVERFLOW_BLOCK}
_CLOCK = {"wall": lib.EH_CLOCK_WALL, "event_time": lib.EH_CLOCK_EVENT_TIME}
_FORMATS = ("dicts", "tuples", "columns")


class EventColumns(NamedTuple):
    """A batch as parallel lists: the cheap delivery form (``batch_format="columns"``)."""

    types: List[str]
    """Event kinds."""
    user_ids: List[str]
    """User ids."""
    channel_ids: List[str]
    """Channel ids."""
    timestamps: List[int]
    """Unix seconds."""
    payloads: Optional[List[bytes]]
    """Payloads, or ``None`` when no event of this processor ever carried one."""

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.types)


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


Batch = Union[List[EventDict], List[EventTuple], EventColumns]
FlushCallback = Callable[[Any], Any]


def _decode(events: Any, n: int, form: str, payloads: bool) -> Any:
    """Turns a native batch into the requested Python form: natively when the
    compiled module is there (strings decoded once per batch and shared), else
    :func:`_decode_general`."""
    if _build_batch is None:
        return _decode_general(events, n, form, payloads)
    batch = _build_batch(int(ffi.cast("uintptr_t", events)), n, _FORM_CODE[form], payloads)
    return EventColumns(*batch) if form == "columns" else batch


def _decode_general(events: Any, n: int, form: str, payloads: bool) -> Any:
    """Turns a native batch into the requested Python form through cffi."""
    if n == 0:
        cols: Tuple[list, list, list, list] = ([], [], [], [])
    else:
        needed = ffi.new("size_t *")
        stamps = ffi.new("int64_t[]", n)
        cap = 40 * n
        buf = ffi.new("uint8_t[]", cap)
        status = _columns(events, n, buf, cap, needed, stamps)
        if status == 0 and needed[0] > cap:
            cap = needed[0]
            buf = ffi.new("uint8_t[]", cap)
            status = _columns(events, n, buf, cap, needed, stamps)
        if status == 0:
            fields = _buffer(buf, needed[0])[:].decode("utf-8").split("\0")
            cols = (fields[:n], fields[n : 2 * n], fields[2 * n :], _unpack(stamps, n))
        else:
            # A field holds a NUL byte: read the events one by one.
            def field(ptr: Any, length: int) -> str:
                return _buffer(ptr, length)[:].decode("utf-8") if length else ""

            rows = [events[i] for i in range(n)]
            cols = (
                [field(e.kind, e.kind_len) for e in rows],
                [field(e.user_id, e.user_id_len) for e in rows],
                [field(e.channel_id, e.channel_id_len) for e in rows],
                [e.timestamp for e in rows],
            )
    kinds, users, channels, ts = cols
    pays: Optional[List[bytes]] = None
    if payloads:
        pays = []
        for i in range(n):
            e = events[i]
            pays.append(_buffer(e.payload, e.payload_len)[:] if e.payload_len else b"")
    if form == "columns":
        return EventColumns(kinds, users, channels, ts, pays)
    if form == "tuples":
        return list(zip(kinds, users, channels, ts))
    batch = [
        {"type": k, "user_id": u, "channel_id": c, "timestamp": t}
        for k, u, c, t in zip(kinds, users, channels, ts)
    ]
    if pays is not None:
        for d, p in zip(batch, pays):
            if p:
                d["payload"] = p
    return batch


class _Dispatch:
    """A processor's callback state shared by its registrations: whether payloads
    were pushed and the place failures are recorded. Holds no reference to the
    processor."""

    __slots__ = ("payloads", "last_error", "errors", "lock", "interrupt", "__weakref__")

    def __init__(self) -> None:
        self.payloads = False
        self.last_error: Optional[BaseException] = None
        self.errors = 0
        self.lock = threading.Lock()
        # A KeyboardInterrupt raised inside a callback running on the main thread
        # (synchronous mode: callbacks run inside flush_now/close): the batch fails
        # as any exception does, and the wait that ran it re-raises the interrupt.
        self.interrupt: Optional[BaseException] = None

    def failed(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.last_error = exc
            self.errors += 1
            if isinstance(exc, KeyboardInterrupt):
                self.interrupt = exc
        if isinstance(exc, errors.BatchFailed):
            # An expected failure the callback already described: one line, no traceback.
            log.warning("engagehub %s callback failed; the batch will be retried or dead-lettered: %s", what, exc)
            return
        log.error("engagehub %s callback raised; the batch will be retried or dead-lettered", what, exc_info=exc)


class _Registration:
    """What one callback registration's ``user_data`` reaches: the callable, its
    batch format and the processor's shared :class:`_Dispatch`. Immutable, so a
    registration the native side refuses changes nothing."""

    __slots__ = ("dispatch", "callback", "form", "__weakref__")

    def __init__(self, dispatch: _Dispatch, callback: Callable[..., Any], form: str) -> None:
        self.dispatch = dispatch
        self.callback = callback
        self.form = form


@ffi.callback("int32_t(void *, const eh_event *, size_t)", error=1)
def _flush_trampoline(user_data: Any, events: Any, n: int) -> int:
    if _delivery_started is not None:
        _delivery_started()  # first, under the GIL: the GIL hand-off, see _engagehub_fast.c
    registration: _Registration = ffi.from_handle(user_data)
    dispatch = registration.dispatch
    try:
        result = registration.callback(_decode(events, n, registration.form, dispatch.payloads))
        if result is not None and hasattr(result, "__await__"):
            _refuse_awaitable(result)
    except BaseException as exc:  # noqa: BLE001 - every failure must be counted
        dispatch.failed("flush", exc)
        return 1
    return 0


if _fast is not None:
    # What the native side calls with the processor's own delivery context (see
    # set_flush_callback): counts the worker as waiting for the GIL, then runs
    # _flush_trampoline; that processor's pushes hand the GIL over to it
    # (_engagehub_fast.c). The context's finalizer runs _user_data_free.
    _flush_entry: Any = ffi.cast("eh_flush_fn", _fast.FLUSH_ENTRY)
    _context_free: Any = ffi.cast("eh_free_fn", _fast.CONTEXT_FREE)
    _delivery_started = _fast.delivery_started
else:
    _flush_entry = _flush_trampoline
    _delivery_started = None


@ffi.callback("void(void *, const eh_event *, size_t, const char *)")
def _dead_letter_trampoline(user_data: Any, events: Any, n: int, error: Any) -> None:
    registration: _Registration = ffi.from_handle(user_data)
    dispatch = registration.dispatch
    reason = ffi.string(error).decode("utf-8", "replace")
    if dispatch.last_error is not None:
        reason = f"{reason}: {dispatch.last_error!r}"
    try:
        registration.callback(_decode(events, n, "dicts", dispatch.payloads), reason)
    except BaseException as exc:  # noqa: BLE001
        log.error("engagehub dead-letter callback raised; batch counted as dead-lettered", exc_info=exc)


def _refuse_awaitable(result: Any) -> None:
    """A plain callback returned a coroutine (or other awaitable): nothing would
    await it, so the batch fails instead of counting as delivered."""
    close = getattr(result, "close", None)
    if close is not None:
        close()  # no "coroutine was never awaited" warning
    raise TypeError(
        "the flush callback returned an awaitable, which nothing awaits: register "
        "a coroutine function with set_flush_callback(callback, loop=loop)"
    )


def _is_coroutine_function(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class _OnLoop:
    """A coroutine function run on an event loop from a worker thread: the worker
    submits the coroutine with ``asyncio.run_coroutine_threadsafe`` and waits for
    its result with the GIL released (so each worker has at most one batch in
    flight). Its exception, or the loop closing or stopping while the batch
    awaits, fails the batch like a plain callback's exception: retried, then
    dead-lettered."""

    __slots__ = ("function", "loop")

    def __init__(self, function: Callable[..., Any], loop: asyncio.AbstractEventLoop) -> None:
        self.function = function
        self.loop = loop

    def __call__(self, *args: Any) -> None:
        loop = self.loop
        if loop.is_closed():
            raise RuntimeError("the callback's event loop is closed")
        coroutine = self.function(*args)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except BaseException:
            coroutine.close()
            raise
        while True:
            try:
                future.result(timeout=_SLICE_MS / 1000)
                return
            except concurrent.futures.TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    future.cancel()
                    raise RuntimeError("the callback's event loop stopped while the batch awaited") from None


def _check_loop(callback: Any, loop: Optional[asyncio.AbstractEventLoop], what: str) -> Any:
    """The callable to register: ``callback`` itself, or for a coroutine function
    with a ``loop``, an :class:`_OnLoop` bridge. Refuses the mismatches."""
    if _is_coroutine_function(callback):
        if loop is None:
            raise TypeError(
                f"{what} is a coroutine function: pass the event loop it must run on "
                f"(set_{what}(callback, loop=asyncio.get_running_loop()))"
            )
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        return _OnLoop(callback, loop)
    if loop is not None:
        raise TypeError(f"loop= is for a coroutine function; {what} {callback!r} is a plain function")
    return callback


# One entry per callback registration: the `ffi.new_handle` the native side holds
# as `user_data`, keyed by its address. Only `_user_data_free` (the native
# finalizer, which runs after the callback's last call) removes an entry, so no
# batch can ever reach a released handle, whoever dropped the processor and on
# whichever thread.
_CONTEXTS: dict[int, Any] = {}


def _register_context(registration: _Registration) -> Any:
    handle = ffi.new_handle(registration)
    _CONTEXTS[int(ffi.cast("uintptr_t", handle))] = handle
    return handle


def _forget_context(handle: Any) -> None:
    """For a registration the native side refused (it keeps no user_data then)."""
    _CONTEXTS.pop(int(ffi.cast("uintptr_t", handle)), None)


@ffi.callback("void(void *)")
def _user_data_free(user_data: Any) -> None:
    _CONTEXTS.pop(int(ffi.cast("uintptr_t", user_data)), None)


_LIVE: "weakref.WeakSet[EventStreamProcessor]" = weakref.WeakSet()


def _free_processor(ptr: Any) -> None:
    """``ffi.gc``'s destructor. On a thread running an event loop, which an async
    callback's batches still in flight may need, the blocking native free runs
    on a helper thread instead of blocking that loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        lib.eh_processor_free(ptr)
        return
    threading.Thread(target=lib.eh_processor_free, args=(ptr,), name="engagehub-free", daemon=True).start()


def _after_fork_in_child() -> None:
    # Threads do not survive fork: a lock another thread held at that moment would
    # stay held forever in the child. The native side re-initialises itself.
    for processor in list(_LIVE):
        processor._dispatch.lock = threading.Lock()
        if _fast is not None:
            processor._reset_handoff()  # no delivery of the parent's is waiting here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    # Workers must not call into Python while the interpreter finalizes.
    for processor in list(_LIVE):
        try:
            processor.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("engagehub: closing a processor at exit failed")


def _window(window_secs: Optional[int]) -> int:
    """A query window in seconds (``None``: all time, 0 on the C side)."""
    if window_secs is None:
        return 0
    if isinstance(window_secs, bool) or not isinstance(window_secs, (int, float)):
        raise errors.InvalidType(f"window_secs must be a number or None, not {type(window_secs).__name__}", 1)
    if not 0 <= window_secs < 2**63:  # NaN fails too
        raise errors.InvalidArgument(f"window_secs must be >= 0, got {window_secs}", 1)
    return int(window_secs)


def _now(now: Optional[float]) -> int:
    """A query's "now" (``None``: the processor's clock, 0 on the C side)."""
    return 0 if now is None else timestamp_arg(now, "now")


# With the compiled module, the processor's C base class: where the compiled calls
# read its native address, overflow mode and GIL hand-off (_engagehub_fast.c).
_NATIVE_BASES: Tuple[type, ...] = () if _fast is None else (_fast.ProcessorBase,)


class EventStreamProcessor(NativeHandle, *_NATIVE_BASES):  # type: ignore[misc]
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

    ``num_threads=0`` is the synchronous mode: no worker threads; events wait in
    the ring (``buffer_size`` still bounds memory: a full ring drops) and are
    sketched and delivered on the thread that calls :meth:`flush_now` or
    :meth:`close`, inside the call, in push order, in batches of at most
    ``batch_size`` (``flush_interval_ms`` is unused); queries count an event once
    a flush has processed it. ``overflow="block"`` is refused with it (nothing
    would drain the ring while a push waits).

    Sharing through Redis (docs/shared.md): with ``redis=`` (a ``redis.Redis`` or
    ``redis.cluster.RedisCluster``) and ``namespace=``, a background thread
    publishes the analytics every ``publish_interval_ms`` for
    :class:`engagehub.shared.SharedAnalytics` readers in any process, exactly once;
    pushes, queries and the constructor never touch Redis (all Redis calls run on
    that thread). :meth:`flush_now` and :meth:`close` also wait for Redis to hold
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
    Survives ``os.fork()``: see the module's notes.

    Thread safety: safe to share between threads. :meth:`close` may run while
    other threads push or query: their calls finish, or raise
    :class:`~engagehub.Closed`. From inside this processor's own callbacks,
    :meth:`close`, :meth:`flush_now` and the ``set_*_callback`` methods raise
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
    ) -> None:
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
            # 0 means "default" in the C config; here it is a real (invalid) value.
            # The native side checks the real ranges and names the field.
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < limit:
                raise errors.InvalidArgument(f"{name} must be a positive integer, got {value!r}", 1)
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or not 0 <= num_threads < 2**32 - 1:
            raise errors.InvalidArgument(f"num_threads must be an integer >= 0, got {num_threads!r}", 1)
        if overflow not in _OVERFLOW:
            raise errors.InvalidArgument(f"overflow must be 'drop' or 'block', got {overflow!r}", 1)
        if clock not in _CLOCK:
            raise errors.InvalidArgument(f"clock must be 'wall' or 'event_time', got {clock!r}", 1)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise errors.InvalidArgument(f"max_retries must be >= 0, got {max_retries!r}", 1)
        journal_path, journal_sync_ms = journal_args(journal, journal_sync)
        config = ffi.new(
            "eh_processor_config *",
            {
                "struct_size": ffi.sizeof("eh_processor_config"),
                "capacity": buffer_size,
                "workers": num_threads if num_threads else lib.EH_WORKERS_NONE,
                "batch_size": batch_size,
                "flush_interval_ms": flush_interval_ms,
                "overflow": _OVERFLOW[overflow],
                "block_timeout_ms": block_timeout_ms,
                "max_retries": -1 if max_retries == 0 else min(max_retries, 2**31 - 1),
                "retry_backoff_ms": retry_backoff_ms,
                "clock": _CLOCK[clock],
                "window_minutes": window_minutes,
                "cms_depth": cms_depth,
                "cms_width": cms_width,
                "topk_capacity": topk_capacity,
                "max_future_skew_secs": max_future_skew_secs,
                "journal_path": journal_path,
                "journal_sync_ms": journal_sync_ms,
            },
        )
        out = ffi.new("eh_processor **")
        self._dispatch = _Dispatch()
        # The event loops the async callbacks run on (flush, dead letter).
        self._loops: dict = {}
        _call(lib.eh_processor_new, config, out)
        self._block_timeout = block_timeout_ms / 1000
        if overflow == "block" and type(self) is EventStreamProcessor:
            # Pushes that may wait take the sliced path (Ctrl-C between slices);
            # the drop mode's fast push_event stays free of the check.
            self.__class__ = _BlockingPushes
        # From a worker thread (the last reference dropped in a callback, or the
        # cyclic GC running there), eh_processor_free hands the close to a reaper.
        self._own(out[0], _free_processor)
        # What the compiled calls read (ProcessorBase): the shell's address
        # (valid for this wrapper's whole life: ffi.gc frees it) and whether a
        # push may wait for room (then they release the GIL).
        if _fast is not None:
            self._bind_target(int(ffi.cast("uintptr_t", self._cdata)), overflow == "block", block_timeout_ms)
        _LIVE.add(self)
        self._publisher: Any = None
        self._publish_timeout = 30.0
        if redis is not None:
            self._start_publisher(
                redis, namespace, publish_interval_ms, window_minutes, clock, publish_max_members, publish_timeout
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
        _LIVE.discard(self)

    def _native_close(self, cdata: Any) -> None:
        while True:
            rc = lib.eh_processor_close_timeout(cdata, _SLICE_MS)
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

    def _refuse_on_callback_loop(self, what: str, instead: str) -> None:
        """WouldDeadlock for a blocking wait on the thread running the event loop
        an async callback needs."""
        if not self._loops:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running in self._loops.values():
            raise errors.WouldDeadlock(
                f"{what} called on the event loop this processor's async callback runs on: "
                f"it would block the loop the callback needs and never return; use {instead}",
                errors.WouldDeadlock.status,
            )

    async def aflush(self, timeout: Optional[float] = None) -> None:
        """:meth:`flush_now` for coroutines: waits on a thread of the loop's default
        executor, so the loop stays free to run async callbacks (and in synchronous
        mode the callbacks run on that thread). Cancelling the await does not
        cancel the flush."""
        self._h()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._flush_blocking, timeout)

    async def aclose(self) -> None:
        """:meth:`close` for coroutines, on a thread of the loop's default executor:
        the loop keeps running the async callbacks of the last batches."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.close)

    async def __aenter__(self) -> "EventStreamProcessor":
        self._h()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _start_publisher(
        self,
        client: Any,
        namespace: Optional[str],
        interval_ms: int,
        window_minutes: int,
        clock: str,
        max_members: int,
        timeout: Any,
    ) -> None:
        from .shared._publisher import Publisher, seconds_arg
        from .shared._sources import AnalyticsSource

        try:
            if namespace is None:
                raise errors.InvalidArgument("redis= needs namespace=", 1)
            self._publish_timeout = seconds_arg(timeout, "publish_timeout")
            source = AnalyticsSource(
                self, namespace, window_minutes=window_minutes, event_time=clock == "event_time",
                max_members=max_members,
            )
            self._publisher = Publisher(source, client, interval_ms=interval_ms)
        except errors.EngageHubError:
            self._native_close(self._cdata)
            self._closed = True
            _LIVE.discard(self)
            raise

    def _finish_publishing(self) -> None:
        """close()'s publishing half: deliver everything, then publish the rest to
        Redis within ``publish_timeout`` (the publisher logs what it could not)."""
        # Sliced, so Ctrl-C gets through; from our own callback WouldDeadlock is
        # raised here and the processor stays open.
        self._flush_blocking(None, publish=False)
        self._publisher.close(self._publish_timeout)

    def publish_now(self, timeout: Optional[float] = None) -> bool:
        """Waits until Redis holds everything this processor has processed (not
        what is still in the ring: :meth:`flush_now` first for that), for at most
        ``timeout`` seconds (``None``: ``publish_timeout``). True when it does;
        False when Redis did not acknowledge in time, or at once when Redis refused
        the batch because one of the namespace's keys is not engagehub's (logged,
        naming the key); the publisher keeps retrying either way. Raises
        :class:`~engagehub.InvalidArgument` when the namespace's stored
        configuration refuses this writer (also logged). Without ``redis=``: True."""
        self._h()
        if self._publisher is None:
            return True
        from .shared._publisher import seconds_arg

        wait = self._publish_timeout if timeout is None else seconds_arg(timeout, "timeout")
        return bool(self._publisher.publish(wait))

    @property
    def unpublished(self) -> int:
        """Events a :meth:`close` could not publish to Redis within
        ``publish_timeout`` (0 without ``redis=`` or when everything got there)."""
        return 0 if self._publisher is None else self._publisher.counters.unpublished_at_close

    def _repr_details(self) -> str:
        s = self.stats()
        return f"accepted={s.accepted} delivered={s.delivered} queued={s.queue_len}"

    # -- callbacks ---------------------------------------------------------------

    # What a type checker sees: the callback's argument follows batch_format.
    @overload
    def set_flush_callback(
        self,
        callback: Optional[DictsCallback],
        *,
        batch_format: Literal["dicts"] = "dicts",
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None: ...
    @overload
    def set_flush_callback(
        self,
        callback: Optional[Callable[[List[EventTuple]], object]],
        *,
        batch_format: Literal["tuples"],
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None: ...
    @overload
    def set_flush_callback(
        self,
        callback: Optional[Callable[[EventColumns], object]],
        *,
        batch_format: Literal["columns"],
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None: ...

    def set_flush_callback(
        self,
        callback: Optional[FlushCallback],
        *,
        batch_format: str = "dicts",
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        """Calls ``callback(batch)`` on a worker thread for every batch (in
        synchronous mode, ``num_threads=0``, on the thread calling
        :meth:`flush_now` or :meth:`close`).

        asyncio: a coroutine function (``async def``) needs ``loop``, the running
        event loop it must be awaited on (``TypeError`` without; a plain function
        with a ``loop`` is refused too). Each worker submits the coroutine to the
        loop and waits for it with the GIL released, so at most ``num_threads``
        batches are in flight at once (one in synchronous mode); an exception,
        or the loop stopping or closing while a batch awaits, fails the batch:
        retried, then dead-lettered. On that loop use ``await aflush()`` and
        ``await aclose()`` (or ``async with``): :meth:`flush_now` and
        :meth:`close` there raise :class:`~engagehub.WouldDeadlock`. A plain
        callback that returns an awaitable fails its batch (nothing would await
        it).

        ``batch_format``: ``"dicts"`` (drop-in: a list of ``{"type", "user_id",
        "channel_id", "timestamp"}`` dicts, plus ``"payload"`` when one was pushed),
        ``"tuples"`` (a list of ``(type, user_id, channel_id, timestamp)``), or
        ``"columns"`` (an :class:`EventColumns` of parallel lists, the cheapest).
        A callback that raises fails the batch: it is retried, then dead-lettered.
        ``None`` removes the callback: batches are then discarded and counted.
        """
        if batch_format not in _FORMATS:
            raise errors.InvalidArgument(f"batch_format must be one of {_FORMATS}, got {batch_format!r}", 1)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable or None")
        if callback is None and loop is not None:
            raise TypeError("loop= is for a coroutine function callback, not None")
        p = self._h()
        if callback is None:
            _call(lib.eh_processor_set_flush_callback, p, _NULL, _NULL, _NULL)
            self._loops.pop("flush", None)
            return
        target = _check_loop(callback, loop, "flush_callback")
        context = _register_context(_Registration(self._dispatch, target, batch_format))
        if _fast is None:
            user_data, release = context, _user_data_free
        else:
            # The processor's own GIL hand-off: a native context around the
            # registration, released (with it) by _context_free.
            delivery = self._delivery_context(
                int(ffi.cast("uintptr_t", context)), int(ffi.cast("uintptr_t", _flush_trampoline)),
                int(ffi.cast("uintptr_t", _user_data_free)),
            )
            user_data, release = ffi.cast("void *", delivery), _context_free
        try:
            _call(lib.eh_processor_set_flush_callback, p, _flush_entry, user_data, release)
        except BaseException:
            if _fast is not None:
                _fast.discard_context(delivery)
            _forget_context(context)
            raise
        if loop is None:
            self._loops.pop("flush", None)
        else:
            self._loops["flush"] = loop

    def set_dead_letter_callback(
        self, callback: Optional[DeadLetterCallback], *, loop: Optional[asyncio.AbstractEventLoop] = None
    ) -> None:
        """Calls ``callback(events, error)`` (a list of dicts and the last failure) for
        a batch whose flush failed ``max_retries + 1`` times. ``None`` removes it.
        A coroutine function needs ``loop``, as for :meth:`set_flush_callback`."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable or None")
        if callback is None and loop is not None:
            raise TypeError("loop= is for a coroutine function callback, not None")
        p = self._h()
        if callback is None:
            _call(lib.eh_processor_set_dead_letter_callback, p, _NULL, _NULL, _NULL)
            self._loops.pop("dead_letter", None)
            return
        target = _check_loop(callback, loop, "dead_letter_callback")
        context = _register_context(_Registration(self._dispatch, target, "dicts"))
        try:
            _call(lib.eh_processor_set_dead_letter_callback, p, _dead_letter_trampoline, context, _user_data_free)
        except BaseException:
            _forget_context(context)
            raise
        if loop is None:
            self._loops.pop("dead_letter", None)
        else:
            self._loops["dead_letter"] = loop

    @property
    def last_callback_error(self) -> Optional[BaseException]:
        """The last exception a flush callback raised (``None`` if none did)."""
        return self._dispatch.last_error

    @property
    def callback_errors(self) -> int:
        """How many times a flush callback raised."""
        return self._dispatch.errors

    # -- intake ------------------------------------------------------------------

    def _push_event_general(
        self,
        event_type: Union[str, bytes],
        user_id: Union[str, bytes],
        channel_id: Union[str, bytes],
        timestamp: Union[int, float, None] = 0,
        payload: Optional[bytes] = None,
    ) -> bool:
        """Offers one event; ``True`` if accepted, ``False`` if the ring was full (the
        event was dropped and counted). ``timestamp`` is unix seconds; 0 or ``None``
        means now. ``payload`` bytes are carried unchanged to the callback."""
        if self._closed:
            raise self._closed_error()
        p = self._cdata
        if type(timestamp) is not int:
            timestamp = 0 if timestamp is None else timestamp_arg(timestamp)
        if payload is None and type(event_type) is str and type(user_id) is str and type(channel_id) is str:
            # Fast path: one string argument; a NUL inside a field makes the native
            # side refuse it (wrong field count) and we take the general path.
            try:
                fields = f"{event_type}\0{user_id}\0{channel_id}".encode()
                rc = _push_fields(p, fields, len(fields), timestamp)
            except UnicodeEncodeError:  # a lone surrogate: encode() below names it
                rc = -1
            except OverflowError:  # an int timestamp beyond 64 bits
                timestamp_arg(timestamp)
                raise
            if rc == 0:
                return True
            if rc == _EH_QUEUE_FULL:
                return False
            if rc > 0 and fields.count(b"\0") == 2:
                # Not a field-splitting problem: the event itself was refused (and,
                # for a future timestamp, counted). Pushing it again would count
                # the refusal twice.
                check(rc)
        k = encode(event_type, "event_type")
        u = encode(user_id, "user_id")
        c = encode(channel_id, "channel_id")
        timestamp = timestamp_arg(timestamp)
        if payload is None:
            rc = _push(p, k, len(k), u, len(u), c, len(c), timestamp, _NULL, 0)
        else:
            payload = bytes(payload)
            self._dispatch.payloads = True
            rc = _push(p, k, len(k), u, len(u), c, len(c), timestamp, payload, len(payload))
        if rc == 0:
            return True
        if rc == _EH_QUEUE_FULL:
            return False
        check(rc)
        return False  # unreachable: check() raised

    def _push_failed(self, status: int) -> bool:
        """The compiled push_event's answer to a status other than OK and QUEUE_FULL:
        what the general path raises for it (Closed as for a closed wrapper when
        that is why)."""
        if status == _EH_SHUT_DOWN and self._closed:
            raise self._closed_error()
        check(status)
        return False  # unreachable: check() raised

    if TYPE_CHECKING:  # the compiled descriptor's signature, for type checkers

        def push_event(
            self,
            event_type: Union[str, bytes],
            user_id: Union[str, bytes],
            channel_id: Union[str, bytes],
            timestamp: Union[int, float, None] = 0,
            payload: Optional[bytes] = None,
        ) -> bool:
            """Offers one event; ``True`` if accepted, ``False`` if the ring was full."""

    else:
        # Called as `p.push_event(...)`, a method descriptor in C: one native call for
        # three str and an int (or None) timestamp, no Python frame; every other call
        # runs _push_event_general. See _engagehub_fast.c.
        push_event = _compiled_push_event(_push_event_general)

    def push_many(self, events: Iterable[PushRow]) -> int:
        """Offers many events in one native call; returns how many were accepted.

        ``events``: ``(type, user_id, channel_id)`` or ``(type, user_id, channel_id,
        timestamp)`` tuples (or dicts with the drop-in keys). The accepted events are
        always the first ones: after the first refusal (full ring) the rest are
        dropped and counted. Under ``overflow="block"`` a full ring is waited for
        (the GIL released, Ctrl-C between 0.1 s slices) up to ``block_timeout_ms``
        in all for the call, then the rest is dropped and counted.

        One invalid event raises :class:`~engagehub.InvalidArgument` with nothing
        pushed, its message naming it (``event N: ...``, N counted from 0), in
        both overflow modes, with or without the compiled module. Rows with
        ``bytes`` ids, float or ``None`` timestamps, mixed widths or a NUL inside
        a field take a slower per-event path, which stops at the invalid event
        instead (the ones before it are pushed) and raises what ``push_event``
        raises for it.
        """
        p = self._h()
        rows: Any = events if isinstance(events, list) else list(events)
        n = len(rows)
        if n == 0:
            return 0
        if isinstance(rows[0], dict):
            rows = [(e["type"], e["user_id"], e["channel_id"], e.get("timestamp", 0)) for e in rows]
        if _push_rows is not None:
            # One eh_processor_push_batch over the strings' cached UTF-8; None:
            # rows the columns path below handles (bytes, floats, NULs...).
            done = _push_rows(self, rows)
            if done is not None:
                rc, accepted = done
                if rc == 0:
                    return accepted
                if rc == _EH_SHUT_DOWN and self._closed:
                    raise self._closed_error()
                check(rc)
        return self._push_many_general(p, rows)

    def _push_many_general(self, p: Any, rows: List[Sequence[Any]]) -> int:
        """push_many through cffi: three NUL-joined columns and one native call."""
        n = len(rows)
        width = len(rows[0])
        try:
            # One list comprehension per column: zip(*rows) would create an iterator
            # per row, and those thousand allocations per call set off the cyclic
            # GC, which then walks every object of the process (4x slower with a
            # million live events).
            if width == 4:
                stamps: Any = _from_buffer("int64_t[]", array("q", [r[3] for r in rows]))
            elif width == 3 and max(map(len, rows)) == 3:
                stamps = _NULL
            elif width in (3, 4):
                return self._push_each(rows)  # 3- and 4-tuples mixed
            else:
                raise errors.InvalidArgument(
                    "events must be 3- or 4-tuples (type, user_id, channel_id[, timestamp])", 1
                )
            k = "\0".join([r[0] for r in rows]).encode()
            u = "\0".join([r[1] for r in rows]).encode()
            c = "\0".join([r[2] for r in rows]).encode()
        except (TypeError, IndexError, UnicodeEncodeError, OverflowError):
            # bytes ids, None or float timestamps, ragged rows, a lone surrogate or
            # a timestamp beyond 64 bits: one call per event (which raises for the
            # bad one).
            return self._push_each(rows)
        out = _new("size_t *")
        rc = _push_columns(p, k, len(k), u, len(u), c, len(c), stamps, n, out)
        if rc == 0:
            return int(out[0])
        if rc == _EH_INVALID_ARGUMENT and any(col.count(b"\0") != n - 1 for col in (k, u, c)):
            # A NUL inside a field shifted the columns (nothing was pushed).
            return self._push_each(rows)
        check(rc)
        return 0  # unreachable: check() raised

    def _push_each(self, rows: Sequence[Sequence[Any]]) -> int:
        """push_many's general path: one push_event per row, stopping at the first
        refused event."""
        accepted = 0
        for row in rows:
            if len(row) not in (3, 4):
                raise errors.InvalidArgument(f"event {row!r} is not a 3- or 4-tuple", 1)
            if not self.push_event(*row):
                break
            accepted += 1
        return accepted

    # -- barrier and counters ----------------------------------------------------

    def flush_now(self, timeout: Optional[float] = None) -> None:
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
        self._refuse_on_callback_loop("flush_now()", "await processor.aflush()")
        self._flush_blocking(timeout)

    def _flush_blocking(self, timeout: Optional[float], publish: bool = True) -> None:
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
            slice_ms = _SLICE_MS
            if deadline is not None:
                slice_ms = max(0, min(_SLICE_MS, int((deadline - time.monotonic()) * 1000)))
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
            self._publish_within(wait)

    def _publish_within(self, wait: float) -> None:
        """flush_now()'s Redis half: waits up to ``wait`` s; logs, never raises."""
        try:
            if self._publisher.publish(wait):
                return
            error = self._publisher.counters.last_error
            reason = f"within {wait:g} s" + (f" (last error: {error})" if error else "")
        except errors.EngageHubError as exc:  # refused; the publisher logged it
            reason = f"(refused: {exc})"
        log.warning(
            "engagehub: flush_now() delivered every event, but Redis did not acknowledge them %s; "
            "%d events wait for Redis (namespace %r), the publisher keeps retrying",
            reason, self._publisher.source.pending(), self._publisher.source.namespace,
        )

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
        from ._native import copied

        message = copied(lib.eh_processor_journal_error, self._h()).decode("utf-8", "replace")
        return message or None

    def _publish_counters(self) -> Tuple[int, ...]:
        publisher = self._publisher
        if publisher is None:
            return ()
        c, source = publisher.counters, publisher.source
        return (c.batches, c.failures, c.duplicates, source.lost_minutes, source.pending())

    def total_events_processed(self) -> int:
        """Events taken from the ring and sketched by the workers."""
        return self.stats().processed

    def events_dropped(self) -> int:
        """Events refused because the ring was full."""
        return self.stats().dropped

    def events_dead_lettered(self) -> int:
        """Events whose batch the flush callback failed on every attempt (handed to
        the dead-letter callback). They were sketched before delivery, so
        :meth:`total_events_processed` and the analytics count them although your
        database may not hold them: show this beside them."""
        return self.stats().dead_lettered

    # -- analytics ---------------------------------------------------------------

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
        _call(lib.eh_processor_unique_users, h, _window(window_secs), _now(now), out)
        return int(out[0])

    def get_unique_users_last_hour(self) -> int:
        """Distinct users in the last hour of the processor's clock."""
        return self.unique_users(3600)

    def users_sketch(self, window_secs: Optional[int] = 3600, now: Optional[int] = None) -> HyperLogLog:
        """The sketch behind :meth:`unique_users`, to merge with other processes'."""
        out = ffi.new("eh_hll **")
        h = self._h()
        _call(lib.eh_processor_users_sketch, h, _window(window_secs), _now(now), out)
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
        _call(lib.eh_processor_top_channels, h, k, _window(window_secs), _now(now), out)
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

    def _get_top_channels_general(self, k: int = 10) -> List[Tuple[str, int]]:
        """Drop-in: the ``k`` busiest channels of all time as ``(channel_id, count)``."""
        return self._top_channels_general(k)

    def _top_failed(self, status: int) -> List[Tuple[str, int]]:
        """The compiled top_channels' answer to a non-zero status: what the general
        path raises for it (Closed as for a closed wrapper when that is why)."""
        if status == _EH_SHUT_DOWN and self._closed:
            raise self._closed_error()
        check(status)
        return []  # unreachable: check() raised

    if TYPE_CHECKING:  # the compiled descriptors' signatures, for type checkers

        def top_channels(
            self, k: int = 10, window_secs: Optional[int] = None, now: Optional[int] = None
        ) -> List[Tuple[str, int]]:
            """The ``k`` busiest channels as ``(channel_id, count)``, busiest first."""

        def get_top_channels(self, k: int = 10) -> List[Tuple[str, int]]:
            """Drop-in: the ``k`` busiest channels of all time."""
    elif _FAST_TOP:
        # Method descriptors in C: one native call and the (channel_id, count)
        # tuples built there, reused while the native answer is unchanged; every
        # other call (bad or unusual arguments) runs the general method. See
        # _engagehub_fast.c. Argument errors name the methods as users call them.
        _top_channels_general.__name__ = "top_channels"
        _top_channels_general.__qualname__ = "EventStreamProcessor.top_channels"
        _get_top_channels_general.__name__ = "get_top_channels"
        _get_top_channels_general.__qualname__ = "EventStreamProcessor.get_top_channels"
        top_channels = _fast.TopChannels(_top_channels_general, False)
        get_top_channels = _fast.TopChannels(_get_top_channels_general, True)
    else:
        top_channels = _top_channels_general
        get_top_channels = _get_top_channels_general

    def channel_count(self, channel_id: Union[str, bytes]) -> int:
        """All-time events in ``channel_id`` by the Count-Min sketch (never
        undercounts; overcounts by at most e/width of all events, w.h.p.)."""
        c = encode(channel_id, "channel_id")
        out = ffi.new("uint64_t *")
        _call(lib.eh_processor_channel_count, self._h(), c, len(c), out)
        return int(out[0])


class _BlockingPushes(EventStreamProcessor):
    """What an ``EventStreamProcessor(overflow="block")`` is: a push into a full
    ring waits for room (up to ``block_timeout_ms``) in native slices of 0.1 s
    (``eh_processor_push_wait``, ``eh_processor_push_batch_wait`` for push_many),
    between which Python runs signal handlers, so Ctrl-C raises
    ``KeyboardInterrupt`` promptly (nothing more is pushed or counted then). Same
    name and API as the class it refines."""

    def _push_event_sliced(
        self,
        event_type: Union[str, bytes],
        user_id: Union[str, bytes],
        channel_id: Union[str, bytes],
        timestamp: Union[int, float, None] = 0,
        payload: Optional[bytes] = None,
    ) -> bool:
        """push_event under "block": waits for room in 0.1 s slices (Ctrl-C between
        them) up to ``block_timeout_ms``; ``False`` if none came (dropped, counted)."""
        p = self._h()
        k = encode(event_type, "event_type")
        u = encode(user_id, "user_id")
        c = encode(channel_id, "channel_id")
        ts = 0 if timestamp is None else timestamp_arg(timestamp)
        if payload is None:
            data: Any = _NULL
            size = 0
        else:
            data = bytes(payload)
            size = len(data)
            self._dispatch.payloads = True
        for wait_ms, give_up in self._wait_slices():
            rc = lib.eh_processor_push_wait(p, k, len(k), u, len(u), c, len(c), ts, data, size, wait_ms, give_up)
            if rc == 0:
                return True
            if rc == _EH_QUEUE_FULL:
                return False
            if rc != _EH_TIMEOUT:
                check(rc)
        raise AssertionError("unreachable: the last slice gives up")

    # The compiled descriptor, as in drop mode: one eh_processor_push_wait that
    # takes a free slot without waiting, else the same slices with the GIL
    # released and signal handlers between them; every other call runs
    # _push_event_sliced.
    push_event = _compiled_push_event(_push_event_sliced)

    def push_many(self, events: Iterable[PushRow]) -> int:
        self._h()
        rows: Any = events if isinstance(events, list) else list(events)
        if rows and isinstance(rows[0], dict):
            rows = [(e["type"], e["user_id"], e["channel_id"], e.get("timestamp", 0)) for e in rows]
        if not rows:
            return 0
        # One eh_processor_push_batch_wait per slice of the wait (the GIL released
        # meanwhile), signal handlers between slices: every event is checked before
        # any is pushed, as in drop mode. The rows neither path reads as a batch
        # (None) take the per-event path, as in drop mode.
        push_rows = _push_rows if _push_rows is not None else _BlockingPushes._push_rows_general
        done = 0
        for wait_ms, give_up in self._wait_slices():
            result = push_rows(self, rows if done == 0 else rows[done:], wait_ms, give_up)
            if result is None:
                return done + self._push_each(rows[done:])
            rc, accepted = result
            done += accepted
            if rc == 0:
                return done
            if rc == _EH_SHUT_DOWN and self._closed:
                raise self._closed_error()
            if rc != _EH_TIMEOUT:
                check(rc)
        raise AssertionError("unreachable: the last slice gives up")

    def _push_rows_general(self, rows: List[Any], wait_ms: int, give_up: bool) -> Optional[Tuple[int, int]]:
        """The compiled ``push_rows`` through cffi (same rows, same answer): one
        ``eh_processor_push_batch_wait`` over an ``eh_event`` array for a list of
        3- or 4-tuples (all of one width) of str and an int timestamp;
        ``(status, accepted)``, or None for rows it does not take."""
        first = rows[0]
        width = len(first) if type(first) is tuple else 0
        if width not in (3, 4):
            return None
        n = len(rows)
        events = ffi.new("eh_event[]", n)
        keep = []  # the UTF-8 buffers the events point into
        for i, row in enumerate(rows):
            if type(row) is not tuple or len(row) != width:
                return None
            fields = row[:3]
            if any(type(f) is not str for f in fields):
                return None
            ts = row[3] if width == 4 else 0
            if type(ts) is not int or not _INT64_MIN <= ts <= _INT64_MAX:
                return None
            try:
                encoded = [f.encode() for f in fields]
            except UnicodeEncodeError:
                return None
            buffers = [_from_buffer("uint8_t[]", b) for b in encoded]
            keep.append(buffers)
            e = events[i]
            e.kind, e.user_id, e.channel_id = buffers
            e.kind_len, e.user_id_len, e.channel_id_len = map(len, encoded)
            e.timestamp = ts
        accepted = _new("size_t *")
        rc = lib.eh_processor_push_batch_wait(self._cdata, events, n, accepted, wait_ms, int(give_up))
        return rc, int(accepted[0])

    def _wait_slices(self) -> Iterator[Tuple[int, bool]]:
        """``(wait_ms, give_up)`` for each 0.1 s slice of a push's wait for room,
        ``block_timeout_ms`` in all; the last slice gives up. Endless: the caller
        stops at the first answer other than EH_TIMEOUT."""
        deadline = time.monotonic() + self._block_timeout
        while True:
            left = deadline - time.monotonic()
            yield max(0, int(min(left, _SLICE_MS / 1000) * 1000)), left <= _SLICE_MS / 1000


_BlockingPushes.__name__ = _BlockingPushes.__qualname__ = "EventStreamProcessor"


__all__ = ["EventColumns", "EventStreamProcessor", "ProcessorStats"]
