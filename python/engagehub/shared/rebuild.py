"""The operator's way back: rebuild a shared board or namespace from rows the
application supplies (its database), for what no journal holds (Redis lost its
data, a writer died without a journal, a namespace was corrupted by hand).

Both functions compute the whole state in this process from the rows, write it
into keys of their own beside the live ones (in the same Redis Cluster hash slot),
then swap them in with one script: readers see the old state or the new one, never
a half-built one. What they leave alone: the publishers' sequence keys (writers go
on publishing exactly once) and, for a namespace, nothing else of it survives the
swap. Stop the writers of the board or namespace while it runs (or accept that what
they publish between the rows' snapshot and the swap is lost): the rows are the
truth the rebuild installs.

Rows are iterables of tuples, e.g. a database cursor::

    rebuild_leaderboard(client, "lb", cursor.execute("SELECT user_id, points, ts FROM points"),
                        decay_factor=0.95)
    rebuild_analytics(client, "bot", cursor.execute("SELECT user_id, channel_id, ts, guild_id FROM events"))

The namespace's daily history (active users, retention cohorts, heatmaps) is
rebuilt too, per guild when the rows carry one: the rows are fed to a native
processor of the writers' ``history_days`` (event clock, no threads), and the
history batch it drains is applied to the new keys by the writers' own script
(``HISTORY_PUBLISH``), so the rebuilt answers are those of one processor fed the
rows.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .. import errors
from .._native import guild_arg
from . import _schema
from ._publisher import run_script

#: Members written per command while building.
_CHUNK = 5000

# Swaps a rebuilt board in. KEYS: 1 {K}:z, 2 {K}:meta, 3 {K}:last, 4 {K}:z:rebase,
# 5 {K}:z:old, 6.. the built z, meta, last (absent ones are skipped). Old sets are
# UNLINKed (freed in the background); a rebase in progress is superseded.
_SWAP_BOARD = r"""
for i = 6, 8 do
  local want = ({'zset', 'hash', 'zset'})[i - 5]
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('ENGAGEHUB corrupt: ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
redis.call('UNLINK', KEYS[1], KEYS[3], KEYS[4], KEYS[5])
if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[1]) end
if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('RENAME', KEYS[8], KEYS[3]) end
redis.call('RENAME', KEYS[7], KEYS[2])
return 1
"""

# Swaps a rebuilt namespace in. KEYS: the live keys to drop (ARGV[1] of them), then
# pairs (built, live). Everything in one script: readers see old or new.
_SWAP_NAMESPACE = r"""
local drop = tonumber(ARGV[1])
for i = 1, drop, 1000 do
  redis.call('UNLINK', unpack(KEYS, i, math.min(drop, i + 999)))
end
for i = drop + 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 1]) end
end
return 1
"""


#: The latest timestamp a row may carry (the end of year 9999, as everywhere).
_MAX_TS = 253_402_300_799


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidType(f"{what} must be an int, not {type(value).__name__}", 1)
    return value


def _row(row: Sequence[Any]) -> Tuple[str, Any, int]:
    """``(id, second field, timestamp)`` of one row, checked: every row is checked
    before anything is written, so a bad one changes nothing in Redis."""
    try:
        first, second, ts = row
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"row {row!r}: three fields are needed", 1) from None
    if not isinstance(first, str) or not first:
        raise errors.InvalidArgument(f"row {tuple(row)!r}: the id must be a non-empty str", 1)
    ts = _int(ts, "a row's timestamp")
    if not 0 < ts <= _MAX_TS:
        raise errors.InvalidArgument(f"row {tuple(row)!r}: timestamp outside 1..={_MAX_TS}", 1)
    return first, second, ts


def rebuild_leaderboard(
    client: Any,
    key: str,
    rows: Iterable[Sequence[Any]],
    *,
    decay_factor: float = 0.95,
    decay_period_secs: float = 86400.0,
    max_users: int = 0,
) -> int:
    """Replaces the shared board ``key`` by the one ``rows`` of ``(user_id, points,
    timestamp)`` make (every point a user earned, as the writers' ``update_user``
    calls would add them; the decay settings must be the writers'). The landmark
    is the newest timestamp; ``max_users`` (0: all) keeps the best. Returns the
    users on the new board."""
    if not isinstance(key, str) or not key:
        raise errors.InvalidArgument("key must be a non-empty str", 1)
    if not (0 < decay_factor <= 1) or not (0 < decay_period_secs < math.inf):
        raise errors.InvalidArgument("decay_factor must be in (0, 1] and decay_period_secs positive", 1)
    lam = -math.log(decay_factor) / decay_period_secs
    earned: List[Tuple[str, float, int]] = []
    for row in rows:
        user, points, ts = _row(row)
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
            raise errors.InvalidArgument(f"row {tuple(row)!r}: points must be a finite number", 1)
        earned.append((user, float(points), ts))
    landmark = max((ts for _, _, ts in earned), default=0)
    values: Dict[str, float] = {}
    last: Dict[str, int] = {}
    for user, points, ts in earned:
        values[user] = values.get(user, 0.0) + points * math.exp(lam * (ts - landmark))
        last[user] = max(last.get(user, ts), ts)
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0].encode()))
    if _int(max_users, "max_users") > 0:
        ranked = ranked[:max_users]
    z, meta, lst = _schema.board_keys(key)
    znew, zold = _schema.board_rebase_keys(key)
    token = uuid.uuid4().hex[:12]
    zb, metab, lastb = (f"{k}:build:{token}" for k in (z, meta, lst))
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(ranked), _CHUNK):
        chunk = ranked[i : i + _CHUNK]
        pipe.zadd(zb, {user: -value + 0.0 for user, value in chunk})
        pipe.zadd(lastb, {user: last[user] for user, _ in chunk})
    pipe.hset(metab, mapping={"version": "1", "landmark": str(landmark), "decay_factor": repr(float(decay_factor)),
                              "decay_period_secs": repr(float(decay_period_secs))})
    pipe.execute()
    run_script(client, {}, _SWAP_BOARD, [z, meta, lst, znew, zold, zb, metab, lastb], [])
    return len(ranked)


def rebuild_analytics(
    client: Any,
    namespace: str,
    rows: Iterable[Sequence[Any]],
    *,
    window_minutes: int = 60,
    max_members: int = 1024,
    event_time: bool = True,
    now: Optional[int] = None,
    history_days: int = 90,
) -> int:
    """Replaces the shared analytics of ``namespace`` by what ``rows`` of
    ``(user_id, channel_id, timestamp)`` or ``(user_id, channel_id, timestamp,
    guild_id)`` events make, as one processor fed them would publish: the users of
    every minute of the window ending at ``now`` (default: the newest timestamp)
    and of all time, the channel counts (each set keeping its ``max_members``
    largest), the event total, the clock (``event_time``), the daily history of
    ``history_days`` days (0: none) per guild and overall, and the configuration
    (``window_minutes``, ``max_members`` and ``history_days`` must be the
    writers'). A guild is a str, an int (its digits) or None. Returns the number
    of events."""
    from ..sketch import HyperLogLog

    if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
        raise errors.InvalidArgument(f"namespace must be a non-empty str without braces, got {namespace!r}", 1)
    if _int(window_minutes, "window_minutes") < 1 or _int(max_members, "max_members") < 1:
        raise errors.InvalidArgument("window_minutes and max_members must be positive", 1)
    if not 0 <= _int(history_days, "history_days") <= 400:
        raise errors.InvalidArgument(f"history_days must be from 0 (none) to 400, got {history_days}", 1)
    events = 0
    newest = 0
    all_users = HyperLogLog()
    all_channels: Dict[str, int] = {}
    minute_users: Dict[int, HyperLogLog] = {}
    minute_channels: Dict[int, Dict[str, int]] = {}
    checked = []
    guilds: List[bytes] = []
    for row in rows:
        guild: Any = None
        if isinstance(row, (tuple, list)) and len(row) == 4:
            row, guild = row[:3], row[3]
        user, channel, ts = _row(row)
        if not isinstance(channel, str) or not channel:
            raise errors.InvalidArgument(f"row {tuple(row)!r}: the channel must be a non-empty str", 1)
        try:
            guilds.append(guild_arg(guild))
        except errors.EngageHubError as exc:
            raise type(exc)(f"row {tuple(row) + (guild,)!r}: {exc}", exc.status) from None
        checked.append((user, channel, ts))
        newest = max(newest, ts)
    # The history first: a row the native processor refuses (a guild id too long,
    # a timestamp past the wall clock's allowance) fails here, before any write.
    history = _history_chunks_of(checked, guilds, history_days) if history_days and checked else []
    end = (newest if now is None else _int(now, "now")) // 60 * 60
    first = end - (window_minutes - 1) * 60
    for user, channel, ts in checked:
        events += 1
        all_users.add(user)
        all_channels[channel] = all_channels.get(channel, 0) + 1
        minute = ts // 60 * 60
        if first <= minute <= end:
            minute_users.setdefault(minute, HyperLogLog()).add(user)
            counts = minute_channels.setdefault(minute, {})
            counts[channel] = counts.get(channel, 0) + 1

    def kept(counts: Dict[str, int]) -> Dict[str, int]:
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:max_members]
        return dict(best)

    token = uuid.uuid4().hex[:12]
    built: List[Tuple[str, str]] = []  # (built key, live key)

    def build(live: str) -> str:
        name = _schema.key(namespace, "build", token, live.split("}:", 1)[1])
        built.append((name, live))
        return name

    ttl = window_minutes * 60 + _schema.MINUTE_KEY_MARGIN_SECS
    pipe = client.pipeline(transaction=False)
    pipe.set(build(_schema.key(namespace, "events")), events)
    if event_time and events:
        pipe.set(build(_schema.key(namespace, "clock")), newest)
    config = build(_schema.key(namespace, "config"))
    pipe.hset(config, mapping={"version": "1", "window_minutes": window_minutes, "max_members": max_members})
    if events:
        pipe.set(build(_schema.key(namespace, "uu", "all")), all_users.to_redis())
        pipe.zadd(build(_schema.key(namespace, "ch", "all")), kept(all_channels))
    for minute, hll in minute_users.items():
        pipe.set(build(_schema.key(namespace, "uu", minute)), hll.to_redis(), ex=ttl)
        name = build(_schema.key(namespace, "ch", minute))
        pipe.zadd(name, kept(minute_channels[minute]))
        pipe.expire(name, ttl)
    pipe.execute()
    # The history's chunks, applied by the writers' script to the built keys under a
    # sequence key of the rebuild's own (dropped by the swap).
    history_pub = _schema.key(namespace, "build", token, "pub")
    history_keys: Dict[str, str] = {}
    for i, (chunk, chunk_guilds, _entries) in enumerate(history):
        keys = [history_pub, config]
        for g in chunk_guilds:
            for kind in ("hu", "hd"):
                live_key = _schema.key(namespace, kind, g)
                if live_key not in history_keys:
                    history_keys[live_key] = build(live_key)
                keys.append(history_keys[live_key])
        run_script(client, {}, _schema.HISTORY_PUBLISH, keys, [i + 1, 3600, history_days, chunk])
    # Every live key of the namespace but the publishers' sequence keys and the
    # builds of other rebuilds goes (old minutes included); then the built ones move in.
    prefix = "{" + namespace + "}:"
    live = []
    for k in client.scan_iter(match=prefix + "*", count=1000):
        name = k.decode() if isinstance(k, bytes) else k
        rest = name[len(prefix) :]
        if not rest.startswith(("pub:", "build:", "tmp:")):
            live.append(name)
    live.append(history_pub)
    keys = live + [k for pair in built for k in pair]
    run_script(client, {}, _SWAP_NAMESPACE, keys, [len(live)])
    return events


def _history_chunks_of(
    events: List[Tuple[str, str, int]], guilds: List[bytes], history_days: int
) -> List[Tuple[bytes, List[str], int]]:
    """The daily-history chunks one processor of ``history_days`` fed ``events``
    (event clock) publishes: a native processor without threads, its outbox's
    history batch."""
    from .._native import _call, copied, ffi, lib
    from ._sources import _history_chunks

    config = ffi.new("eh_processor_config *", {
        "struct_size": ffi.sizeof("eh_processor_config"), "capacity": 1 << 16,
        "workers": lib.EH_WORKERS_NONE, "clock": lib.EH_CLOCK_EVENT_TIME,
        "history_days": history_days, "publish_history": 1,
    })
    out = ffi.new("eh_processor **")
    _call(lib.eh_processor_new, config, out)
    p = out[0]
    try:
        event = ffi.new("eh_event *")
        kind = ffi.from_buffer(b"event")
        event.kind, event.kind_len = kind, 5
        for i, ((user, channel, ts), guild) in enumerate(zip(events, guilds)):
            if i % 30_000 == 0 and i:
                _call(lib.eh_processor_flush, p, 600_000)  # sketched, and the ring emptied
            u, c = user.encode(), channel.encode()
            ub, cb = ffi.from_buffer(u), ffi.from_buffer(c)
            event.user_id, event.user_id_len = ub, len(u)
            event.channel_id, event.channel_id_len = cb, len(c)
            if guild:
                gb = ffi.from_buffer(guild)
                event.guild_id, event.guild_id_len = gb, len(guild)
            else:
                event.guild_id, event.guild_id_len = ffi.NULL, 0
            event.timestamp = ts
            try:
                _call(lib.eh_processor_push_event, p, event)
            except errors.EngageHubError as exc:
                raise type(exc)(f"row {(user, channel, ts, guild.decode() or None)!r}: {exc}", exc.status) from None
        _call(lib.eh_processor_flush, p, 600_000)
        number = ffi.new("uint64_t *")
        _call(lib.eh_processor_outbox_put, p, b"{}", 2, number)
        return _history_chunks(copied(lib.eh_processor_outbox_history, p, number[0]))
    finally:
        lib.eh_processor_free(p)


__all__ = ["rebuild_leaderboard", "rebuild_analytics"]
