"""Intake: ``push_event`` and ``push_many``.

With the compiled module, ``push_event`` is a method descriptor in C
(``PushEvent``): called as ``p.push_event(...)`` with three ``str`` and an ``int``
(or ``None``) timestamp it makes one native call with no Python frame, and
``push_many`` hands a list of the usual tuples to one native batch call
(``push_rows``). Every other call runs the general methods here, through cffi,
which give the same answers and raise the same exceptions (the differential tests
in tests/python/test_processor_fast.py replay both).

The overflow mode is the processor's, not its type's: under ``"drop"`` a full ring
refuses at once (the push never waits, so the compiled calls keep the GIL); under
``"block"`` a push into a full ring waits for room up to ``block_timeout_ms``, in
native slices of 0.1 s with the GIL released, between which Python runs signal
handlers (Ctrl-C raises ``KeyboardInterrupt`` promptly; nothing more is pushed or
counted then). The compiled calls read the mode from the processor's C base
(``ProcessorBase``); the general paths from :attr:`Intake._block_timeout`.
"""

from __future__ import annotations

import time
from array import array
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .. import errors
from .._compiled import fast
from .._handle import NativeHandle
from .._native import check, encode, ffi, guild_arg, lib, timestamp_arg
from .._types import PushRow
from .callbacks import Dispatch
from .config import SLICE_MS

_push = lib.eh_processor_push
_push_fields = lib.eh_processor_push_fields
_push_columns = lib.eh_processor_push_columns
_push_wait = lib.eh_processor_push_wait
_push_event = lib.eh_processor_push_event
_push_event_wait = lib.eh_processor_push_event_wait
_push_batch = lib.eh_processor_push_batch
_push_batch_wait = lib.eh_processor_push_batch_wait
_NULL = ffi.NULL
_new = ffi.new
_from_buffer = ffi.from_buffer
_EH_QUEUE_FULL = lib.EH_QUEUE_FULL
_EH_TIMEOUT = lib.EH_TIMEOUT
_EH_INVALID_ARGUMENT = lib.EH_INVALID_ARGUMENT
_EH_SHUT_DOWN = lib.EH_SHUT_DOWN
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

push_rows: Any = fast.push_rows if fast is not None else None
"""The compiled batch push, or None (the tests set it to None to compare)."""


def _event_struct(
    kind: bytes, user: bytes, channel: bytes, timestamp: int, payload: Optional[bytes], guild: bytes
) -> Tuple[Any, List[Any]]:
    """An ``eh_event *`` over the encoded fields, and the buffers it points into
    (kept alive by the caller for the push)."""
    event = _new("eh_event *")
    keep = []
    for name, value in (("kind", kind), ("user_id", user), ("channel_id", channel), ("guild_id", guild)):
        if value:
            buffer = _from_buffer("uint8_t[]", value)
            keep.append(buffer)
            setattr(event, name, buffer)
            setattr(event, name + "_len", len(value))
    if payload:
        buffer = _from_buffer("uint8_t[]", payload)
        keep.append(buffer)
        event.payload, event.payload_len = buffer, len(payload)
    event.timestamp = timestamp
    return event, keep


def compiled_push_event(general: Callable[..., bool]) -> Any:
    """``push_event`` for a class body: the compiled descriptor over ``general``
    (which then names itself as users call it, in argument errors), or
    ``general`` itself without the compiled module."""
    if fast is None:
        return general
    general.__name__ = "push_event"
    general.__qualname__ = "EventStreamProcessor.push_event"
    return fast.PushEvent(general)


class Intake(NativeHandle):
    """``push_event`` and ``push_many`` and their general paths."""

    _dispatch: Dispatch
    _block_timeout: Optional[float]
    """Seconds a push may wait for room under ``overflow="block"``; None under
    ``"drop"``."""

    # -- push_event ----------------------------------------------------------------

    def _push_event_general(
        self,
        event_type: Union[str, bytes],
        user_id: Union[str, bytes],
        channel_id: Union[str, bytes],
        timestamp: Union[int, float, None] = 0,
        payload: Optional[bytes] = None,
        guild_id: Union[str, int, bytes, None] = None,
    ) -> bool:
        """Offers one event; ``True`` if accepted, ``False`` if the ring was full (the
        event was dropped and counted; under ``overflow="block"`` after waiting
        ``block_timeout_ms`` for room). ``timestamp`` is unix seconds; 0 or ``None``
        means now. ``payload`` bytes are carried unchanged to the callback.
        ``guild_id`` (a str, or an int such as discord.py's ``guild.id``, taken as
        its decimal digits; ``None`` or ``""``: none) is the guild the event
        happened in, for the daily history's per-guild answers."""
        if self._block_timeout is not None:
            return self._push_event_waiting(event_type, user_id, channel_id, timestamp, payload, guild_id)
        if self._closed:
            raise self._closed_error()
        p = self._cdata
        if type(timestamp) is not int:
            timestamp = 0 if timestamp is None else timestamp_arg(timestamp)
        if type(guild_id) is int:
            guild_id = str(guild_id)
        if (
            payload is None
            and type(event_type) is str
            and type(user_id) is str
            and type(channel_id) is str
            and (guild_id is None or type(guild_id) is str)
        ):
            # Fast path: one string argument (a fourth field is the guild); a NUL
            # inside a field makes the native side refuse it (wrong field count)
            # and we take the general path.
            try:
                if guild_id:
                    fields = f"{event_type}\0{user_id}\0{channel_id}\0{guild_id}".encode()
                    nuls = 3
                else:
                    fields = f"{event_type}\0{user_id}\0{channel_id}".encode()
                    nuls = 2
                rc = _push_fields(p, fields, len(fields), timestamp)
            except UnicodeEncodeError:  # a lone surrogate: encode() below names it
                rc = -1
            except OverflowError:  # an int timestamp beyond 64 bits
                timestamp_arg(timestamp)
                raise
            if rc == 0:
                return True
            if rc == _EH_QUEUE_FULL:
                return False
            if rc > 0 and fields.count(b"\0") == nuls:
                # Not a field-splitting problem: the event itself was refused (and,
                # for a future timestamp, counted). Pushing it again would count
                # the refusal twice.
                check(rc)
        k = encode(event_type, "event_type")
        u = encode(user_id, "user_id")
        c = encode(channel_id, "channel_id")
        g = guild_arg(guild_id)
        timestamp = timestamp_arg(timestamp)
        if payload is not None:
            payload = bytes(payload)
            self._dispatch.payloads = True
        if g:
            event, _keep = _event_struct(k, u, c, timestamp, payload, g)
            rc = _push_event(p, event)
        elif payload is None:
            rc = _push(p, k, len(k), u, len(u), c, len(c), timestamp, _NULL, 0)
        else:
            rc = _push(p, k, len(k), u, len(u), c, len(c), timestamp, payload, len(payload))
        if rc == 0:
            return True
        if rc == _EH_QUEUE_FULL:
            return False
        check(rc)
        return False  # unreachable: check() raised

    def _push_event_waiting(
        self,
        event_type: Union[str, bytes],
        user_id: Union[str, bytes],
        channel_id: Union[str, bytes],
        timestamp: Union[int, float, None],
        payload: Optional[bytes],
        guild_id: Union[str, int, bytes, None] = None,
    ) -> bool:
        """push_event under "block": waits for room in 0.1 s slices (Ctrl-C between
        them) up to ``block_timeout_ms``; ``False`` if none came (dropped, counted)."""
        p = self._h()
        k = encode(event_type, "event_type")
        u = encode(user_id, "user_id")
        c = encode(channel_id, "channel_id")
        g = guild_arg(guild_id)
        ts = 0 if timestamp is None else timestamp_arg(timestamp)
        if payload is None:
            data: Any = _NULL
            size = 0
        else:
            data = bytes(payload)
            size = len(data)
            self._dispatch.payloads = True
        # With a guild: an eh_event for eh_processor_push_event_wait (which takes one).
        event, _keep = _event_struct(k, u, c, ts, None if payload is None else data, g) if g else (None, None)
        for wait_ms, give_up in self._wait_slices():
            if g:
                rc = _push_event_wait(p, event, wait_ms, give_up)
            else:
                rc = _push_wait(p, k, len(k), u, len(u), c, len(c), ts, data, size, wait_ms, give_up)
            if rc == 0:
                return True
            if rc == _EH_QUEUE_FULL:
                return False
            if rc != _EH_TIMEOUT:
                check(rc)
        raise AssertionError("unreachable: the last slice gives up")

    def _push_failed(self, status: int) -> bool:
        """The compiled push_event's answer to a status other than OK and QUEUE_FULL:
        what the general path raises for it (Closed as for a closed wrapper when
        that is why)."""
        if status == _EH_SHUT_DOWN and self._closed:
            raise self._closed_error()
        check(status)
        return False  # unreachable: check() raised

    if TYPE_CHECKING:  # the compiled descriptor's signature, for type checkers

        def push_event(
            self,
            event_type: Union[str, bytes],
            user_id: Union[str, bytes],
            channel_id: Union[str, bytes],
            timestamp: Union[int, float, None] = 0,
            payload: Optional[bytes] = None,
            guild_id: Union[str, int, bytes, None] = None,
        ) -> bool:
            """Offers one event; ``True`` if accepted, ``False`` if the ring was full."""

    else:
        # Called as `p.push_event(...)`, a method descriptor in C: one native call for
        # three str and an int (or None) timestamp, no Python frame, under either
        # overflow mode; every other call runs _push_event_general.
        push_event = compiled_push_event(_push_event_general)

    # -- push_many -----------------------------------------------------------------

    def push_many(self, events: Iterable[PushRow]) -> int:
        """Offers many events in one native call; returns how many were accepted.

        ``events``: ``(type, user_id, channel_id)``, ``(type, user_id, channel_id,
        timestamp)`` or ``(type, user_id, channel_id, timestamp, guild_id)`` tuples
        (or dicts with the keys ``type``, ``user_id``, ``channel_id`` and optionally
        ``timestamp`` and ``guild_id``; ``guild_id`` as :meth:`push_event` takes it). The accepted events are
        always the first ones: after the first refusal (full ring) the rest are
        dropped and counted. Under ``overflow="block"`` a full ring is waited for
        (the GIL released, Ctrl-C between 0.1 s slices) up to ``block_timeout_ms``
        in all for the call, then the rest is dropped and counted.

        One invalid event raises :class:`~engagehub.InvalidArgument` with nothing
        pushed, its message naming it (``event N: ...``, N counted from 0), in
        both overflow modes, with or without the compiled module. Rows with
        ``bytes`` ids, float or ``None`` timestamps, mixed widths or a NUL inside
        a field take a slower per-event path, which stops at the invalid event
        instead (the ones before it are pushed) and raises what ``push_event``
        raises for it.
        """
        p = self._h()
        rows: Any = events if isinstance(events, list) else list(events)
        if not rows:
            return 0
        if isinstance(rows[0], dict):
            if any("guild_id" in e for e in rows):
                rows = [
                    (e["type"], e["user_id"], e["channel_id"], e.get("timestamp", 0), e.get("guild_id")) for e in rows
                ]
            else:
                rows = [(e["type"], e["user_id"], e["channel_id"], e.get("timestamp", 0)) for e in rows]
        if self._block_timeout is not None:
            return self._push_many_waiting(rows)
        if push_rows is not None:
            # One eh_processor_push_batch over the strings' cached UTF-8; None:
            # rows the columns path below handles (bytes, floats, NULs...).
            done = push_rows(self, rows)
            if done is not None:
                rc, accepted = done
                if rc == 0:
                    return int(accepted)
                if rc == _EH_SHUT_DOWN and self._closed:
                    raise self._closed_error()
                check(rc)
        return self._push_many_general(p, rows)

    def _push_many_general(self, p: Any, rows: List[Sequence[Any]]) -> int:
        """push_many under "drop" through cffi: three NUL-joined columns and one
        native call."""
        n = len(rows)
        width = len(rows[0])
        if width == 5:
            # Rows with a guild: one eh_processor_push_batch over an eh_event array.
            done = self._push_rows_general(rows, None, False)
            if done is None:
                return self._push_each(rows)
            rc, accepted = done
            if rc == 0:
                return accepted
            if rc == _EH_SHUT_DOWN and self._closed:
                raise self._closed_error()
            check(rc)
        try:
            # One list comprehension per column: zip(*rows) would create an iterator
            # per row, and those thousand allocations per call set off the cyclic
            # GC, which then walks every object of the process (4x slower with a
            # million live events).
            if width == 4:
                stamps: Any = _from_buffer("int64_t[]", array("q", [r[3] for r in rows]))
            elif width == 3 and max(map(len, rows)) == 3:
                stamps = _NULL
            elif width in (3, 4, 5):
                return self._push_each(rows)  # 3-, 4- and 5-tuples mixed
            else:
                raise errors.InvalidArgument(
                    "events must be 3-, 4- or 5-tuples (type, user_id, channel_id[, timestamp[, guild_id]])", 1
                )
            k = "\0".join([r[0] for r in rows]).encode()
            u = "\0".join([r[1] for r in rows]).encode()
            c = "\0".join([r[2] for r in rows]).encode()
        except (TypeError, IndexError, UnicodeEncodeError, OverflowError):
            # bytes ids, None or float timestamps, ragged rows, a lone surrogate or
            # a timestamp beyond 64 bits: one call per event (which raises for the
            # bad one).
            return self._push_each(rows)
        out = _new("size_t *")
        rc = _push_columns(p, k, len(k), u, len(u), c, len(c), stamps, n, out)
        if rc == 0:
            return int(out[0])
        if rc == _EH_INVALID_ARGUMENT and any(col.count(b"\0") != n - 1 for col in (k, u, c)):
            # A NUL inside a field shifted the columns (nothing was pushed).
            return self._push_each(rows)
        check(rc)
        return 0  # unreachable: check() raised

    def _push_many_waiting(self, rows: List[Any]) -> int:
        """push_many under "block": one ``eh_processor_push_batch_wait`` per slice of
        the wait (the GIL released meanwhile), signal handlers between slices;
        every event is checked before any is pushed, as under "drop". The rows
        neither batch path reads (None) take the per-event path, as under "drop"."""
        batch = push_rows if push_rows is not None else Intake._push_rows_general
        done = 0
        for wait_ms, give_up in self._wait_slices():
            result = batch(self, rows if done == 0 else rows[done:], wait_ms, give_up)
            if result is None:
                return done + self._push_each(rows[done:])
            rc, accepted = result
            done += accepted
            if rc == 0:
                return done
            if rc == _EH_SHUT_DOWN and self._closed:
                raise self._closed_error()
            if rc != _EH_TIMEOUT:
                check(rc)
        raise AssertionError("unreachable: the last slice gives up")

    def _push_rows_general(self, rows: List[Any], wait_ms: Optional[int], give_up: bool) -> Optional[Tuple[int, int]]:
        """The compiled ``push_rows`` through cffi (same rows, same answer): one
        ``eh_processor_push_batch_wait`` (``eh_processor_push_batch`` when
        ``wait_ms`` is None) over an ``eh_event`` array for a list of 3-, 4- or
        5-tuples (all of one width) of str, an int timestamp and a str, int or
        None guild; ``(status, accepted)``, or None for rows it does not take."""
        first = rows[0]
        width = len(first) if type(first) is tuple else 0
        if width not in (3, 4, 5):
            return None
        n = len(rows)
        events = ffi.new("eh_event[]", n)
        keep = []  # the UTF-8 buffers the events point into
        for i, row in enumerate(rows):
            if type(row) is not tuple or len(row) != width:
                return None
            fields = row[:3]
            if any(type(f) is not str for f in fields):
                return None
            ts = row[3] if width >= 4 else 0
            if type(ts) is not int or not _INT64_MIN <= ts <= _INT64_MAX:
                return None
            guild = row[4] if width == 5 else None
            if type(guild) is int:
                guild = str(guild)
            elif guild is not None and type(guild) is not str:
                return None
            try:
                encoded = [f.encode() for f in fields]
                guild_bytes = guild.encode() if guild else b""
            except UnicodeEncodeError:
                return None
            buffers = [_from_buffer("uint8_t[]", b) for b in encoded]
            keep.append(buffers)
            e = events[i]
            e.kind, e.user_id, e.channel_id = buffers
            e.kind_len, e.user_id_len, e.channel_id_len = map(len, encoded)
            if guild_bytes:
                g = _from_buffer("uint8_t[]", guild_bytes)
                keep.append(g)
                e.guild_id, e.guild_id_len = g, len(guild_bytes)
            e.timestamp = ts
        accepted = _new("size_t *")
        if wait_ms is None:
            rc = _push_batch(self._cdata, events, n, accepted)
        else:
            rc = _push_batch_wait(self._cdata, events, n, accepted, wait_ms, int(give_up))
        return rc, int(accepted[0])

    def _push_each(self, rows: Sequence[Sequence[Any]]) -> int:
        """push_many's per-event path: one push_event per row, stopping at the first
        refused event."""
        accepted = 0
        for row in rows:
            if len(row) not in (3, 4, 5):
                raise errors.InvalidArgument(f"event {row!r} is not a 3-, 4- or 5-tuple", 1)
            pushed = self.push_event(*row) if len(row) < 5 else self.push_event(*row[:4], guild_id=row[4])
            if not pushed:
                break
            accepted += 1
        return accepted

    def _wait_slices(self) -> Iterator[Tuple[int, bool]]:
        """``(wait_ms, give_up)`` for each 0.1 s slice of a push's wait for room,
        ``block_timeout_ms`` in all; the last slice gives up. Endless: the caller
        stops at the first answer other than EH_TIMEOUT."""
        assert self._block_timeout is not None
        deadline = time.monotonic() + self._block_timeout
        while True:
            left = deadline - time.monotonic()
            yield max(0, int(min(left, SLICE_MS / 1000) * 1000)), left <= SLICE_MS / 1000


__all__ = ["Intake", "compiled_push_event", "push_rows"]
