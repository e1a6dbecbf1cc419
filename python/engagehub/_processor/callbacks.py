"""The flush and dead-letter callbacks: how a native worker reaches the Python
callable.

Each registration is a :class:`Registration` (the callable, its batch format and
the processor's :class:`Dispatch`), reached by the native side through
``user_data``: a cffi handle kept in a module-level registry (:data:`CONTEXTS`),
one entry per registration, released only by the native ``user_data_free``
finalizer, which runs after the callback's last call. So a processor collected
anywhere (even by the cyclic GC on one of its own worker threads, where the
native free hands the close to a reaper thread) keeps delivering its remaining
batches to live callables.

With the compiled module, a flush registration is wrapped in a native *delivery
context* of the processor's own GIL hand-off (``_engagehub_fast.c``): the worker
counts itself as waiting for the GIL before the trampoline takes it, and that
processor's pushes hand the GIL over (a batch is delivered now rather than after
the interpreter's 5 ms switch interval).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Union, overload

from .. import errors
from .._compiled import fast
from .._handle import NativeHandle
from .._native import _call, ffi, lib
from .._types import DeadLetterCallback, DictsCallback, EventDict, EventTuple
from .asyncio_bridge import check_loop
from .decode import BATCH_FORMATS, EventColumns, decode

log = logging.getLogger("engagehub")

_NULL = ffi.NULL

Batch = Union[List[EventDict], List[EventTuple], EventColumns]
FlushCallback = Callable[[Any], Any]


class Dispatch:
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
        # (synchronous mode: callbacks run inside flush/close): the batch fails
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


class Registration:
    """What one callback registration's ``user_data`` reaches: the callable, its
    batch format and the processor's shared :class:`Dispatch`. Immutable, so a
    registration the native side refuses changes nothing."""

    __slots__ = ("dispatch", "callback", "form", "__weakref__")

    def __init__(self, dispatch: Dispatch, callback: Callable[..., Any], form: str) -> None:
        self.dispatch = dispatch
        self.callback = callback
        self.form = form


# -- the context registry ------------------------------------------------------------

CONTEXTS: Dict[int, Any] = {}
"""One entry per callback registration: the ``ffi.new_handle`` the native side
holds as ``user_data``, keyed by its address. Only :func:`_user_data_free` (the
native finalizer, which runs after the callback's last call) removes an entry,
so no batch can ever reach a released handle, whoever dropped the processor and
on whichever thread."""


def register_context(registration: Registration) -> Any:
    handle = ffi.new_handle(registration)
    CONTEXTS[int(ffi.cast("uintptr_t", handle))] = handle
    return handle


def forget_context(handle: Any) -> None:
    """For a registration the native side refused (it keeps no user_data then)."""
    CONTEXTS.pop(int(ffi.cast("uintptr_t", handle)), None)


@ffi.callback("void(void *)")
def _user_data_free(user_data: Any) -> None:
    CONTEXTS.pop(int(ffi.cast("uintptr_t", user_data)), None)


# -- the trampolines -----------------------------------------------------------------


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


_delivery_started: Any = fast.delivery_started if fast is not None else None


@ffi.callback("int32_t(void *, const eh_event *, size_t)", error=1)
def _flush_trampoline(user_data: Any, events: Any, n: int) -> int:
    if _delivery_started is not None:
        _delivery_started()  # first, under the GIL: the GIL hand-off, see _engagehub_fast.c
    registration: Registration = ffi.from_handle(user_data)
    dispatch = registration.dispatch
    try:
        result = registration.callback(decode(events, n, registration.form, dispatch.payloads))
        if result is not None and hasattr(result, "__await__"):
            _refuse_awaitable(result)
    except BaseException as exc:  # noqa: BLE001 - every failure must be counted
        dispatch.failed("flush", exc)
        return 1
    return 0


@ffi.callback("void(void *, const eh_event *, size_t, const char *)")
def _dead_letter_trampoline(user_data: Any, events: Any, n: int, error: Any) -> None:
    registration: Registration = ffi.from_handle(user_data)
    dispatch = registration.dispatch
    reason = ffi.string(error).decode("utf-8", "replace")
    if dispatch.last_error is not None:
        reason = f"{reason}: {dispatch.last_error!r}"
    try:
        registration.callback(decode(events, n, "dicts", dispatch.payloads), reason)
    except BaseException as exc:  # noqa: BLE001
        log.error("engagehub dead-letter callback raised; batch counted as dead-lettered", exc_info=exc)


if fast is not None:
    # What the native side calls with the processor's own delivery context (see
    # Callbacks.set_flush_callback): counts the worker as waiting for the GIL, then
    # runs _flush_trampoline. The context's finalizer runs _user_data_free.
    _flush_entry: Any = ffi.cast("eh_flush_fn", fast.FLUSH_ENTRY)
    _context_free: Any = ffi.cast("eh_free_fn", fast.CONTEXT_FREE)
else:
    _flush_entry = _flush_trampoline


# -- the methods ---------------------------------------------------------------------


def _check_callback(callback: Any, loop: Any) -> None:
    """A ``set_*_callback`` argument: a callable, or None (then without ``loop``)."""
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    if callback is None and loop is not None:
        raise TypeError("loop= is for a coroutine function callback, not None")


class Callbacks(NativeHandle):
    """``set_flush_callback``, ``set_dead_letter_callback`` and what they record."""

    _dispatch: Dispatch
    _loops: Dict[str, asyncio.AbstractEventLoop]

    if TYPE_CHECKING:

        def _delivery_context(self, inner: int, trampoline: int, inner_free: int) -> int: ...

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
        :meth:`flush` or :meth:`close`).

        asyncio: a coroutine function (``async def``) needs ``loop``, the running
        event loop it must be awaited on (``TypeError`` without; a plain function
        with a ``loop`` is refused too). Each worker submits the coroutine to the
        loop and waits for it with the GIL released, so at most ``num_threads``
        batches are in flight at once (one in synchronous mode); an exception,
        or the loop stopping or closing while a batch awaits, fails the batch:
        retried, then dead-lettered. On that loop use ``await aflush()`` and
        ``await aclose()`` (or ``async with``): :meth:`flush` and
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
        if batch_format not in BATCH_FORMATS:
            raise errors.InvalidArgument(f"batch_format must be one of {BATCH_FORMATS}, got {batch_format!r}", 1)
        _check_callback(callback, loop)
        p = self._h()
        if callback is None:
            _call(lib.eh_processor_set_flush_callback, p, _NULL, _NULL, _NULL)
            self._loops.pop("flush", None)
            return
        target = check_loop(callback, loop, "flush_callback")
        context = register_context(Registration(self._dispatch, target, batch_format))
        if fast is None:
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
            if fast is not None:
                fast.discard_context(delivery)
            forget_context(context)
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
        _check_callback(callback, loop)
        p = self._h()
        if callback is None:
            _call(lib.eh_processor_set_dead_letter_callback, p, _NULL, _NULL, _NULL)
            self._loops.pop("dead_letter", None)
            return
        target = check_loop(callback, loop, "dead_letter_callback")
        context = register_context(Registration(self._dispatch, target, "dicts"))
        try:
            _call(lib.eh_processor_set_dead_letter_callback, p, _dead_letter_trampoline, context, _user_data_free)
        except BaseException:
            forget_context(context)
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


__all__ = ["CONTEXTS", "Batch", "Callbacks", "Dispatch", "FlushCallback", "Registration"]
