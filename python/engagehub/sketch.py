"""Standalone, mergeable, serializable sketches: :class:`HyperLogLog` and
:class:`CountMinSketch`.

Both are thin handles over the native ``eh_hll`` / ``eh_cms``; their byte form is
versioned and checksummed, so sketches made by different processes (or by a
processor's :meth:`~engagehub.EventStreamProcessor.users_sketch`) can be shipped
and merged.
"""

from __future__ import annotations

from typing import Any, Iterable, Union

from . import errors
from ._handle import NativeHandle
from ._native import _call, encode, ffi, lib

Item = Union[str, bytes]


def _bytes(data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.InvalidType(f"data must be bytes, not {type(data).__name__}", 1)
    return bytes(data)


def _serialize(fn: Any, handle: Any) -> bytes:
    needed = ffi.new("size_t *")
    _call(fn, handle, ffi.NULL, 0, needed)
    buf = ffi.new("uint8_t[]", needed[0])
    _call(fn, handle, buf, needed[0], needed)
    return ffi.buffer(buf, needed[0])[:]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidType(f"{what} must be an int, not {type(value).__name__}", 1)
    return value


class HyperLogLog(NativeHandle):
    """Distinct counter: precision 14 (16 KiB), ±0.81% standard error, near exact for
    small counts. Items are ``str`` (hashed as UTF-8) or ``bytes``.

    Plain memory: :meth:`close` only marks it closed (later calls raise
    :class:`~engagehub.Closed`); the memory goes with the object, through
    ``ffi.gc``. A forked child works on its own copy.

    Thread safety: safe to share between threads, :meth:`close` included."""

    _kind = "HyperLogLog"

    def __init__(self) -> None:
        out = ffi.new("eh_hll **")
        _call(lib.eh_hll_new, out)
        self._own(out[0], lib.eh_hll_free)

    @classmethod
    def _adopt(cls, ptr: Any) -> "HyperLogLog":
        self = cls.__new__(cls)
        self._own(ptr, lib.eh_hll_free)
        return self

    def _repr_details(self) -> str:
        return f"~{self.count()} distinct"

    def add(self, item: Item) -> None:
        """Adds one item."""
        h = self._h()
        b = encode(item, "item")
        _call(lib.eh_hll_add, h, b, len(b))

    def update(self, items: Iterable[Item]) -> None:
        """Adds every item of an iterable."""
        add, h = lib.eh_hll_add, self._h()
        for item in items:
            b = encode(item, "item")
            _call(add, h, b, len(b))

    def merge(self, other: "HyperLogLog") -> None:
        """Folds ``other`` in: afterwards this counts the union of both streams."""
        if not isinstance(other, HyperLogLog):
            raise errors.InvalidType(f"can only merge a HyperLogLog, not {type(other).__name__}", 1)
        _call(lib.eh_hll_merge, self._h(), other._h())

    def count(self) -> int:
        """Estimated number of distinct items."""
        out = ffi.new("uint64_t *")
        _call(lib.eh_hll_count, self._h(), out)
        return int(out[0])

    def __len__(self) -> int:
        return self.count()

    def clear(self) -> None:
        """Resets to empty."""
        _call(lib.eh_hll_clear, self._h())

    def to_bytes(self) -> bytes:
        """The versioned, checksummed byte form (16400 bytes)."""
        return _serialize(lib.eh_hll_serialize, self._h())

    @classmethod
    def from_bytes(cls, data: bytes) -> "HyperLogLog":
        """Rebuilds a sketch from :meth:`to_bytes`; raises :class:`~engagehub.Corrupt`
        on a truncated, altered or foreign buffer."""
        data = _bytes(data)
        out = ffi.new("eh_hll **")
        _call(lib.eh_hll_deserialize, data, len(data), out)
        return cls._adopt(out[0])

    def to_redis(self) -> bytes:
        """The sketch as the value of a Redis HyperLogLog key: Redis 7's dense
        encoding (12304 bytes). After ``client.set(key, hll.to_redis())`` Redis's
        ``PFCOUNT``, ``PFADD`` and ``PFMERGE`` treat the key as their own: the
        registers are Redis's, so ``PFCOUNT`` gives :meth:`count`'s number."""
        return _serialize(lib.eh_hll_to_redis, self._h())

    @classmethod
    def from_redis(cls, data: bytes) -> "HyperLogLog":
        """Reads the value of a Redis HyperLogLog key (``client.get(key)`` of a key
        built by ``PFADD`` or ``PFMERGE``), dense or sparse; :meth:`count` then equals
        ``PFCOUNT``. Raises :class:`~engagehub.Corrupt` naming the problem for
        anything else."""
        data = _bytes(data)
        out = ffi.new("eh_hll **")
        _call(lib.eh_hll_from_redis, data, len(data), out)
        return cls._adopt(out[0])


class CountMinSketch(NativeHandle):
    """Frequency sketch: ``depth`` rows × ``width`` counters (default 4 × 2048).
    Estimates never undercount and exceed the truth by at most ``e/width`` of the
    total with probability ``1 - e**-depth``.

    Plain memory: :meth:`close` only marks it closed (later calls raise
    :class:`~engagehub.Closed`); the memory goes with the object, through
    ``ffi.gc``. A forked child works on its own copy.

    Thread safety: safe to share between threads, :meth:`close` included."""

    _kind = "CountMinSketch"

    def __init__(self, depth: int = 4, width: int = 2048) -> None:
        for name, value in (("depth", depth), ("width", width)):
            if not 0 < _int(value, name) < 2**32:
                raise errors.InvalidArgument(f"{name} must be in [1, 2**32), got {value}", 1)
        out = ffi.new("eh_cms **")
        _call(lib.eh_cms_new, depth, width, out)
        self._own(out[0], lib.eh_cms_free)

    @classmethod
    def _adopt(cls, ptr: Any) -> "CountMinSketch":
        self = cls.__new__(cls)
        self._own(ptr, lib.eh_cms_free)
        return self

    def _repr_details(self) -> str:
        return f"total={self.total()}"

    def add(self, item: Item, count: int = 1) -> None:
        """Adds ``count`` occurrences of ``item``."""
        h = self._h()
        if not 0 <= _int(count, "count") < 2**64:
            raise errors.InvalidArgument(f"count must be in [0, 2**64), got {count}", 1)
        b = encode(item, "item")
        _call(lib.eh_cms_add, h, b, len(b), count)

    def estimate(self, item: Item) -> int:
        """Estimated occurrences of ``item`` (never below the truth)."""
        h = self._h()
        b = encode(item, "item")
        out = ffi.new("uint64_t *")
        _call(lib.eh_cms_estimate, h, b, len(b), out)
        return int(out[0])

    def __getitem__(self, item: Item) -> int:
        return self.estimate(item)

    def total(self) -> int:
        """Sum of all counts added."""
        out = ffi.new("uint64_t *")
        _call(lib.eh_cms_total, self._h(), out)
        return int(out[0])

    def merge(self, other: "CountMinSketch") -> None:
        """Adds ``other``'s counts (same dimensions, else ``InvalidArgument``)."""
        if not isinstance(other, CountMinSketch):
            raise errors.InvalidType(f"can only merge a CountMinSketch, not {type(other).__name__}", 1)
        _call(lib.eh_cms_merge, self._h(), other._h())

    def clear(self) -> None:
        """Resets every counter."""
        _call(lib.eh_cms_clear, self._h())

    def to_bytes(self) -> bytes:
        """The versioned, checksummed byte form."""
        return _serialize(lib.eh_cms_serialize, self._h())

    @classmethod
    def from_bytes(cls, data: bytes) -> "CountMinSketch":
        """Rebuilds a sketch from :meth:`to_bytes`; raises :class:`~engagehub.Corrupt`
        on a truncated, altered or foreign buffer."""
        data = _bytes(data)
        out = ffi.new("eh_cms **")
        _call(lib.eh_cms_deserialize, data, len(data), out)
        return cls._adopt(out[0])


__all__ = ["CountMinSketch", "HyperLogLog"]
