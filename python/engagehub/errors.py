"""Exceptions raised for the library's status codes.

Every failing call raises a subclass of :class:`EngageHubError` carrying the
library's message (``eh_last_error()``) and the numeric ``status``. Subclasses also
derive from the closest built-in exception, so ``except ValueError`` catches bad
arguments and ``except OSError`` catches I/O failures.
"""

from __future__ import annotations


class EngageHubError(Exception):
    """Base class: a call into the engagehub library failed."""

    status: int = -1

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgument(EngageHubError, ValueError):
    """An argument was out of range, malformed or not valid UTF-8 (EH_INVALID_ARGUMENT)."""

    status = 1


class InvalidType(InvalidArgument, TypeError):
    """An argument had the wrong type, e.g. ``Leaderboard(decay_factor="0.9")``.

    A subclass of :class:`InvalidArgument` (hence ``ValueError``) that is also a
    ``TypeError``, so both ``except InvalidArgument`` and the built-in habit of
    ``except TypeError`` catch it. Values of the right type but out of range raise
    plain :class:`InvalidArgument`."""


class NotFound(EngageHubError, KeyError):
    """The named user or item does not exist (EH_NOT_FOUND)."""

    status = 2

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Full(EngageHubError):
    """A bounded structure is full and refused the item (EH_FULL)."""

    status = 3


class QueueFull(EngageHubError):
    """The event ring is full; the event was dropped and counted (EH_QUEUE_FULL)."""

    status = 4


class IOFailure(EngageHubError, OSError):
    """An I/O operation failed (EH_IO).

    ``errno`` is the operating system's error number (``errno.ENOENT``...) from
    ``eh_last_error_errno()``, or ``None`` when the failure had none; ``filename``
    is the path the call was given; ``strerror`` is the library's message (it
    names the file and the OS error)."""

    status = 5

    def __init__(
        self, message: str, status: int | None = None, errno: int | None = None, filename: str | None = None
    ) -> None:
        if errno:
            OSError.__init__(self, errno, message)
        else:
            OSError.__init__(self, message)
        if status is not None:
            self.status = status
        self.filename = filename

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else OSError.__str__(self)


class Corrupt(EngageHubError, ValueError):
    """Serialized data failed validation; nothing was changed (EH_CORRUPT)."""

    status = 6


class Closed(EngageHubError, ValueError):
    """The handle is closed (EH_SHUT_DOWN), or the wrapper was closed: the call did
    nothing. Also a ``ValueError``, as for a closed file."""

    status = 7


ShutDown = Closed
"""The former name of :class:`Closed` (same class)."""


class Timeout(EngageHubError, TimeoutError):
    """A blocking call did not finish in time (EH_TIMEOUT)."""

    status = 8


class WouldDeadlock(EngageHubError, RuntimeError):
    """Refused because it would deadlock, e.g. flush from a flush callback (EH_WOULD_DEADLOCK)."""

    status = 9


class Poisoned(EngageHubError, RuntimeError):
    """An earlier panic left the handle unusable (EH_POISONED)."""

    status = 10


class Panic(EngageHubError, RuntimeError):
    """The library panicked inside the call: a bug, please report it (EH_PANIC)."""

    status = 11


class Busy(EngageHubError):
    """The resource is in use; nothing was done (EH_BUSY): a non-blocking call
    found the handle in use by another thread (the package's own calls handle it
    by waiting instead), or a ``journal=`` another open handle holds (the message
    names the process holding it)."""

    status = 12


_BY_STATUS: dict[int, type[EngageHubError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Full,
        QueueFull,
        IOFailure,
        Corrupt,
        Closed,
        Timeout,
        WouldDeadlock,
        Poisoned,
        Panic,
        Busy,
    )
}


def error_for_status(
    status: int, message: str, errno: int | None = None, filename: str | None = None
) -> EngageHubError:
    """The exception for a non-zero status code (unknown codes give the base class).
    ``errno`` and ``filename`` go to :class:`IOFailure` only."""
    cls = _BY_STATUS.get(status, EngageHubError)
    message = message or f"engagehub status {status}"
    if cls is IOFailure:
        return IOFailure(message, status, errno or None, filename)
    return cls(message, status)


class BatchFailed(EngageHubError):
    """Raise from a flush callback to fail the batch for a known, transient reason
    (a locked database, a lost connection): the batch is retried and dead-lettered
    like any failure, but the processor logs one WARNING line with this message
    instead of an ERROR with a traceback. Never raised by the library itself."""
