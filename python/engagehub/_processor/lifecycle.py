"""The live processors and the process events that concern them: the garbage
collector's native free, ``os.fork`` and interpreter exit.

* Fork: an inherited processor re-initialises itself natively on its first call
  in the child (fresh workers, an empty ring, counters and sketches starting
  empty, callbacks kept). Threads do not survive fork, so the wrapper's Python
  locks are replaced in the child (``os.register_at_fork``): a lock another
  thread of the parent held at fork time would stay held forever.
* Exit: workers must not call into Python while the interpreter finalizes, so an
  ``atexit`` hook closes every live processor (delivering what they accepted).
* Garbage collection: ``ffi.gc`` calls :func:`free_native`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from typing import Any, Protocol

from .._compiled import fast
from .._native import lib

log = logging.getLogger("engagehub")


class _Live(Protocol):
    """What the hooks use of a processor."""

    _dispatch: Any

    def close(self) -> None: ...

    def _reset_handoff(self) -> None: ...


LIVE: "weakref.WeakSet[_Live]" = weakref.WeakSet()
"""Every processor not yet closed."""


def free_native(ptr: Any) -> None:
    """``ffi.gc``'s destructor. On a thread running an event loop, which an async
    callback's batches still in flight may need, the blocking native free runs
    on a helper thread instead of blocking that loop. (From a worker thread, the
    last reference dropped in a callback or the cyclic GC running there,
    ``eh_processor_free`` hands the close to a reaper thread itself.)"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        lib.eh_processor_free(ptr)
        return
    threading.Thread(target=lib.eh_processor_free, args=(ptr,), name="engagehub-free", daemon=True).start()


def _after_fork_in_child() -> None:
    for processor in list(LIVE):
        processor._dispatch.lock = threading.Lock()
        if fast is not None:
            processor._reset_handoff()  # no delivery of the parent's is waiting here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    for processor in list(LIVE):
        try:
            processor.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("engagehub: closing a processor at exit failed")


__all__ = ["LIVE", "free_native"]
