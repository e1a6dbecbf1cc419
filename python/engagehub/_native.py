"""Loading of the native library and the one path every call takes (``_call``).

Two ways in, one set of declarations (the generated ``engagehub.h``, filtered by
:func:`header_to_cdef`, so nothing is hand-copied and nothing can drift):

* the compiled cffi API-mode module ``engagehub._engagehub_cffi`` that
  ``pip install`` builds linked against the ``libengagehub.so`` beside it (``make
  py-ext``: with the Rust static library linked in): the fast path, about half the
  per-call cost of ABI mode;
* cffi ABI mode, ``ffi.dlopen`` of ``libengagehub.so``: no compiler needed. Used when
  ``ENGAGEHUB_LIB`` names a library (that override always wins), when
  ``ENGAGEHUB_ABI=1``, or when the compiled module is absent. The library is looked
  for next to the package (``libengagehub.so``, or ``libengagehub.so.*``: an
  installed package ships it under its SONAME), then in a source checkout's
  ``target/{release,debug}``.

:data:`MODE` says which one is in use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import cffi

from ._header import header_to_cdef
from .errors import EngageHubError, InvalidArgument, InvalidType, error_for_status

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent.parent

if sys.platform == "darwin":
    _LIB_NAME = "libengagehub.dylib"
elif sys.platform == "win32":
    _LIB_NAME = "engagehub.dll"
else:
    _LIB_NAME = "libengagehub.so"

def _find_header() -> Path:
    for candidate in (_PACKAGE_DIR / "engagehub.h", _REPO_DIR / "include" / "engagehub.h"):
        if candidate.is_file():
            return candidate
    raise ImportError(
        "engagehub.h not found: expected next to the package or in include/ of a source checkout"
    )


def _find_library() -> str:
    override = os.environ.get("ENGAGEHUB_LIB")
    if override:
        if not Path(override).is_file():
            raise ImportError(f"ENGAGEHUB_LIB={override!r} is not a file")
        return override
    # An installed package: the library beside it, under its SONAME when it has
    # one (libengagehub.so.0.2: the name the compiled module links to).
    candidates = [_PACKAGE_DIR / _LIB_NAME] + sorted(_PACKAGE_DIR.glob(_LIB_NAME + ".*"))
    # A source checkout without an install: the cargo build outputs.
    candidates += [_REPO_DIR / "target" / profile / _LIB_NAME for profile in ("release", "debug")]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise ImportError(
        f"{_LIB_NAME} not found next to the package, in target/, or via ENGAGEHUB_LIB; "
        "build it with `cargo build --release` or install the package with `pip install .`"
    )


def _load() -> tuple[Any, Any, str, str]:
    if not os.environ.get("ENGAGEHUB_LIB") and os.environ.get("ENGAGEHUB_ABI") != "1":
        try:
            from . import _engagehub_cffi as compiled  # type: ignore[attr-defined]
        except ImportError:
            pass
        else:
            return compiled.ffi, compiled.lib, "api", str(compiled.__file__)
    abi = cffi.FFI()
    abi.cdef(header_to_cdef(_find_header().read_text(encoding="utf-8")))
    path = _find_library()
    return abi, abi.dlopen(path), "abi", path


ffi: Any
lib: Any
ffi, lib, MODE, LIBRARY_PATH = _load()
"""``MODE`` is ``"api"`` (compiled module) or ``"abi"`` (dlopen); ``LIBRARY_PATH``
is the file that was loaded."""


def last_error() -> str:
    """This thread's last error message from the library."""
    return ffi.string(lib.eh_last_error()).decode("utf-8", "replace")


def status_name(status: int) -> str:
    """The C name of a status code (``"EH_QUEUE_FULL"``...)."""
    return ffi.string(lib.eh_status_str(status)).decode()


def _call(fn: Callable[..., int], *args: Any) -> None:
    """Calls a status-returning function; raises the mapped exception on failure."""
    status = fn(*args)
    if status:
        raise error_for_status(status, last_error(), lib.eh_last_error_errno())


def check(status: int, filename: "str | os.PathLike[str] | None" = None) -> None:
    """Raises for a non-zero status already returned by a call on this thread
    (``filename``: the path the call was given, for :class:`~engagehub.IOFailure`)."""
    if status:
        name = None if filename is None else os.fsdecode(filename)
        raise error_for_status(status, last_error(), lib.eh_last_error_errno(), name)


def copied(fn: Callable[..., int], *args: Any) -> bytes:
    """The bytes a ``(..., uint8_t *buf, size_t cap, size_t *needed)`` function
    copies out (asked again with a bigger buffer while it does not fit)."""
    needed = ffi.new("size_t *")
    cap = 256
    while True:
        buf = ffi.new("uint8_t[]", cap)
        _call(fn, *args, buf, cap, needed)
        if needed[0] <= cap:
            return ffi.buffer(buf, needed[0])[:]
        cap = needed[0]


def journal_args(journal: Any, journal_sync: Any) -> "tuple[Any, int]":
    """``journal_path`` (a ``char[]`` to keep alive for the call, or NULL) and
    ``journal_sync_ms`` for a config, from ``journal=`` (a path or ``None``) and
    ``journal_sync=`` (seconds between syncs, or ``"always"``)."""
    if journal_sync == "always":
        sync_ms = -1
    elif isinstance(journal_sync, bool) or not isinstance(journal_sync, (int, float)):
        raise InvalidType(f"journal_sync must be seconds or 'always', not {journal_sync!r}", 1)
    elif not 0.001 <= journal_sync <= 3600:
        raise InvalidArgument(f"journal_sync must be 0.001 to 3600 seconds or 'always', got {journal_sync!r}", 1)
    else:
        sync_ms = int(journal_sync * 1000)
    if journal is None:
        return ffi.NULL, sync_ms
    return ffi.new("char[]", path_bytes(journal)), sync_ms


def encode(value: str | bytes, what: str) -> bytes:
    """UTF-8 bytes of a str (bytes pass through: the library validates them)."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise InvalidArgument(f"{what} is not valid UTF-8 text ({exc.reason})", 1) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidType(f"{what} must be str or bytes, not {type(value).__name__}", 1)


def guild_arg(guild_id: Any) -> bytes:
    """A guild id as UTF-8 bytes: a str (or bytes), or an int (discord.py's
    ``guild.id``) as its decimal digits; ``None`` is ``b""`` (no guild)."""
    if type(guild_id) is str:
        try:
            return guild_id.encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: encode() says so
    elif guild_id is None:
        return b""
    elif isinstance(guild_id, int) and not isinstance(guild_id, bool):
        return str(guild_id).encode()
    elif not isinstance(guild_id, (str, bytes, bytearray, memoryview)):
        raise InvalidType(f"guild_id must be str, int, bytes or None, not {type(guild_id).__name__}", 1)
    return encode(guild_id, "guild_id")


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SIZE_MAX = 2 ** (8 * ffi.sizeof("size_t")) - 1


def count_arg(value: Any, what: str) -> int:
    """A non-negative int argument for a size_t, clamped to SIZE_MAX (a larger
    count means "all of them")."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidType(f"{what} must be an int, not {type(value).__name__}", 1)
    if value < 0:
        raise InvalidArgument(f"{what} must be >= 0, got {value}", 1)
    return value if value <= _SIZE_MAX else _SIZE_MAX


def timestamp_arg(value: Any, what: str = "timestamp") -> int:
    """Unix seconds as an int64: ints as they are, floats truncated; anything else
    :class:`InvalidType`, out of range (or NaN/inf) :class:`InvalidArgument`."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidType(f"{what} must be a number, not {type(value).__name__}", 1)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidArgument(f"{what} must be finite, got {value!r}", 1)
        value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgument(f"{what} {value} does not fit in 64 bits", 1)
    return value


def real_arg(value: Any, what: str) -> float:
    """A float argument: int or float (bool too, as update_user's points take it)."""
    if type(value) is float:
        return value
    if not isinstance(value, (int, float)):
        raise InvalidType(f"{what} must be a number, not {type(value).__name__}", 1)
    try:
        return float(value)
    except OverflowError:
        raise InvalidArgument(f"{what} is too large for a double", 1) from None


def path_bytes(path: "str | os.PathLike[str]") -> bytes:
    """A filesystem path as NUL-free bytes for the C API."""
    try:
        raw = os.fsencode(path)
    except TypeError:
        raise InvalidType(f"path must be str, bytes or os.PathLike, not {type(path).__name__}", 1) from None
    if b"\0" in raw:
        raise InvalidArgument("path contains a NUL byte", 1)
    return raw


__all__ = [
    "EngageHubError",
    "LIBRARY_PATH",
    "MODE",
    "check",
    "count_arg",
    "encode",
    "ffi",
    "header_to_cdef",
    "last_error",
    "lib",
    "path_bytes",
    "real_arg",
    "timestamp_arg",
    "status_name",
]
