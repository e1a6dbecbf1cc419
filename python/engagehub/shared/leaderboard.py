"""A leaderboard shared through Redis: the writer's publisher and any process's reader.

Writers: ``Leaderboard(..., redis=client, key="lb")``. Every update's forward-decayed
delta is summed per user inside the native board (the update hot path is
unchanged); a background thread drains the sums every ``publish_interval_ms`` and
applies them to a Redis sorted set with one Lua script per batch, exactly once.
Readers: :class:`SharedLeaderboard` (``get_top_users``, ``get_user_rank``, ``top``,
``rank``, ``around``, ``size``) with :class:`~engagehub.Leaderboard`'s names,
shapes and tie order, from any process.

Key schema (a stable contract, also in the README; ``K`` is the key given; the
braces make ``K`` a Redis Cluster hash tag, so every key below is in one slot):

======================  =====  ===================================================
key                     type   value
======================  =====  ===================================================
``{K}:z``               zset   member = user id, score = **−value**, where
                               ``value = Σ points·exp(λ·(ts − landmark))`` and
                               ``λ = −ln(decay_factor) / decay_period_secs``.
                               Negated so that ``ZRANGE`` (ascending score, then
                               member bytes ascending) lists the best first with
                               ties by id ascending. The order never changes with
                               time.
``{K}:meta``            hash   ``version`` (1), ``landmark`` (integer seconds),
                               ``decay_factor``, ``decay_period_secs`` (decimal
                               doubles), ``trimmed`` (users removed by
                               ``max_users``), ``rebases``
``{K}:last``            zset   member = user id, score = newest update timestamp
                               (integer seconds; raised with ``ZADD GT``)
``{K}:pub:<id>``        str    last batch sequence number applied for publisher
                               ``<id>`` (expires 7 days after its last batch)
======================  =====  ===================================================

A user's score at time ``now`` is ``−zscore · exp(−λ·(now − landmark))``. To add
``points`` earned at ``ts``: ``ZINCRBY {K}:z −points·exp(λ·(ts − landmark)) id``
(increments from any number of writers commute). A rebase to landmark ``L2``
multiplies every score by ``exp(−λ·(L2 − landmark))`` and sets ``landmark = L2``,
atomically (inside one script).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import struct
import threading
import time
import uuid
import weakref
from collections import deque
from operator import neg
from typing import Any, Deque, List, Optional, Tuple

from .. import errors
from .._native import _call, ffi, lib
from ..leaderboard import RankedUser, _count
from ._publisher import Backoff, check_eviction_policy, forget_after_fork, reset_after_fork

log = logging.getLogger("engagehub.shared")

#: Rows per script: bounds the time one script holds Redis (~10 ms).
CHUNK_ROWS = 5000
#: A batch whose landmark is this many decay-exponent units ahead of the shared
#: landmark rebases the shared set to it (values stay below ~e^320 × points).
REBASE_EXPONENT = 64.0
#: Seconds a publisher's sequence key lives after its last batch.
PUBLISHER_KEY_TTL_SECS = 7 * 86400
_ROW_SIZE = ffi.sizeof("eh_pending_row")
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_ROW_PACKERS: "dict[int, struct.Struct]" = {}


def _row_packer(m: int) -> "struct.Struct":
    """Packs m rows of (kind u8, value f64, last_update i64), little-endian, no
    padding; cached per m (chunks are CHUNK_ROWS rows but the last)."""
    packer = _ROW_PACKERS.get(m)
    if packer is None:
        if len(_ROW_PACKERS) > 64:
            _ROW_PACKERS.clear()
        packer = _ROW_PACKERS[m] = struct.Struct("<" + "Bdq" * m)
    return packer


def keys_of(key: str) -> Tuple[str, str, str]:
    """``({K}:z, {K}:meta, {K}:last)``."""
    tag = "{" + key + "}"
    return tag + ":z", tag + ":meta", tag + ":last"


# One batch, applied atomically and at most once per (publisher, sequence).
# KEYS: 1 {K}:z, 2 {K}:meta, 3 {K}:last, 4 {K}:pub:<id>
# ARGV: 1 seq, 2 batch landmark, 3 decay_factor, 4 decay_period_secs, 5 max_users
#       (0 = unbounded), 6 pub key ttl, 7 the rows' user ids as one JSON array,
#       8 the rows' numbers packed little-endian, 17 bytes per row: kind (u8: 0 add,
#       1 set, 2 remove), −value (f64, relative to the batch landmark), last_update
#       (i64), 9 '0' to leave {K}:last alone (the writer's publish_last_update=False;
#       removes and trims still delete from it). (Two arguments instead of 4 per row: the client builds them in C and
#       the script reads them in C; per-row arguments, or decimal strings, cost the
#       client more than the script. Redis's Lua hands numbers to commands with 17
#       significant digits: the doubles arrive exactly.)
# Returns {applied (0 = a duplicate), users trimmed, rebased (0/1)}.
PUBLISH_LUA = r"""
local z, meta, last, pub = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seq = tonumber(ARGV[1])
local done = redis.call('GET', pub)
if done and tonumber(done) >= seq then return {0, 0, 0} end
local blm = tonumber(ARGV[2])
local m = redis.call('HMGET', meta, 'landmark', 'decay_factor', 'decay_period_secs')
local landmark
if not m[1] then
  redis.call('HSET', meta, 'version', '1', 'landmark', ARGV[2], 'decay_factor', ARGV[3],
             'decay_period_secs', ARGV[4])
  landmark = blm
else
  if tonumber(m[2]) ~= tonumber(ARGV[3]) or tonumber(m[3]) ~= tonumber(ARGV[4]) then
    return redis.error_reply('ENGAGEHUB ' .. meta .. ' has decay ' .. m[2] .. ' per ' .. m[3] ..
                             ' s; this writer uses ' .. ARGV[3] .. ' per ' .. ARGV[4] .. ' s')
  end
  landmark = tonumber(m[1])
end
local lambda = -math.log(tonumber(ARGV[3])) / tonumber(ARGV[4])
local rebased = 0
if lambda > 0 and lambda * (blm - landmark) > REBASE_EXPONENT then
  local f = math.exp(-lambda * (blm - landmark))
  local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    redis.call('ZADD', z, string.format('%.17g', tonumber(all[i + 1]) * f + 0.0), all[i])
  end
  redis.call('HSET', meta, 'landmark', ARGV[2])
  redis.call('HINCRBY', meta, 'rebases', 1)
  landmark = blm
  rebased = 1
end
local scale = 1.0
if blm ~= landmark then scale = math.exp(lambda * (blm - landmark)) end
local ids = cjson.decode(ARGV[7])
local blob, n = ARGV[8], #ids
local keep_last = ARGV[9] ~= '0'
local kinds, vals, ts = {}, {}, {}
local pos = 1
for i = 1, n do
  kinds[i], vals[i], ts[i], pos = struct.unpack('<Bdi8', blob, pos)
  if scale ~= 1.0 then vals[i] = vals[i] * scale end
end
-- One multi-member command per 3,000 members (Lua's C stack holds ~8,000 values).
local function bulk(cmd, key, flag, flat)
  for s = 1, #flat, 6000 do
    local e = math.min(#flat, s + 5999)
    if flag then redis.call(cmd, key, flag, unpack(flat, s, e)) else redis.call(cmd, key, unpack(flat, s, e)) end
  end
end
local i = 1
while i <= n do
  local kind, id = kinds[i], ids[i]
  if kind == 2 then
    redis.call('ZREM', z, id)
    redis.call('ZREM', last, id)
    i = i + 1
  elseif kind == 1 then
    redis.call('ZADD', z, vals[i], id)
    if keep_last then redis.call('ZADD', last, 'GT', ts[i], id) end
    i = i + 1
  else
    -- A run of increments (rows i..j): what ZINCRBY per row would do, as one
    -- ZMSCORE per 3,000 users, the sums in Lua (the same double additions, in
    -- the same order), then one multi-member ZADD: the per-command cost dominated.
    local j = i
    while j < n and kinds[j + 1] == 0 do j = j + 1 end
    local at, sums, lasts = {}, {}, {}
    for s = i, j, 3000 do
      local e = math.min(j, s + 2999)
      local old = redis.call('ZMSCORE', z, unpack(ids, s, e))
      for r = s, e do
        local u, v = ids[r], vals[r]
        local k = at[u]
        if k then
          sums[k] = sums[k] + v  -- the user's second row in the run
        else
          local o = old[r - s + 1]
          if o then v = tonumber(o) + v end
          sums[#sums + 1] = v
          sums[#sums + 1] = u
          at[u] = #sums - 1
        end
        if keep_last then
          lasts[#lasts + 1] = ts[r]
          lasts[#lasts + 1] = u
        end
      end
    end
    for k = 1, #sums, 2 do
      if sums[k] ~= sums[k] then
        return redis.error_reply('ENGAGEHUB ' .. z .. ': the score of ' .. sums[k + 1] .. ' would be NaN')
      end
    end
    bulk('ZADD', z, nil, sums)
    bulk('ZADD', last, 'GT', lasts)
    i = j + 1
  end
end
local trimmed = 0
local max = tonumber(ARGV[5])
if max > 0 then
  local n = redis.call('ZCARD', z)
  if n > max then
    local gone = redis.call('ZRANGE', z, max, -1)
    redis.call('ZREMRANGEBYRANK', z, max, -1)
    for i = 1, #gone, 4000 do
      redis.call('ZREM', last, unpack(gone, i, math.min(i + 3999, #gone)))
    end
    trimmed = #gone
    redis.call('HINCRBY', meta, 'trimmed', trimmed)
  end
end
redis.call('SET', pub, ARGV[1], 'EX', ARGV[6])
return {1, trimmed, rebased}
""".replace("REBASE_EXPONENT", repr(REBASE_EXPONENT))

# Reads in one round trip. KEYS: {K}:z, {K}:meta, {K}:last. ARGV: mode, then
#   'top': start, stop (ZRANGE indexes)      'rank': user id
#   'around': user id, radius
# Returns {meta {landmark, decay, period}, start (0-based), flat id/score list,
# last updates}; for 'rank'/'around' of an absent user the list is empty, start -1.
READ_LUA = r"""
local z, meta, last = KEYS[1], KEYS[2], KEYS[3]
local m = redis.call('HMGET', meta, 'landmark', 'decay_factor', 'decay_period_secs')
local start, stop
if ARGV[1] == 'top' then
  start, stop = tonumber(ARGV[2]), tonumber(ARGV[3])
else
  local r = redis.call('ZRANK', z, ARGV[2])
  if not r then return {m, -1, {}, {}} end
  if ARGV[1] == 'rank' then
    start, stop = r, r
  else
    local radius = tonumber(ARGV[3])
    start = math.max(0, r - radius)
    stop = r + radius
  end
end
local rows = redis.call('ZRANGE', z, start, stop, 'WITHSCORES')
local lasts = {}
if #rows > 0 then
  local ids = {}
  for i = 1, #rows, 2 do ids[#ids + 1] = rows[i] end
  lasts = redis.call('ZMSCORE', last, unpack(ids))
end
return {m, start, rows, lasts}
"""


def _script_args(value: float) -> str:
    """A double as the shortest decimal that reads back as the same double."""
    return repr(float(value))


class _Chunk:
    __slots__ = ("seq", "landmark", "rows", "args")

    def __init__(self, seq: int, landmark: int, rows: int, args: List[bytes]) -> None:
        self.seq, self.landmark, self.rows, self.args = seq, landmark, rows, args


_publishers: "weakref.WeakSet[Publisher]" = weakref.WeakSet()


def _at_exit() -> None:
    for publisher in list(_publishers):
        publisher.close(timeout=publisher.close_timeout)


atexit.register(_at_exit)


class Publisher:
    """Publishes one native board's pending changes (see the module docs).

    Thread safety: :meth:`publish` may be called from any thread; steps are
    serialised by a lock. The background thread never touches the update path.
    """

    def __init__(
        self,
        board: Any,
        client: Any,
        key: str,
        *,
        decay_factor: float,
        decay_period_secs: float,
        max_users: int,
        interval_ms: int,
        close_timeout: float,
        last_update: bool = True,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgument("key must be a non-empty str", 1)
        if not interval_ms > 0:
            raise errors.InvalidArgument(f"publish_interval_ms must be > 0, got {interval_ms}", 1)
        self._board = weakref.ref(board)
        self._client = client
        self.key = key
        self._keys = keys_of(key)
        self._decay = _script_args(decay_factor)
        self._period = _script_args(decay_period_secs)
        self._max_users = int(max_users)
        self._last_flag = "1" if last_update else "0"
        self._interval = interval_ms / 1000.0
        self.close_timeout = close_timeout
        self._script = client.register_script(PUBLISH_LUA)
        self._closed = False
        self._dropped_seen = 0
        self._new_identity()
        self._check_at_connect()
        _publishers.add(self)
        reset_after_fork(self)
        # Never silent: a board collected without close() says what it lost.
        weakref.finalize(board, _collected_unclosed, weakref.ref(self), key)
        self._start_thread()

    # -- identity, fork, thread ---------------------------------------------------

    def _new_identity(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.publisher_id = uuid.uuid4().hex
        self._pub_key = "{" + self.key + "}:pub:" + self.publisher_id
        self._seq = 0
        self._chunks: Deque[_Chunk] = deque()
        self._backoff = Backoff()
        self._last_error_log = 0.0
        self.batches = 0
        self.rows = 0
        self.duplicates = 0
        self.failures = 0
        self.trimmed = 0
        self.remote_rebases = 0

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent publishes what was pending at the fork;
        the child starts empty, under its own publisher id, with its own thread."""
        self._new_identity()
        board = self._board()
        if board is None or board.closed or self._closed:
            return
        try:
            self._drain()  # discarded
        except errors.EngageHubError:
            pass
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=_run, args=(weakref.ref(self),), name=f"engagehub-publish-{self.key}", daemon=True
        )
        self._thread.start()

    def _check_at_connect(self) -> None:
        check_eviction_policy(self._client, f"Leaderboard(key={self.key!r})")
        z, meta, _ = self._keys
        try:
            stored = self._client.hmget(meta, "decay_factor", "decay_period_secs")
        except Exception as e:  # Redis down: checked by the script at each batch
            log.warning("Leaderboard(key=%r): Redis unreachable at start (%s); publishing will retry", self.key, e)
            return
        if stored[0] is not None and (
            float(stored[0]) != float(self._decay) or float(stored[1]) != float(self._period)
        ):
            raise errors.InvalidArgument(
                f"{meta} holds decay_factor {stored[0]!r} per {stored[1]!r} s, but this board "
                f"uses {self._decay} per {self._period} s: the values would not add up",
                1,
            )

    # -- publishing -----------------------------------------------------------------

    def _drain(self) -> Optional[Tuple[int, list, list, list, list]]:
        """(landmark, kinds, ids, negated values, last updates) or None."""
        board = self._board()
        if board is None:
            return None
        batch = ffi.new("eh_pending_batch *")
        _call(lib.eh_leaderboard_drain, board._h(), batch)
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
        rows = memoryview(block)[: n * _ROW_SIZE]
        words = rows.cast("Q")
        ids = block[n * _ROW_SIZE : -1].decode("utf-8").split("\0")
        if len(ids) != n:  # an id contains a NUL itself: use the offsets
            base = n * _ROW_SIZE
            offsets, sizes = words[3::5].tolist(), words[4::5].tolist()
            ids = [block[base + o : base + o + s].decode("utf-8") for o, s in zip(offsets, sizes)]
        values = list(map(neg, rows.cast("d")[1::5].tolist()))
        return landmark, words[0::5].tolist(), ids, values, rows.cast("q")[2::5].tolist()

    def _prepare(self) -> None:
        drained = self._drain()
        board = self._board()
        if board is not None and not board.closed:
            dropped = board._native_stats().pending_dropped
            if dropped > self._dropped_seen:
                log.warning(
                    "Leaderboard(key=%r): %d changes were not recorded for Redis (max_pending reached; "
                    "%d in all): the shared board misses them",
                    self.key,
                    dropped - self._dropped_seen,
                    dropped,
                )
                self._dropped_seen = dropped
        if drained is None:
            return
        landmark, kinds, ids, values, lasts = drained
        for start in range(0, len(ids), CHUNK_ROWS):
            end = start + CHUNK_ROWS
            chunk_ids = ids[start:end]
            m = len(chunk_ids)
            numbers: List[Any] = [None] * (3 * m)
            numbers[0::3] = kinds[start:end]
            numbers[1::3] = values[start:end]
            numbers[2::3] = lasts[start:end]
            self._seq += 1
            packed = _row_packer(m).pack(*numbers)
            self._chunks.append(_Chunk(self._seq, landmark, m, [_json_dumps(chunk_ids).encode("utf-8"), packed]))

    def _send(self, chunk: _Chunk) -> None:
        z, meta, last = self._keys
        args = [chunk.seq, chunk.landmark, self._decay, self._period, self._max_users, PUBLISHER_KEY_TTL_SECS,
                *chunk.args, self._last_flag]
        applied, trimmed, rebased = self._script(keys=[z, meta, last, self._pub_key], args=args)
        if applied:
            self.batches += 1
            self.rows += chunk.rows
        else:
            self.duplicates += 1
        self.trimmed += int(trimmed)
        self.remote_rebases += int(rebased)

    def _step(self) -> bool:
        """Drains (if nothing is waiting) and sends every waiting chunk in order.
        True when all were acknowledged."""
        if not self._chunks:
            self._prepare()
        return self._send_waiting()

    def _send_waiting(self) -> bool:
        """Sends every waiting chunk in order; True when all were acknowledged."""
        while self._chunks:
            chunk = self._chunks[0]
            try:
                self._send(chunk)
            except Exception as e:  # ConnectionError, TimeoutError, BUSY, LOADING, ...
                self.failures += 1
                now = time.monotonic()
                if now - self._last_error_log >= 10.0:
                    self._last_error_log = now
                    log.warning(
                        "Leaderboard(key=%r): publishing to Redis failed (%s: %s); %d batches wait, retrying",
                        self.key, type(e).__name__, e, len(self._chunks),
                    )
                self._backoff.failed()
                return False
            self._chunks.popleft()
        self._backoff.succeeded()
        return True

    def publish(self, timeout: Optional[float] = None) -> bool:
        """Publishes everything pending now; retries with backoff until done or
        ``timeout`` seconds (None = no limit). True when all was applied."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # A barrier for the changes made before the call: one drain (after the
        # chunks already waiting), not a chase after updates that keep coming.
        drained = False
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining < 0:
                return False
            if not self._lock.acquire(timeout=-1 if remaining is None else remaining):
                return False
            try:
                board = self._board()
                if board is None or board.closed:
                    return not self._chunks
                if not drained and not self._chunks:
                    self._prepare()
                    drained = True
                if self._send_waiting():
                    if drained:
                        return True
                    continue
                wait = self._backoff.delay
            finally:
                self._lock.release()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            threading.Event().wait(wait)

    def pending_batches(self) -> int:
        return len(self._chunks)

    def close(self, timeout: Optional[float]) -> bool:
        """Stops the thread and publishes everything (up to ``timeout`` s); logs
        what could not be published. Idempotent."""
        if self._closed:
            return True
        self._stop = True
        self._wake.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        board = self._board()
        done = True
        if board is not None and not board.closed:
            done = self.publish(timeout)
            if not done:
                log.error(
                    "Leaderboard(key=%r): closed with %d batches and %d changes not published to Redis",
                    self.key, len(self._chunks), board._native_stats().pending,
                )
        self._closed = True
        _publishers.discard(self)
        forget_after_fork(self)
        return done


def _collected_unclosed(ref: "weakref.ref[Publisher]", key: str) -> None:
    publisher = ref()
    if publisher is not None and not publisher._closed:
        publisher._stop = True
        publisher._wake.set()
        log.error(
            "Leaderboard(key=%r) was garbage-collected without close(): its changes since "
            "the last publish (%d batches waiting) were not published",
            key, len(publisher._chunks),
        )


def _run(ref: "weakref.ref[Publisher]") -> None:
    """The publishing thread: one step per interval, backoff after a failure.
    Holds the publisher only while working, so a forgotten board can be collected."""
    while True:
        publisher = ref()
        if publisher is None or publisher._stop:
            return
        wake = publisher._wake
        delay = publisher._backoff.delay or publisher._interval
        del publisher
        wake.wait(delay)
        publisher = ref()
        if publisher is None or publisher._stop:
            return
        wake.clear()
        with publisher._lock:
            if publisher._stop:
                return
            board = publisher._board()
            if board is None or board.closed:
                return
            del board
            try:
                publisher._step()
            except errors.EngageHubError:  # closed concurrently
                return
        del publisher


# -- the reader -------------------------------------------------------------------------


class SharedLeaderboard:
    """Reads a leaderboard that writers publish to Redis (``Leaderboard(...,
    redis=client, key=key)``), from any process, with :class:`~engagehub.Leaderboard`'s
    names, return shapes and tie order (higher score, then id ascending).

    Scores are computed at ``now`` (seconds; ``None`` = the wall clock) from the
    stored values and ``{K}:meta``. ``top``, ``rank`` and ``around`` are one round
    trip each (one Lua script, so a concurrent rebase never mixes old and new
    values). Answers include every writer's updates that have been published
    (every ``publish_interval_ms``; a writer's own :class:`~engagehub.Leaderboard`
    queries answer from its local board).
    """

    def __init__(self, client: Any, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgument("key must be a non-empty str", 1)
        self._client = client
        self.key = key
        self._keys = keys_of(key)
        self._read = client.register_script(READ_LUA)

    def _rows(self, *args: Any, now: Optional[float]) -> List[RankedUser]:
        meta, start, flat, lasts = self._read(keys=list(self._keys), args=list(args))
        start = int(start)
        if start < 0 or not flat or meta[0] is None:
            return []
        landmark, decay, period = int(meta[0]), float(meta[1]), float(meta[2])
        lam = -math.log(decay) / period
        t = int(time.time()) if now is None else int(now)
        factor = math.exp(-lam * (t - landmark)) if lam else 1.0
        out = []
        for i in range(0, len(flat), 2):
            member = flat[i]
            user = member.decode("utf-8") if isinstance(member, bytes) else member
            value = -float(flat[i + 1]) + 0.0
            score = value * factor if value and lam else value
            if math.isinf(score):
                score = math.copysign(1.7976931348623157e308, value)
            last = lasts[i // 2]
            out.append(RankedUser(user, start + i // 2 + 1, score, int(float(last)) if last is not None else 0))
        return out

    def top(self, k: int = 10, offset: int = 0, now: Optional[float] = None) -> List[RankedUser]:
        """Up to ``k`` users from 0-based position ``offset``, best first."""
        k, offset = _count(k, "k"), _count(offset, "offset")
        if k == 0:
            return []
        stop = offset + k - 1
        return self._rows("top", offset, -1 if stop >= 2**62 else stop, now=now)

    def rank(self, user_id: str, now: Optional[float] = None) -> RankedUser:
        """The user's rank and score; raises :class:`~engagehub.errors.NotFound`."""
        rows = self._rows("rank", user_id, now=now)
        if not rows:
            raise errors.NotFound(f"user {user_id!r} is not on {self._keys[0]}", errors.NotFound.status)
        return rows[0]

    def around(self, user_id: str, radius: int = 5, now: Optional[float] = None) -> List[RankedUser]:
        """The users within ``radius`` places of ``user_id`` (NotFound if absent)."""
        radius = min(_count(radius, "radius"), 2**62)
        rows = self._rows("around", user_id, radius, now=now)
        if not rows:
            raise errors.NotFound(f"user {user_id!r} is not on {self._keys[0]}", errors.NotFound.status)
        return rows

    def get_top_users(self, k: int = 10) -> List[dict]:
        """Drop-in: ``[{"user_id", "score", "rank", "last_update"}]``, best first."""
        return [
            {"user_id": r.user_id, "score": r.score, "rank": r.rank, "last_update": r.last_update}
            for r in self.top(k)
        ]

    def get_user_rank(self, user_id: str) -> Optional[dict]:
        """Drop-in: ``{"user_id", "rank", "score", "last_update"}`` or ``None``."""
        rows = self._rows("rank", user_id, now=None)
        if not rows:
            return None
        r = rows[0]
        return {"user_id": user_id, "rank": r.rank, "score": r.score, "last_update": r.last_update}

    def size(self) -> int:
        """Users on the shared board (``ZCARD``)."""
        return int(self._client.zcard(self._keys[0]))

    def __len__(self) -> int:
        return self.size()

    def trimmed(self) -> int:
        """Users removed from the shared board by writers' ``max_users``."""
        value = self._client.hget(self._keys[1], "trimmed")
        return int(value) if value is not None else 0


__all__ = ["SharedLeaderboard", "Publisher", "check_eviction_policy", "keys_of"]
