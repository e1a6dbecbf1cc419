"""The compiled fast paths, ``engagehub._engagehub_fast`` (``_engagehub_fast.c``),
loaded once for the package and bound to the library cffi loaded (API or ABI mode),
so both paths share one engine, its handles and its thread-local last error.

:data:`fast` is the module, or ``None`` when it is absent or was compiled from
another version of the header: every call then goes through cffi, with the same
results (tests/python/test_processor_fast.py and test_leaderboard.py replay both).
What uses it: the processor's ``push_event``, ``push_many``, batch delivery and
``top_channels`` / ``get_top_channels`` (:mod:`engagehub._processor`), the
leaderboard's ``update_user`` and ``add``.
"""

from __future__ import annotations

from typing import Any

from ._native import ffi, lib


def address(name: str) -> int:
    """The address of the library function ``name``, as an int."""
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def load() -> Any:
    """``engagehub._engagehub_fast`` bound to the library's functions, or None when
    it is absent or compiled from another version of the header."""
    try:
        from . import _engagehub_fast as module  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(module, "HEADER_VERSION", None) != lib.eh_version_number():
        return None
    module.bind(address("eh_leaderboard_try_add"))
    module.bind_processor(
        address("eh_processor_push"),
        address("eh_processor_push_batch"),
        address("eh_processor_push_batch_wait"),
        address("eh_processor_push_wait"),
        address("eh_processor_push_event"),
        address("eh_processor_push_event_wait"),
    )
    module.bind_top_channels(address("eh_processor_top_channels"), address("eh_channel_list_free"))
    return module


fast: Any = load()
"""The bound compiled module, or None (the cffi paths)."""

__all__ = ["address", "fast", "load"]
