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
    """An I/O operation failed (EH_IO)."""

    status = 5


class Corrupt(EngageHubError, ValueError):
    """Serialized data failed validation; nothing was changed (EH_CORRUPT)."""

    status = 6


class ShutDown(EngageHubError):
    """The handle is shut down (EH_SHUT_DOWN)."""

    status = 7


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
    """A non-blocking call found the handle in use by another thread; nothing was
    done (EH_BUSY). The package's own calls handle it by waiting instead."""

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
        ShutDown,
        Timeout,
        WouldDeadlock,
        Poisoned,
        Panic,
        Busy,
    )
}


def error_for_status(status: int, message: str) -> EngageHubError:
    """The exception for a non-zero status code (unknown codes give the base class)."""
    cls = _BY_STATUS.get(status, EngageHubError)
    return cls(message or f"engagehub status {status}", status)


class BatchFailed(EngageHubError):
    """Raise from a flush callback to fail the batch for a known, transient reason
    (a locked database, a lost connection): the batch is retried and dead-lettered
    like any failure, but the processor logs one WARNING line with this message
    instead of an ERROR with a traceback. Never raised by the library itself."""
