"""asyncio: coroutine callbacks run on an event loop from the worker threads, and
the processor's coroutine methods (``aflush``, ``aclose``, ``async with``).

A worker submits the coroutine to the loop given as ``loop=`` and waits for its
result with the GIL released, so each worker has at most one batch in flight. On
that loop the blocking waits (``flush``, ``close``) would block the loop the
callback needs: they raise :class:`~engagehub.WouldDeadlock` there, and the
coroutine methods wait on a thread of the loop's default executor instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, TypeVar

from .. import errors
from .._handle import NativeHandle
from .config import SLICE_MS

_Processor = TypeVar("_Processor", bound="AsyncMethods")


class OnLoop:
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
                future.result(timeout=SLICE_MS / 1000)
                return
            except concurrent.futures.TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    future.cancel()
                    raise RuntimeError("the callback's event loop stopped while the batch awaited") from None


def is_coroutine_function(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def check_loop(callback: Any, loop: Optional[asyncio.AbstractEventLoop], what: str) -> Any:
    """The callable to register: ``callback`` itself, or for a coroutine function
    with a ``loop``, an :class:`OnLoop` bridge. Refuses the mismatches."""
    if is_coroutine_function(callback):
        if loop is None:
            raise TypeError(
                f"{what} is a coroutine function: pass the event loop it must run on "
                f"(set_{what}(callback, loop=asyncio.get_running_loop()))"
            )
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        return OnLoop(callback, loop)
    if loop is not None:
        raise TypeError(f"loop= is for a coroutine function; {what} {callback!r} is a plain function")
    return callback


class AsyncMethods(NativeHandle):
    """The processor's coroutine methods and the guard of its blocking ones."""

    _loops: Dict[str, asyncio.AbstractEventLoop]
    """The event loops the async callbacks run on, by callback ("flush",
    "dead_letter")."""

    if TYPE_CHECKING:

        def _flush_blocking(self, timeout: Optional[float], publish: bool = True) -> None: ...

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
        """:meth:`flush` for coroutines: waits on a thread of the loop's default
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

    async def __aenter__(self: _Processor) -> _Processor:
        self._h()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncMethods", "OnLoop", "check_loop", "is_coroutine_function"]
