"""Native batches as Python objects: the forms a flush callback can ask for
(``batch_format``), built natively by the compiled module when it is there
(strings decoded once and shared, see ``build_batch`` in _engagehub_fast.c), else
through cffi (:func:`decode_general`). Both give the same values."""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

from .._compiled import fast
from .._native import ffi, lib

BATCH_FORMATS = ("dicts", "tuples", "columns")
_FORM_CODE = {"dicts": 0, "tuples": 1, "columns": 2}

build_batch: Any = fast.build_batch if fast is not None else None
"""The compiled batch builder, or None (the tests set it to None to compare)."""

_columns = lib.eh_events_columns
_buffer = ffi.buffer
_unpack = ffi.unpack


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
    guild_ids: Optional[List[Optional[str]]] = None
    """Each event's guild (``None`` for an event pushed without one); a delivered
    batch always has this list."""

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.types)


EventColumns.__module__ = "engagehub.processor"  # where users import it from


def _replace_columns(self: EventColumns, **changes: Any) -> EventColumns:
    """``EventColumns._replace``: the namedtuple one checks the tuple's length
    through ``len()``, which counts events here."""
    return EventColumns(**{**self._asdict(), **changes})


setattr(EventColumns, "_replace", _replace_columns)


def decode(events: Any, n: int, form: str, payloads: bool) -> Any:
    """The native batch ``events[0:n]`` in the form ``form`` (one of
    :data:`BATCH_FORMATS`); ``payloads``: whether any event of the processor was
    pushed with one (else no payload field is built). An event's guild is in its
    dict (``guild_id``, only for an event that has one) and in the columns'
    ``guild_ids``; tuples stay ``(type, user_id, channel_id, timestamp)``."""
    if build_batch is None:
        return decode_general(events, n, form, payloads)
    batch = build_batch(int(ffi.cast("uintptr_t", events)), n, _FORM_CODE[form], payloads)
    return EventColumns(*batch) if form == "columns" else batch


def decode_general(events: Any, n: int, form: str, payloads: bool) -> Any:
    """:func:`decode` through cffi."""
    if n == 0:
        cols: Tuple[List[str], List[str], List[str], List[int]] = ([], [], [], [])
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
    # The per-event fields the columns above do not carry: one pass over the events.
    pays: Optional[List[bytes]] = [] if payloads else None
    guilds: List[Optional[str]] = []
    for i in range(n):
        e = events[i]
        if pays is not None:
            pays.append(_buffer(e.payload, e.payload_len)[:] if e.payload_len else b"")
        guilds.append(_buffer(e.guild_id, e.guild_id_len)[:].decode("utf-8") if e.guild_id_len else None)
    if form == "columns":
        return EventColumns(kinds, users, channels, ts, pays, guilds)
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
    for d, g in zip(batch, guilds):
        if g is not None:
            d["guild_id"] = g
    return batch


__all__ = ["BATCH_FORMATS", "EventColumns", "build_batch", "decode", "decode_general"]
