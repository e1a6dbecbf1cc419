"""What a :class:`~engagehub.shared._publisher.Publisher` sends, per kind of writer.

:class:`AnalyticsSource` (a processor's analytics, namespace schema) and
:class:`LeaderboardSource` (a board's changes, board schema); the schemas and
scripts are in :mod:`._schema`.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
import weakref
from operator import neg
from typing import Any, Dict, List, Optional, Tuple

from .. import errors
from . import _schema
from ._publisher import Batch

log = logging.getLogger("engagehub")


def _check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
        raise errors.InvalidArgument(f"namespace must be a non-empty str without braces, got {namespace!r}", 1)
    return namespace


class AnalyticsSource:
    """A processor's analytics. One freeze:

    1. reads the processor's per-minute sketches through the ordinary queries
       (``users_sketch(60, now=m)`` and ``top_channels(cap, 60, now=m)`` give minute
       ``m`` alone) for every minute whose event count moved, and its all-time ones;
    2. compares them with what Redis acknowledged from this publisher (the
       baseline): users go as the whole minute's HyperLogLog in Redis's format when
       it changed (``PFMERGE`` is a register max: resending is harmless), channels as
       count *deltas* (``ZINCRBY``), events as the delta of ``stats().processed``,
       dead-lettered events as the delta of ``stats().dead_lettered``;
    3. becomes one batch; its acknowledgement makes it the baseline.

    With a daily history (``history_days``), the processor's outbox batch also
    carries what the history gathered since the last one (activations and heat
    deltas, drained by the native ``eh_processor_outbox_put`` with the analytics
    blob): its chunks follow the analytics part as ``HISTORY_PUBLISH`` scripts.
    The parts of outbox batch ``n`` are sequence numbers ``n * CHUNKS_PER_BATCH``
    (the analytics) and ``+ 1 + i`` (history chunk ``i``); the outbox batch is
    acknowledged once its last part is applied, so a restart resends the parts
    Redis lacks and Redis skips those it has.

    The dead-lettered baseline is this handle's alone: the native counter starts
    at 0 when a processor opens (also on its journal), so a batch a reopened
    processor resends carries its old delta and leaves the baseline at 0. What a
    killed process dead-lettered after its last publish is not in Redis (a graceful
    close publishes it).

    Nothing accumulates in Python while Redis is away: the events stay counted in
    the native sketches and the next batch's deltas cover them. The bound is the
    processor's window: a minute that leaves the native ring (its slot reused by a
    minute ``window_minutes`` later) before it was published cannot be published
    any more; such minutes are counted (``lost_minutes``) and logged.
    """

    unit = "events"
    script = _schema.ANALYTICS_PUBLISH

    def __init__(
        self,
        processor: Any,
        namespace: Any,
        *,
        window_minutes: int,
        event_time: bool,
        max_members: int,
        history_days: int = 0,
    ) -> None:
        self.namespace = _check_namespace(namespace)
        if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members <= 0:
            raise errors.InvalidArgument(f"publish_max_members must be a positive integer, got {max_members!r}", 1)
        self.label = f"namespace {namespace!r}"
        self.window_minutes = window_minutes
        self.event_time = event_time
        self.max_members = max_members
        self.history_days = history_days
        self._processor = weakref.ref(processor)
        self.lost_minutes = 0
        self._reset()

    def _reset(self) -> None:
        # What Redis holds from us. minute start -> (HLL bytes, {channel: count}).
        self.minutes: Dict[int, Tuple[bytes, Dict[str, int]]] = {}
        self.all_users = b""
        self.all_channels: Dict[str, int] = {}
        self.minute_counts: Dict[int, int] = {}  # events per minute at the last freeze
        self.events = 0  # events acknowledged
        self.dead_lettered = 0  # the native dead-lettered counter Redis holds (this handle's)
        self.processed_seen = -1
        self.dead_lettered_seen = -1

    def reset_after_fork(self) -> None:
        # The native processor starts over empty in the child; so do we.
        self._reset()
        self.lost_minutes = 0

    def is_open(self) -> bool:
        processor = self._processor()
        return processor is not None and not processor.closed

    def pub_key(self, publisher_id: str) -> str:
        return _schema.key(self.namespace, "pub", publisher_id)

    def identity(self, proposed: str) -> str:
        """The publisher's identity, kept by the processor (and its journal), and
        what Redis held from it when the processor was last open: a processor
        reopened on its journal resumes both."""
        from .._native import copied, lib

        processor = self._processor()
        if processor is None:
            return proposed
        raw = proposed.encode()
        identity = copied(lib.eh_processor_publisher_id, processor._h(), raw, len(raw)).decode()
        baseline = copied(lib.eh_processor_outbox_baseline, processor._h())
        if baseline:
            self._adopt_baseline(json.loads(baseline))
        return identity

    def _adopt_baseline(self, doc: Dict[str, Any]) -> None:
        # The HLL bytes are not kept: every minute's users go once more (a union:
        # harmless), the channel counts and the event total are exact.
        self.minutes = {int(m): (b"", dict(ch)) for m, ch in doc["minutes"].items()}
        self.all_users = b""
        self.all_channels = dict(doc["all"])
        self.events = int(doc["events"])

    def pending(self) -> int:
        """Events processed and not yet acknowledged by Redis."""
        processor = self._processor()
        try:
            processed = processor._native_stats().processed if processor is not None else self.events
        except errors.EngageHubError:
            return 0
        return max(0, processed - self.events)

    def applied(self, batch: Batch, reply: Any) -> bool:
        from .._native import _call, lib

        snapshot, last = batch.state
        if batch.script is None:  # the analytics part
            self.minutes, self.all_users, self.all_channels, self.events, dead_lettered = snapshot
            if dead_lettered is not None:
                self.dead_lettered = dead_lettered
        processor = self._processor()
        if last and processor is not None and not processor.closed:
            # The outbox batch's last part: Redis has all of it.
            baseline = json.dumps(_baseline_doc(snapshot), separators=(",", ":")).encode()
            number = batch.seq // CHUNKS_PER_BATCH
            _call(lib.eh_processor_outbox_ack, processor._h(), number, baseline, len(baseline))
        return int(reply) == 1

    def after_cycle(self, publisher: Any) -> bool:
        return False

    def freeze(self, publisher: Any) -> List[Batch]:
        """The batch waiting in the processor's outbox (one a restarted processor
        resends), else the next batch, put in the outbox before it is sent; or none
        if nothing was processed since the last freeze."""
        from .._native import _call, copied, ffi, lib

        processor = self._processor()
        if processor is None:
            return []
        number = ffi.new("uint64_t *")
        waiting = copied(lib.eh_processor_outbox_pending, processor._h(), number)
        if number[0]:
            return self._with_history(processor, publisher, _batch_from_outbox(number[0], waiting))
        batch = self._fresh(processor, publisher)
        if batch is None:
            return []
        blob = _outbox_doc(batch)
        _call(lib.eh_processor_outbox_put, processor._h(), blob, len(blob), number)
        batch.seq = batch.args[0] = number[0] * CHUNKS_PER_BATCH
        return self._with_history(processor, publisher, batch)

    def _with_history(self, processor: Any, publisher: Any, batch: Batch) -> List[Batch]:
        """The analytics part, then the history chunks of its outbox batch; the
        last part acknowledges the outbox batch."""
        from .._native import copied, lib

        number = batch.seq // CHUNKS_PER_BATCH
        snapshot = batch.state
        blob = copied(lib.eh_processor_outbox_history, processor._h(), number) if self.history_days else b""
        chunks = _history_chunks(blob)
        batch.state = (snapshot, not chunks)
        out = [batch]
        head = [publisher.pub_key(), _schema.key(self.namespace, "config")]
        for i, (chunk, guilds, entries) in enumerate(chunks):
            keys = list(head)
            for g in guilds:
                keys += [_schema.key(self.namespace, "hu", g), _schema.key(self.namespace, "hd", g)]
            seq = number * CHUNKS_PER_BATCH + 1 + i
            args: List[Any] = [seq, _schema.PUBLISHER_KEY_TTL_SECS, self.history_days, chunk]
            state = (snapshot, i == len(chunks) - 1)
            out.append(Batch(seq, keys, args, state, entries, _schema.HISTORY_PUBLISH))
        return out

    def _fresh(self, processor: Any, publisher: Any) -> Optional[Batch]:
        """A new batch of what changed since the baseline (its sequence number is
        set when the outbox takes it)."""
        native = processor._native_stats()
        processed, dead_lettered = native.processed, native.dead_lettered
        if processed == 0 or (processed == self.processed_seen and dead_lettered == self.dead_lettered_seen):
            # (With nothing processed an event-time clock still reads the wall clock,
            # which must not become {ns}:clock.) Dead letters come after processing,
            # after the retries: a change of either is worth a batch.
            return None
        cap = self.max_members
        now = processor.now()
        hi = now // 60 * 60
        lo = hi - (self.window_minutes - 1) * 60
        minutes = dict(self.minutes)
        known = [m for m in minutes if m < lo]
        for m in known:
            # Left the window since we last published: read it once more (its native
            # slot is reused only by a minute `window` later), then forget it.
            del minutes[m]
        keys: List[str] = []
        args: List[Any] = []
        ns = self.namespace
        lost = 0
        # Only minutes whose event count moved since the last freeze (one native call
        # for the whole window), and those leaving the window.
        counts = _minute_events(processor, lo, self.window_minutes)
        seen = self.minute_counts
        changed = [lo + 60 * i for i, n in enumerate(counts) if n != seen.get(lo + 60 * i, 0)]
        self.minute_counts = {lo + 60 * i: n for i, n in enumerate(counts) if n}
        for m in sorted(set(changed) | set(known)):
            channels = processor.top_channels(cap, 60, m)
            old_bytes, old_channels = self.minutes.get(m, (b"", {}))
            if not channels:
                if m < lo and old_channels and publisher.behind:
                    # Its native slot now holds a later minute: what arrived in it
                    # after our last publish cannot reach Redis any more.
                    lost += 1
                continue
            deltas = [(c, n - old_channels.get(c, 0)) for c, n in channels if n > old_channels.get(c, 0)]
            hll = processor.users_sketch(60, m).to_redis()
            if not deltas and hll == old_bytes:
                continue  # (a full summary can hide a count change; the users cannot)
            if m >= lo:
                minutes[m] = (hll, {**old_channels, **{c: old_channels.get(c, 0) + d for c, d in deltas}})
            keys += [_schema.key(ns, "uu", m), _schema.key(ns, "ch", m)]
            args.append(b"" if hll == old_bytes else hll)
            args.append(len(deltas))
            for c, d in deltas:
                args += [c, d]
        if lost:
            self.lost_minutes += lost
            log.error(
                "engagehub %s: %d minute(s) left the processor's window before they could be published; "
                "Redis lacks part of them", self.label, lost,
            )
        all_channels = processor.top_channels(cap)
        all_deltas = [(c, n - self.all_channels.get(c, 0)) for c, n in all_channels if n > self.all_channels.get(c, 0)]
        new_all = {**self.all_channels, **{c: n for c, n in all_channels if n > self.all_channels.get(c, 0)}}
        all_users = processor.users_sketch(None).to_redis()
        self.processed_seen = processed
        self.dead_lettered_seen = dead_lettered
        seq = 0  # the outbox's number, once it takes the batch
        head_keys = [
            publisher.pub_key(),
            _schema.key(ns, "events"),
            _schema.key(ns, "uu", "all"),
            _schema.key(ns, "ch", "all"),
            _schema.key(ns, "tmp", publisher.publisher_id),
            _schema.key(ns, "clock"),
            _schema.key(ns, "config"),
            _schema.key(ns, "dead_lettered"),
        ]
        head_args: List[Any] = [
            seq,
            _schema.PUBLISHER_KEY_TTL_SECS,
            self.window_minutes,
            self.max_members,
            processed - self.events,
            now if self.event_time else "",
            max(0, dead_lettered - self.dead_lettered),
            b"" if all_users == self.all_users else all_users,
            len(all_deltas),
        ]
        for c, d in all_deltas:
            head_args += [c, d]
        state = (minutes, all_users, new_all, processed, dead_lettered)
        return Batch(seq, head_keys + keys, head_args + args, state, processed - self.events)


def _baseline_doc(state: Any) -> Dict[str, Any]:
    """What Redis holds from this publisher after a batch, without the HLL bytes
    (and without the dead-lettered count: see :class:`AnalyticsSource`)."""
    minutes, _all_users, all_channels, events = state[:4]
    return {"events": events, "all": all_channels, "minutes": {str(m): ch for m, (_, ch) in minutes.items()}}


def _outbox_doc(batch: Batch) -> bytes:
    """A batch as the processor's outbox keeps it (JSON; bytes in base64)."""
    args = [{"b": base64.b64encode(a).decode()} if isinstance(a, bytes) else a for a in batch.args]
    doc = {"keys": batch.keys, "args": args, "size": batch.size, "state": _baseline_doc(batch.state)}
    return json.dumps(doc, separators=(",", ":")).encode()


#: Head keys of an analytics batch before ``{ns}:dead_lettered`` (older outboxes).
_OLD_HEAD_KEYS = 7


def _batch_from_outbox(number: int, blob: bytes) -> Batch:
    """The batch a (possibly restarted) processor's outbox kept, to resend as is
    (one an older version kept gets the dead-lettered key and a delta of 0). It
    leaves the dead-lettered baseline alone (``None``): see :class:`AnalyticsSource`."""
    doc = json.loads(blob)
    keys = list(doc["keys"])
    args = [base64.b64decode(a["b"]) if isinstance(a, dict) else a for a in doc["args"]]
    if len(keys) % 2 == _OLD_HEAD_KEYS % 2:  # 7 head keys, then pairs: no {ns}:dead_lettered
        events_key = keys[1]  # {ns}:events
        keys.insert(_OLD_HEAD_KEYS, events_key[: -len("events")] + "dead_lettered")
        args.insert(6, 0)
    args[0] = number * CHUNKS_PER_BATCH
    base = doc["state"]
    state = (
        {int(m): (b"", dict(ch)) for m, ch in base["minutes"].items()}, b"", dict(base["all"]), int(base["events"]),
        None,
    )
    return Batch(number * CHUNKS_PER_BATCH, keys, args, state, int(doc["size"]))


def _history_chunks(blob: bytes) -> List[Tuple[bytes, List[str], int]]:
    """The chunks of a processor's history batch (src/community/publish.rs):
    each chunk's bytes, its guilds (the first is ""), its entries."""
    if not blob:
        return []
    out = []
    (n,) = struct.unpack_from("<I", blob, 0)
    pos = 4
    for _ in range(n):
        (length,) = struct.unpack_from("<I", blob, pos)
        chunk = blob[pos + 4 : pos + 4 + length]
        pos += 4 + length
        (ng,) = struct.unpack_from("<H", chunk, 0)
        p = 2
        guilds = []
        for _ in range(ng):
            (size,) = struct.unpack_from("<H", chunk, p)
            guilds.append(chunk[p + 2 : p + 2 + size].decode("utf-8"))
            p += 2 + size
        (nh,) = struct.unpack_from("<H", chunk, p)
        p += 2 + 6 * nh
        (entries,) = struct.unpack_from("<I", chunk, p)
        out.append((chunk, guilds, entries))
    return out


def _minute_events(processor: Any, first_minute_start: int, n: int) -> List[int]:
    """``eh_processor_minute_events``: events per minute of the window ring."""
    from .._native import _call, ffi, lib

    out = ffi.new("uint64_t[]", n)
    _call(lib.eh_processor_minute_events, processor._h(), first_minute_start, n, out)
    return list(out)


# -- the leaderboard ---------------------------------------------------------------------

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_ROW_PACKERS: "dict[int, struct.Struct]" = {}


def _row_packer(m: int) -> "struct.Struct":
    """Packs m rows of (kind u8, value f64, last_update i64), little-endian, no
    padding; cached per m (chunks are LEADERBOARD_CHUNK_ROWS rows but the last)."""
    packer = _ROW_PACKERS.get(m)
    if packer is None:
        if len(_ROW_PACKERS) > 64:
            _ROW_PACKERS.clear()
        packer = _ROW_PACKERS[m] = struct.Struct("<" + "Bdq" * m)
    return packer


def _script_number(value: float) -> str:
    """A double as the shortest decimal that reads back as the same double."""
    return repr(float(value))


#: Sequence numbers per outbox batch of a board: chunk i of batch n is
#: n * CHUNKS_PER_BATCH + i (so at most 65,536 chunks of 5,000 rows per batch).
CHUNKS_PER_BATCH = 1 << 16


class LeaderboardSource:
    """A board's changes: every update's forward-decayed delta is summed per user
    inside the native board (``eh_leaderboard_publish_enable``); a freeze drains the
    sums (``eh_leaderboard_drain``) into batches of at most
    ``LEADERBOARD_CHUNK_ROWS`` rows, each one publish script. A batch reply that
    says a rebase of the shared set is under way makes this writer run rebase steps
    after its batches (at most ``REBASE_SLICE`` seconds of them per cycle)."""

    unit = "changes"
    script = _schema.LEADERBOARD_PUBLISH
    rebase_script = _schema.LEADERBOARD_REBASE_STEP
    rebase_step_count = _schema.REBASE_STEP_COUNT
    REBASE_SLICE = 0.25

    def __init__(
        self,
        board: Any,
        key: Any,
        *,
        decay_factor: float,
        decay_period_secs: float,
        max_users: int,
        last_update: bool,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgument("a Leaderboard with redis= needs key= (a non-empty str)", 1)
        self.key = key
        self.label = f"Leaderboard(key={key!r})"
        self._board = weakref.ref(board)
        self._keys = _schema.board_keys(key)
        self._rebase_keys = _schema.board_rebase_keys(key)
        self._decay = _script_number(decay_factor)
        self._period = _script_number(decay_period_secs)
        self._max_users = int(max_users)
        self._last_flag = "1" if last_update else "0"
        self.rows = 0
        self.trimmed = 0
        self.remote_rebases = 0
        self._rebasing = False
        self._dropped_seen = 0

    def reset_after_fork(self) -> None:
        # The native fork handler dropped the inherited changes in the child.
        self.rows = self.trimmed = self.remote_rebases = 0
        self._rebasing = False

    def is_open(self) -> bool:
        board = self._board()
        return board is not None and not board.closed

    def pub_key(self, publisher_id: str) -> str:
        return "{" + self.key + "}:pub:" + publisher_id

    def identity(self, proposed: str) -> str:
        """The publisher's identity, kept by the board (and its journal)."""
        from .._native import copied, lib

        board = self._board()
        if board is None:
            return proposed
        raw = proposed.encode()
        return copied(lib.eh_leaderboard_publisher_id, board._h(), raw, len(raw)).decode()

    def pending(self) -> int:
        """Changes not yet drained."""
        board = self._board()
        try:
            return board._native_stats().pending if board is not None and not board.closed else 0
        except errors.EngageHubError:
            return 0

    def _next(self) -> Optional[Tuple[int, int, list, list, list, list]]:
        """The oldest batch of the board's outbox (draining the pending changes
        into a new one if none waits): (number, landmark, kinds, ids, negated
        values, last updates), or None."""
        from .._native import _call, ffi, lib

        board = self._board()
        if board is None:
            return None
        batch = ffi.new("eh_pending_batch *")
        number = ffi.new("uint64_t *")
        _call(lib.eh_leaderboard_outbox_next, board._h(), batch, number)
        n = batch.len
        try:
            if not n:
                return None
            block = ffi.buffer(batch.rows, batch.size)[:]
            landmark = batch.landmark
        finally:
            lib.eh_pending_batch_free(batch)
        # n rows of 5 native 8-byte words (kind, value, last_update, id_offset,
        # id_len), read column by column through typed views (no per-row Python).
        row_size = ffi.sizeof("eh_pending_row")
        rows = memoryview(block)[: n * row_size]
        words = rows.cast("Q")
        ids = block[n * row_size : -1].decode("utf-8").split("\0")
        if len(ids) != n:  # an id contains a NUL itself: use the offsets
            base = n * row_size
            offsets, sizes = words[3::5].tolist(), words[4::5].tolist()
            ids = [block[base + o : base + o + s].decode("utf-8") for o, s in zip(offsets, sizes)]
        values = list(map(neg, rows.cast("d")[1::5].tolist()))
        return number[0], landmark, words[0::5].tolist(), ids, values, rows.cast("q")[2::5].tolist()

    def freeze(self, publisher: Any) -> List[Batch]:
        """The board's oldest unacknowledged batch (the same rows, in the same
        chunks, under the same numbers, however often it is resent, also by a
        board reopened on its journal), in chunks of at most
        ``LEADERBOARD_CHUNK_ROWS`` rows: chunk ``i`` of batch ``n`` is sequence
        number ``n * CHUNKS_PER_BATCH + i``."""
        taken = self._next()
        board = self._board()
        if board is not None and not board.closed:
            dropped = board._native_stats().pending_dropped
            if dropped > self._dropped_seen:
                log.warning(
                    "%s: %d changes were not recorded for Redis (max_pending reached; %d in all): "
                    "the shared board misses them", self.label, dropped - self._dropped_seen, dropped,
                )
                self._dropped_seen = dropped
        if taken is None:
            return []
        number, landmark, kinds, ids, values, lasts = taken
        z, meta, last = self._keys
        keys = [z, meta, last, publisher.pub_key(), self._rebase_keys[0]]
        batches = []
        starts = range(0, len(ids), _schema.LEADERBOARD_CHUNK_ROWS)
        for i, start in enumerate(starts):
            end = start + _schema.LEADERBOARD_CHUNK_ROWS
            chunk_ids = ids[start:end]
            m = len(chunk_ids)
            numbers: List[Any] = [None] * (3 * m)
            numbers[0::3] = kinds[start:end]
            numbers[1::3] = values[start:end]
            numbers[2::3] = lasts[start:end]
            seq = number * CHUNKS_PER_BATCH + i
            args = [seq, landmark, self._decay, self._period, self._max_users, _schema.PUBLISHER_KEY_TTL_SECS,
                    _json_dumps(chunk_ids).encode("utf-8"), _row_packer(m).pack(*numbers), self._last_flag]
            last_chunk = i == len(starts) - 1
            batches.append(Batch(seq, keys, args, number if last_chunk else None, m))
        return batches

    def applied(self, batch: Batch, reply: Any) -> bool:
        from .._native import _call, lib

        applied, trimmed, rebasing = (int(x) for x in reply)
        if batch.state is not None:  # the batch's last chunk: the whole batch is in
            board = self._board()
            if board is not None and not board.closed:
                _call(lib.eh_leaderboard_outbox_ack, board._h(), batch.state)
        if applied:
            self.rows += batch.size
        self.trimmed += trimmed
        self._rebasing = bool(rebasing)
        return bool(applied)

    def after_cycle(self, publisher: Any) -> bool:
        """Runs rebase steps (at least one) for up to ``REBASE_SLICE`` s; True if
        more are left."""
        if not self._rebasing:
            return False
        z, meta, _ = self._keys
        znew, zold = self._rebase_keys
        deadline = time.monotonic() + self.REBASE_SLICE
        publisher.client.unlink(zold)  # (normally absent: a no-op)
        while True:
            finished, _copied, swapped = (
                int(x)
                for x in publisher.run_script(self.rebase_script, [z, meta, znew, zold], [self.rebase_step_count])
            )
            if finished:
                self._rebasing = False
                if swapped:
                    self.remote_rebases += 1
                    publisher.client.unlink(zold)  # O(1) here; Redis frees it in the background
                return False
            if time.monotonic() >= deadline:
                return True


# -- guild leaderboards --------------------------------------------------------------------


class GroupSource:
    """The boards of a :class:`~engagehub.GuildLeaderboards` (``redis=``,
    ``key_prefix=``), all through one publisher: guild ``g``'s board is the shared
    board ``<key_prefix>:<g>``, with :class:`LeaderboardSource`'s key schema and
    script, so ``SharedLeaderboard(client, f"{key_prefix}:{g}")`` reads it.

    One publisher identity for the whole group; each board has its own sequence key
    ``{<key_prefix>:<g>}:pub:<id>`` (in its own hash slot). A freeze takes the
    batches of the guilds that changed since their last batch (the native dirty
    list, ``eh_board_group_outbox_next``: never a scan of every board), each in
    chunks of at most ``LEADERBOARD_CHUNK_ROWS`` rows numbered as
    :class:`LeaderboardSource`'s (chunk ``i`` of batch ``n`` is sequence number
    ``n * CHUNKS_PER_BATCH + i``). Batch numbers come from one counter of the group,
    so a guild's sequence numbers keep growing also after it is dropped and made
    again. A batch the publisher has not seen acknowledged is handed out again,
    unchanged. A guild whose batch reply says a rebase of its shared set is under
    way gets rebase steps after the batches (at most ``REBASE_SLICE`` seconds of
    them per cycle, over every such guild)."""

    unit = "changes"
    script = _schema.LEADERBOARD_PUBLISH
    rebase_script = _schema.LEADERBOARD_REBASE_STEP
    rebase_step_count = _schema.REBASE_STEP_COUNT
    REBASE_SLICE = 0.25

    def __init__(
        self,
        group: Any,
        key_prefix: Any,
        *,
        decay_factor: float,
        decay_period_secs: float,
        max_users: int,
        last_update: bool,
    ) -> None:
        if not isinstance(key_prefix, str) or not key_prefix:
            raise errors.InvalidArgument("GuildLeaderboards with redis= needs key_prefix= (a non-empty str)", 1)
        self.key_prefix = key_prefix
        self.label = f"GuildLeaderboards(key_prefix={key_prefix!r})"
        self._group = weakref.ref(group)
        self._decay = _script_number(decay_factor)
        self._period = _script_number(decay_period_secs)
        self._max_users = int(max_users)
        self._last_flag = "1" if last_update else "0"
        self.rows = 0
        self.trimmed = 0
        self.remote_rebases = 0
        #: Guilds whose shared set is being rebased (an ordered set).
        self._rebasing: Dict[str, None] = {}
        #: Guilds with a sequence key of this publisher (deleted at a clean close).
        self._sequenced: "set[str]" = set()
        #: Rows of the batches taken from the boards and not yet acknowledged.
        self._taken: Dict[Tuple[str, int], int] = {}
        self._dropped_seen = 0

    def board_key(self, guild: str) -> str:
        """The shared board key of ``guild``."""
        return f"{self.key_prefix}:{guild}"

    def reset_after_fork(self) -> None:
        # The native fork handler dropped the inherited changes and batches.
        self.rows = self.trimmed = self.remote_rebases = 0
        self._rebasing = {}
        self._sequenced = set()
        self._taken = {}

    def is_open(self) -> bool:
        group = self._group()
        return group is not None and not group.closed

    def pub_key(self, publisher_id: str, guild: Optional[str] = None) -> str:
        """Guild ``guild``'s sequence key of this publisher; without a guild, the
        pattern of all of them (for messages)."""
        return "{" + self.board_key("*" if guild is None else guild) + "}:pub:" + publisher_id

    def own_keys(self, publisher_id: str) -> List[str]:
        """The sequence keys this publisher wrote: a clean close deletes them."""
        return [self.pub_key(publisher_id, guild) for guild in sorted(self._sequenced)]

    def identity(self, proposed: str) -> str:
        """A new identity per process (the group has no journal)."""
        return proposed

    def pending(self) -> int:
        """Changes not yet in Redis: not yet taken from the boards, or taken and
        not yet acknowledged."""
        group = self._group()
        taken = sum(self._taken.values())
        try:
            return taken + (group._native_stats().pending if group is not None and not group.closed else 0)
        except errors.EngageHubError:
            return taken

    def _take(self) -> List[Tuple[str, int, int, list, list, list, list]]:
        """Every batch handed out but not acknowledged, then the batches of the
        guilds that changed: [(guild, number, landmark, kinds, ids, negated values,
        last updates)]."""
        from .._native import _call, ffi, lib

        group = self._group()
        if group is None:
            return []
        out = ffi.new("eh_group_outbox *")
        _call(lib.eh_board_group_outbox_next, group._h(), 0, out)
        n, m = out.len, out.rows_len
        try:
            if not n:
                return []
            batches = ffi.buffer(out.batches, out.batches_size)[:]
            rows = ffi.buffer(out.rows, out.rows_size)[:] if m else b""
        finally:
            lib.eh_group_outbox_free(out)
        batch_size = ffi.sizeof("eh_group_batch")
        heads = memoryview(batches)[: n * batch_size]
        words = heads.cast("Q").tolist()  # number, landmark, first_row, row_count, offset, length
        landmarks = heads.cast("q")[1::6].tolist()
        guilds = batches[n * batch_size : -1].decode("utf-8").split("\0")
        if len(guilds) != n:  # a guild id contains a NUL itself: use the offsets
            base = n * batch_size
            guilds = [batches[base + o : base + o + s].decode("utf-8") for o, s in zip(words[4::6], words[5::6])]
        row_size = ffi.sizeof("eh_pending_row")
        cells = memoryview(rows)[: m * row_size]
        row_words = cells.cast("Q")
        ids = rows[m * row_size : -1].decode("utf-8").split("\0") if m else []
        if len(ids) != m:
            base = m * row_size
            ids = [rows[base + o : base + o + s].decode("utf-8")
                   for o, s in zip(row_words[3::5].tolist(), row_words[4::5].tolist())]
        kinds = row_words[0::5].tolist()
        values = list(map(neg, cells.cast("d")[1::5].tolist()))
        lasts = cells.cast("q")[2::5].tolist()
        taken = []
        for b in range(n):
            first, count = words[6 * b + 2], words[6 * b + 3]
            end = first + count
            taken.append((guilds[b], words[6 * b], landmarks[b], kinds[first:end], ids[first:end],
                          values[first:end], lasts[first:end]))
        return taken

    def freeze(self, publisher: Any) -> List[Batch]:
        """The batches of :meth:`_take`, each guild's in chunks (see the class)."""
        taken = self._take()
        if not taken:
            return []
        group = self._group()
        if group is not None and not group.closed:
            dropped = group._native_stats().pending_dropped
            if dropped > self._dropped_seen:
                log.warning(
                    "%s: %d changes were not recorded for Redis (max_pending reached on a guild's board; %d in "
                    "all): the shared boards miss them", self.label, dropped - self._dropped_seen, dropped,
                )
                self._dropped_seen = dropped
        batches = []
        pid = publisher.publisher_id
        chunk_rows = _schema.LEADERBOARD_CHUNK_ROWS
        for guild, number, landmark, kinds, ids, values, lasts in taken:
            self._taken[guild, number] = len(ids)
            board = self.board_key(guild)
            z, meta, last = _schema.board_keys(board)
            keys = [z, meta, last, self.pub_key(pid, guild), _schema.board_rebase_keys(board)[0]]
            starts = range(0, len(ids), chunk_rows)
            for i, start in enumerate(starts):
                end = start + chunk_rows
                chunk_ids = ids[start:end]
                m = len(chunk_ids)
                numbers: List[Any] = [None] * (3 * m)
                numbers[0::3] = kinds[start:end]
                numbers[1::3] = values[start:end]
                numbers[2::3] = lasts[start:end]
                seq = number * CHUNKS_PER_BATCH + i
                args = [seq, landmark, self._decay, self._period, self._max_users,
                        _schema.PUBLISHER_KEY_TTL_SECS, _json_dumps(chunk_ids).encode("utf-8"),
                        _row_packer(m).pack(*numbers), self._last_flag]
                last_chunk = i == len(starts) - 1
                batches.append(Batch(seq, keys, args, (guild, number if last_chunk else None), m))
        return batches

    def applied(self, batch: Batch, reply: Any) -> bool:
        from .._native import _call, encode, lib

        applied, trimmed, rebasing = (int(x) for x in reply)
        guild, number = batch.state
        # Applied now or before (a duplicate): this publisher's sequence key exists.
        self._sequenced.add(guild)
        if number is not None:  # the batch's last chunk: the whole batch is in
            self._taken.pop((guild, number), None)
            group = self._group()
            if group is not None and not group.closed:
                raw = encode(guild, "guild_id")
                _call(lib.eh_board_group_outbox_ack, group._h(), raw, len(raw), number)
        if applied:
            self.rows += batch.size
        self.trimmed += trimmed
        if rebasing:
            self._rebasing[guild] = None
        else:
            self._rebasing.pop(guild, None)
        return bool(applied)

    def after_cycle(self, publisher: Any) -> bool:
        """Rebase steps for the guilds being rebased (at least one step), for up to
        ``REBASE_SLICE`` s in all; True if more are left."""
        if not self._rebasing:
            return False
        deadline = time.monotonic() + self.REBASE_SLICE
        for guild in list(self._rebasing):
            board = self.board_key(guild)
            z, meta, _ = _schema.board_keys(board)
            znew, zold = _schema.board_rebase_keys(board)
            publisher.client.unlink(zold)  # (normally absent: a no-op)
            while True:
                finished, _copied, swapped = (
                    int(x)
                    for x in publisher.run_script(self.rebase_script, [z, meta, znew, zold], [self.rebase_step_count])
                )
                if finished:
                    del self._rebasing[guild]
                    if swapped:
                        self.remote_rebases += 1
                        publisher.client.unlink(zold)
                    break
                if time.monotonic() >= deadline:
                    return True
            if time.monotonic() >= deadline:
                return bool(self._rebasing)
        return False
