"""The one lifetime model of every wrapper (:class:`NativeHandle`).

* The wrapper owns its cdata for its whole life. The native memory is released by
  ``ffi.gc`` only, i.e. when the wrapper itself is collected, so never while a
  method of it (a Python call holding ``self``) is running on any thread.
* :meth:`NativeHandle.close` calls the handle's native close
  (``eh_leaderboard_close``, ``eh_processor_close``), which is thread-safe: calls in
  progress on other threads finish, or fail with ``EH_SHUT_DOWN`` and raise
  :class:`~engagehub.Closed`. From inside a processor's own callback the native
  close refuses with ``EH_WOULD_DEADLOCK``: :class:`~engagehub.WouldDeadlock` is
  raised and the handle stays open and usable.
* A call on a closed wrapper raises :class:`~engagehub.Closed` before touching cffi.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar

from . import errors
from ._native import _call, ffi

_Handle = TypeVar("_Handle", bound="NativeHandle")


class NativeHandle:
    """Base class of every wrapper of a native handle (processor, leaderboard,
    sketches): ``close()``, ``closed``, ``with`` blocks, and :class:`Closed` for
    calls after a close.

    Subclasses call :meth:`_own` with the pointer from the native constructor and
    reach it through :meth:`_h`, which raises :class:`~engagehub.Closed` once
    closed."""

    _kind: ClassVar[str] = "handle"
    """What the error messages call it ("leaderboard"...)."""

    _cdata: Any = None
    _closed: bool = True

    def _own(self, ptr: Any, free: Callable[[Any], None]) -> None:
        """Takes ownership of a new native pointer; ``free`` runs from ``ffi.gc``."""
        self._cdata = ffi.gc(ptr, free)
        self._closed = False

    def _native_close(self, cdata: Any) -> None:
        """Releases the native resources, keeping the shell (``eh_X_close``).
        Plain-memory handles (sketches) have nothing to do: ``ffi.gc`` frees them."""

    def _h(self) -> Any:
        """The cdata of an open handle; :class:`~engagehub.Closed` once closed."""
        if self._closed:
            raise self._closed_error()
        return self._cdata

    def _closed_error(self) -> errors.Closed:
        return errors.Closed(f"{self._kind} is closed", errors.Closed.status)

    def close(self) -> None:
        """Releases the native resources now; later calls raise
        :class:`~engagehub.Closed`. Idempotent; safe while other threads use the
        handle (their calls finish, or raise :class:`~engagehub.Closed`)."""
        if self._closed:
            return
        self._native_close(self._cdata)  # may raise (WouldDeadlock): stays open
        self._closed = True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run (or the handle failed to open)."""
        return self._closed

    def __enter__(self: _Handle) -> _Handle:
        self._h()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_details(self) -> str:
        return ""

    def __repr__(self) -> str:
        name = f"{type(self).__module__.split('.')[0]}.{type(self).__qualname__}"
        if self._closed:
            return f"<{name} closed>"
        try:
            details = self._repr_details()
        except errors.EngageHubError:  # e.g. closed by another thread meanwhile
            details = ""
        address = int(ffi.cast("uintptr_t", self._cdata))
        return f"<{name} {details + ' ' if details else ''}at {address:#x}>"


def native_close(fn: Callable[[Any], int]) -> Callable[[NativeHandle, Any], None]:
    """A :meth:`NativeHandle._native_close` that calls ``fn`` through ``_call``."""

    def close(self: NativeHandle, cdata: Any) -> None:
        _call(fn, cdata)

    return close


__all__ = ["NativeHandle", "native_close"]
