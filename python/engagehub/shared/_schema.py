"""Both Redis key schemas and every Lua script, in one place.

The schemas are a stable contract (also in docs/shared.md): any language may read or
write them. In every key the namespace or board key is in braces, a Redis Cluster
hash tag, so all keys of a namespace (or of a board) live in one slot and the
scripts below work on a cluster.

Analytics, namespace ``ns`` (written by ``EventStreamProcessor(redis=, namespace=)``,
read by :class:`~engagehub.shared.SharedAnalytics`):

=======================  =========  ============================================
key                      type       value
=======================  =========  ============================================
``{ns}:uu:<minute>``     HLL        users seen in the minute starting at unix
                                    second ``<minute>`` (a multiple of 60), the
                                    ``PFMERGE`` of every writer's sketch
``{ns}:uu:all``          HLL        users of all time
``{ns}:ch:<minute>``     zset       channel id -> events in that minute
``{ns}:ch:all``          zset       channel id -> events of all time
``{ns}:events``          string     events processed by all writers (integer)
``{ns}:dead_lettered``   string     events dead-lettered by all writers: their
                                    batch failed every attempt of the flush
                                    callback (integer)
``{ns}:clock``           string     newest event time of ``clock="event_time"``
                                    writers (absent under wall-clock writers)
``{ns}:config``          hash       ``version`` (1), ``window_minutes``,
                                    ``max_members``, ``history_days``: set by the
                                    first writer; a writer with other values is
                                    refused
``{ns}:pub:<id>``        string     last batch applied for publisher ``<id>``
``{ns}:tmp:<id>``        string     scratch key inside a script; never outlives it
``{ns}:hu:<g>``          hash       the daily history's user records of guild
                                    ``<g>`` ("" = every event): 8-byte id hash ->
                                    first day, last day, ring of day bits
``{ns}:hd:<g>``          hash       its counters: ``a:``/``w:``/``m:``/``n:<d>``,
                                    ``c:<f>:<d>``, ``k:<fw>:<w>``,
                                    ``h:<d>:<hour>[:<channel>]``, ``hc:<d>``, ``max``
                                    (docs/shared.md, "Daily history")
=======================  =========  ============================================

Minute keys live ``window_minutes * 60 + 600`` seconds after the last publish that
touched them; no writer ever shortens a key's lifetime.

Leaderboard, key ``K`` (written by ``Leaderboard(redis=, key=)``, read by
:class:`~engagehub.shared.SharedLeaderboard`):

======================  =====  ===================================================
key                     type   value
======================  =====  ===================================================
``{K}:z``               zset   member = user id, score = **-value**, where
                               ``value = sum(points * exp(lambda * (ts - landmark)))``
                               and ``lambda = -ln(decay_factor) / decay_period_secs``;
                               negated so that ``ZRANGE`` (ascending score, then
                               member bytes) lists the best first, ties by id.
``{K}:meta``            hash   ``version`` (1), ``landmark`` (integer seconds),
                               ``decay_factor``, ``decay_period_secs`` (decimal
                               doubles), ``trimmed`` (users removed by
                               ``max_users``), ``rebases``; during a rebase also
                               ``rebase_landmark`` and ``rebase_cursor``
``{K}:last``            zset   member = user id, score = newest update timestamp
                               (integer seconds; raised with ``ZADD GT``)
``{K}:z:rebase``        zset   during a rebase: ``{K}:z`` rescaled to
                               ``rebase_landmark``, being filled
``{K}:z:old``           zset   for a moment after a rebase: the replaced set,
                               until the writer ``UNLINK``\\ s it (Redis frees it
                               in the background)
``{K}:pub:<id>``        str    last batch applied for publisher ``<id>``
======================  =====  ===================================================

A user's score at ``now`` is ``-zscore * exp(-lambda * (now - landmark))``.

**Exactly once.** Every write script follows one skeleton (``_PRELUDE``): it reads
and checks everything it will touch first (key types, HyperLogLog headers, numbers,
the namespace's or board's configuration, NaN and overflow), then writes through
``w()``, which records how to undo each write. Redis does not roll back a script
that fails part-way; if anything fails after the first write (or a test injects a
fault after any write), the script undoes what it wrote before it returns the
error. So a batch is applied whole or not at all, and the publisher's sequence
number, stored by the batch's last write, makes a resend after a lost reply a no-op.
(Only ``EXPIRE`` is not undone: a key may keep a longer lifetime.) Errors the
scripts raise start with
``ENGAGEHUB <kind>:`` where kind is ``config`` (a writer's settings disagree with
the stored ones), ``corrupt`` (a key of another type or an invalid value),
``busy`` (retry later), ``failed`` (a command failed) or ``fault`` (tests only).

**Rebases without a long script.** A leaderboard batch whose landmark is far ahead
of the shared one starts a rebase: ``rebase_landmark`` is set and, from then on,
every batch also writes the users it touches into ``{K}:z:rebase`` at the new scale;
``REBASE_STEP`` (run by any writer, ``REBASE_STEP_COUNT`` users per script) copies
the rest with ``ZSCAN``, and its last step swaps the sets and the landmark in one
script (``RENAME`` twice, O(1)). Readers read ``{K}:z`` and ``landmark`` in one
script, so they never see a mix of scales.
"""

from __future__ import annotations

from typing import List, Tuple

#: Seconds a minute key outlives its window.
MINUTE_KEY_MARGIN_SECS = 600
#: Seconds a publisher's sequence key lives after its last batch. A batch whose
#: reply was lost can be resent safely within this time; a cleanly closed writer
#: deletes its key.
PUBLISHER_KEY_TTL_SECS = 7 * 86400
#: A leaderboard batch whose landmark is this many decay-exponent units ahead of the
#: shared landmark starts a rebase (values stay below ~e^64 x points).
REBASE_EXPONENT = 64.0
#: Ahead of the landmark by this many units a batch waits for the rebase to finish.
MAX_EXPONENT = 600.0
#: Users copied by one rebase step (~1-2 ms of Redis time).
REBASE_STEP_COUNT = 1000
#: Rows per leaderboard publish script: bounds the time one script holds Redis.
LEADERBOARD_CHUNK_ROWS = 5000


def key(namespace: str, *parts: object) -> str:
    """``{namespace}:part:part``."""
    return ":".join(["{" + namespace + "}"] + [str(p) for p in parts])


def minute_keys(namespace: str, kind: str, first_minute: int, last_minute: int) -> List[str]:
    """Keys ``{ns}:<kind>:<m>`` for minute starts ``first_minute..=last_minute``."""
    prefix = "{" + namespace + "}:" + kind + ":"
    return [prefix + str(m) for m in range(first_minute, last_minute + 1, 60)]


def board_keys(board: str) -> Tuple[str, str, str]:
    """``({K}:z, {K}:meta, {K}:last)``."""
    tag = "{" + board + "}"
    return tag + ":z", tag + ":meta", tag + ":last"


def board_rebase_keys(board: str) -> Tuple[str, str]:
    """``({K}:z:rebase, {K}:z:old)``."""
    tag = "{" + board + "}"
    return tag + ":z:rebase", tag + ":z:old"


def with_fault(script: str, after_writes: int) -> str:
    """Tests only: ``script`` failing after its ``after_writes``-th write (and
    undoing them, as after any real failure)."""
    marker = "local FAULT_AFTER = 0\n"
    assert marker in script
    return script.replace(marker, f"local FAULT_AFTER = {int(after_writes)}\n", 1)


# The skeleton of every script: checks that fail before any write, and w(), the
# one way to write. `undo` holds the inverse commands of the writes done so far.
_PRELUDE = r"""
local FAULT_AFTER = 0
local undo, writes = {}, 0
local function fail(kind, message)
  for i = #undo, 1, -1 do redis.call(unpack(undo[i])) end
  undo = {}
  error({err = 'ENGAGEHUB ' .. kind .. ': ' .. message})
end
local function remember(inverse)
  if not inverse then return end
  if type(inverse[1]) == 'table' then
    for _, command in ipairs(inverse) do undo[#undo + 1] = command end
  else
    undo[#undo + 1] = inverse
  end
end
-- w(inverse, command...): runs a write; `inverse` (a command, a list of commands or
-- nil) undoes it. Any failure undoes every write so far, then errors.
local function w(inverse, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    local args = {...}
    fail('failed', tostring(args[1]) .. ' ' .. tostring(args[2]) .. ': ' .. reply.err)
  end
  remember(inverse)
  writes = writes + 1
  if writes == FAULT_AFTER then
    fail('fault', 'injected after write ' .. writes .. ' (' .. tostring((...)) .. ')')
  end
  return reply
end
local function type_of(k) return redis.call('TYPE', k)['ok'] end
-- true if `k` exists with type `want`, false if absent; fails on another type.
local function check_type(k, want, what)
  local t = type_of(k)
  if t == 'none' then return false end
  if t ~= want then fail('corrupt', k .. ' holds a ' .. t .. ', not ' .. what) end
  return true
end
-- The integer stored at `k`, or nil when absent; fails on anything else.
local function int_at(k, what)
  if not check_type(k, 'string', what) then return nil end
  local n = tonumber(redis.call('GET', k))
  if not n or n ~= math.floor(n) then fail('corrupt', k .. ' holds a string that is not ' .. what) end
  return n
end
local function check_hll(k)
  if not check_type(k, 'string', 'a HyperLogLog') then return false end
  local head = redis.call('GETRANGE', k, 0, 15)
  local encoding = string.byte(head, 5)
  if #head < 16 or string.sub(head, 1, 4) ~= 'HYLL' or (encoding ~= 0 and encoding ~= 1)
     or (encoding == 0 and redis.call('STRLEN', k) ~= 12304) then
    fail('corrupt', k .. ' is not a valid HyperLogLog')
  end
  return true
end
-- ZMSCORE of any number of members (3000 per command: Lua's C stack holds ~8000).
local function zmscore(k, members, first, last)
  local out = {}
  for s = first, last, 3000 do
    local e = math.min(last, s + 2999)
    local part = redis.call('ZMSCORE', k, unpack(members, s, e))
    for i = 1, #part do out[#out + 1] = part[i] end
  end
  return out
end
-- `flat` (score, member, score, member...) as ZADD commands of 2000 members each.
local function zadd_commands(k, flat)
  local commands = {}
  for s = 1, #flat, 4000 do
    local command = {'ZADD', k}
    for i = s, math.min(#flat, s + 3999) do command[#command + 1] = flat[i] end
    commands[#commands + 1] = command
  end
  return commands
end
-- The undo of setting `members` of zset `k` whose old scores are `old` (false =
-- absent): ZADD the old scores back, ZREM the new members.
local function zset_undo(k, members, old)
  local back, gone = {}, {'ZREM', k}
  for i = 1, #members do
    if old[i] then
      back[#back + 1] = old[i]
      back[#back + 1] = members[i]
    else
      gone[#gone + 1] = members[i]
    end
  end
  local commands = zadd_commands(k, back)
  for s = 3, #gone, 4000 do
    local command = {'ZREM', k}
    for i = s, math.min(#gone, s + 3999) do command[#command + 1] = gone[i] end
    commands[#commands + 1] = command
  end
  return commands
end
-- The restoring command of a string key that held `old` (nil: absent) with `ttl`.
local function string_undo(k, old, ttl)
  if old == nil then return {'DEL', k} end
  if ttl and ttl > 0 then return {'SET', k, old, 'EX', ttl} end
  return {'SET', k, old}
end
"""


# One analytics publish.
# KEYS: 1 {ns}:pub:<id>, 2 {ns}:events, 3 {ns}:uu:all, 4 {ns}:ch:all, 5 {ns}:tmp:<id>,
#       6 {ns}:clock, 7 {ns}:config, 8 {ns}:dead_lettered, then pairs ({ns}:uu:<m>,
#       {ns}:ch:<m>) per minute.
# ARGV: 1 seq, 2 publisher key TTL, 3 window_minutes, 4 max members per zset,
#       5 events delta, 6 clock ('' = none), 7 dead-lettered delta, 8 all-time HLL
#       bytes ('' = unchanged), 9 n, then n (member, delta) pairs for {ns}:ch:all,
#       then per minute: HLL bytes ('' = unchanged), n, n (member, delta) pairs.
# (A batch an older writer put in its journal's outbox has 7 head keys and 8 head
# arguments: _sources reads it into this layout with a dead-lettered delta of 0.)
# Returns 1 when applied, 0 when this sequence number was applied before.
ANALYTICS_PUBLISH = (
    _PRELUDE
    + r"""
local seq = tonumber(ARGV[1])
local done = int_at(KEYS[1], 'a sequence number')
if done and done >= seq then return 0 end
local pub_ttl = redis.call('TTL', KEYS[1])
local window, max_members = tonumber(ARGV[3]), tonumber(ARGV[4])
local minute_ttl = window * 60 + MARGIN
local has_config = check_type(KEYS[7], 'hash', 'a hash')
if has_config then
  local c = redis.call('HMGET', KEYS[7], 'window_minutes', 'max_members')
  if tonumber(c[1]) ~= window or tonumber(c[2]) ~= max_members then
    fail('config', KEYS[7] .. ' has window_minutes ' .. tostring(c[1]) .. ' and max_members ' ..
         tostring(c[2]) .. ', but this writer has window_minutes ' .. window ..
         ' and publish_max_members ' .. max_members .. ': use the same settings in every writer')
  end
end
local events = int_at(KEYS[2], 'an integer')
local delta = tonumber(ARGV[5])
if (events or 0) + delta > 9007199254740991 then fail('corrupt', KEYS[2] .. ' would overflow') end
local dead = int_at(KEYS[8], 'an integer')
local dead_delta = tonumber(ARGV[7])
if (dead or 0) + dead_delta > 9007199254740991 then fail('corrupt', KEYS[8] .. ' would overflow') end
local clock = int_at(KEYS[6], 'a unix time')
local plan = {}
local a = 8
local function take(hll, zset)
  check_hll(hll)
  check_type(zset, 'zset', 'a sorted set')
  local n = tonumber(ARGV[a + 1])
  plan[#plan + 1] = {hll, ARGV[a], zset, a + 2, n}
  a = a + 2 + 2 * n
end
take(KEYS[3], KEYS[4])
for j = 9, #KEYS, 2 do take(KEYS[j], KEYS[j + 1]) end
-- Every check passed: write.
if not has_config then
  w({'DEL', KEYS[7]}, 'HSET', KEYS[7], 'version', '1', 'window_minutes', window, 'max_members', max_members)
end
if delta ~= 0 then
  w(events and {'DECRBY', KEYS[2], delta} or {'DEL', KEYS[2]}, 'INCRBY', KEYS[2], delta)
end
if dead_delta ~= 0 then
  w(dead and {'DECRBY', KEYS[8], dead_delta} or {'DEL', KEYS[8]}, 'INCRBY', KEYS[8], dead_delta)
end
if ARGV[6] ~= '' and tonumber(ARGV[6]) > (clock or 0) then
  w(string_undo(KEYS[6], clock), 'SET', KEYS[6], ARGV[6])
end
-- A minute key lives minute_ttl after the last publish touching it; never shortened.
local function keep_alive(k)
  local ttl = redis.call('TTL', k)
  if ttl == -1 or (ttl >= 0 and ttl < minute_ttl) then w(nil, 'EXPIRE', k, minute_ttl) end
end
for _, p in ipairs(plan) do
  local hll, bytes, zset, first, n = p[1], p[2], p[3], p[4], p[5]
  if bytes ~= '' then
    local before = redis.call('GET', hll)
    w({'DEL', KEYS[5]}, 'SET', KEYS[5], bytes)
    w(before and {'SET', hll, before, 'KEEPTTL'} or {'DEL', hll}, 'PFMERGE', hll, KEYS[5])
    w(nil, 'DEL', KEYS[5])
  end
  if n > 0 then
    local members = {}
    for i = 0, n - 1 do members[i + 1] = ARGV[first + 2 * i] end
    local old = zmscore(zset, members, 1, n)
    for i = 0, n - 1 do
      local o = old[i + 1]
      w(o and {'ZADD', zset, o, members[i + 1]} or {'ZREM', zset, members[i + 1]},
        'ZINCRBY', zset, ARGV[first + 2 * i + 1], members[i + 1])
    end
    local size = redis.call('ZCARD', zset)
    if size > max_members then
      local gone = redis.call('ZRANGE', zset, 0, size - max_members - 1, 'WITHSCORES')
      local back = {}
      for i = 1, #gone, 2 do back[#back + 1] = gone[i + 1]; back[#back + 1] = gone[i] end
      w(zadd_commands(zset, back), 'ZREMRANGEBYRANK', zset, 0, size - max_members - 1)
    end
  end
  if hll ~= KEYS[3] then
    keep_alive(hll)
    keep_alive(zset)
  end
end
w(string_undo(KEYS[1], done, pub_ttl), 'SET', KEYS[1], seq, 'EX', ARGV[2])
return 1
""".replace("MARGIN", str(MINUTE_KEY_MARGIN_SECS))
)


# One leaderboard batch.
# KEYS: 1 {K}:z, 2 {K}:meta, 3 {K}:last, 4 {K}:pub:<id>, 5 {K}:z:rebase
# ARGV: 1 seq, 2 batch landmark, 3 decay_factor, 4 decay_period_secs, 5 max_users
#       (0 = unbounded), 6 pub key TTL, 7 the rows' user ids as one JSON array,
#       8 the rows' numbers packed little-endian, 17 bytes per row: kind (u8: 0 add,
#       1 set, 2 remove), -value (f64, relative to the batch landmark), last_update
#       (i64), 9 '0' to leave {K}:last alone (removes and trims still delete from it).
# The script computes each touched user's final value in Lua (the same double
# additions, in the same order, as one ZINCRBY per row), checks them all, then
# writes: one multi-member ZADD per 2,000 users.
# Returns {applied (0 = a duplicate), users trimmed, rebase in progress (0/1)}.
LEADERBOARD_PUBLISH = (
    _PRELUDE
    + r"""
local z, meta, last, pub, znew = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local seq = tonumber(ARGV[1])
local done = int_at(pub, 'a sequence number')
local has_meta = check_type(meta, 'hash', 'a hash')
local m = redis.call('HMGET', meta, 'version', 'landmark', 'decay_factor', 'decay_period_secs', 'rebase_landmark')
if done and done >= seq then return {0, 0, m[5] and 1 or 0} end
local pub_ttl = redis.call('TTL', pub)
check_type(z, 'zset', 'a sorted set')
check_type(last, 'zset', 'a sorted set')
local blm = tonumber(ARGV[2])
local landmark, target = blm, nil
if has_meta then
  landmark = tonumber(m[2])
  if m[1] ~= '1' or not landmark or not tonumber(m[3]) or not tonumber(m[4]) then
    fail('corrupt', meta .. ' is not a leaderboard meta hash of version 1')
  end
  if tonumber(m[3]) ~= tonumber(ARGV[3]) or tonumber(m[4]) ~= tonumber(ARGV[4]) then
    fail('config', meta .. ' has decay ' .. m[3] .. ' per ' .. m[4] .. ' s; this writer uses ' ..
         ARGV[3] .. ' per ' .. ARGV[4] .. ' s: the values would not add up')
  end
  if m[5] then
    target = tonumber(m[5])
    if not target then fail('corrupt', meta .. ' has a rebase_landmark that is not a number') end
    check_type(znew, 'zset', 'a sorted set')
  end
end
local lambda = -math.log(tonumber(ARGV[3])) / tonumber(ARGV[4])
local starting = false
if not target and lambda > 0 and lambda * (blm - landmark) > REBASE_EXPONENT then
  if check_type(znew, 'zset', 'a sorted set') then
    fail('corrupt', znew .. ' exists although no rebase is in progress')
  end
  target, starting = blm, true
end
if lambda * (blm - landmark) > MAX_EXPONENT then
  fail('busy', z .. ' is being rebased; this batch waits for the rebase to finish')
end
local scale = 1.0
if blm ~= landmark then scale = math.exp(lambda * (blm - landmark)) end
local f = target and math.exp(-lambda * (target - landmark)) or nil
-- The rows, and each touched user's final value (false = removed).
local ids = cjson.decode(ARGV[7])
local blob, n = ARGV[8], #ids
local keep_last = ARGV[9] ~= '0'
local users, at = {}, {}
local kinds, vals, ts = {}, {}, {}
local pos = 1
for i = 1, n do
  kinds[i], vals[i], ts[i], pos = struct.unpack('<Bdi8', blob, pos)
  if scale ~= 1.0 then vals[i] = vals[i] * scale end
  if not at[ids[i]] then
    users[#users + 1] = ids[i]
    at[ids[i]] = #users
  end
end
local nu = #users
local old = zmscore(z, users, 1, nu)
local cur, reset, newest = {}, {}, {}
for i = 1, nu do cur[i] = old[i] and tonumber(old[i]) or false end
for i = 1, n do
  local u = at[ids[i]]
  if kinds[i] == 2 then
    cur[u], reset[u], newest[u] = false, true, nil
  else
    if kinds[i] == 1 then cur[u] = vals[i] else cur[u] = (cur[u] or 0) + vals[i] end
    if not newest[u] or ts[i] > newest[u] then newest[u] = ts[i] end
  end
end
for i = 1, nu do
  local v = cur[i]
  if v and (v ~= v or v == math.huge or v == -math.huge) then
    fail('corrupt', 'the score of ' .. users[i] .. ' in ' .. z .. ' would not be a finite number')
  end
end
-- Every check passed: write.
if not has_meta then
  w({'DEL', meta}, 'HSET', meta, 'version', '1', 'landmark', ARGV[2], 'decay_factor', ARGV[3],
    'decay_period_secs', ARGV[4])
end
if starting then
  w({'HDEL', meta, 'rebase_landmark', 'rebase_cursor'}, 'HSET', meta, 'rebase_landmark', target,
    'rebase_cursor', '0')
end
-- Sets `values` (false = remove) of `users` into zset `k` whose old scores are
-- `before`, `factor` applied to the values.
local function put(k, values, before, factor)
  local adds, rems = {}, {'ZREM', k}
  for i = 1, nu do
    local v = values[i]
    if v then
      adds[#adds + 1] = v * factor + 0.0
      adds[#adds + 1] = users[i]
    elseif before[i] then
      rems[#rems + 1] = users[i]
    end
  end
  local commands = zadd_commands(k, adds)
  for s = 3, #rems, 4000 do
    local command = {'ZREM', k}
    for i = s, math.min(#rems, s + 3999) do command[#command + 1] = rems[i] end
    commands[#commands + 1] = command
  end
  for c = 1, #commands do
    w(c == 1 and zset_undo(k, users, before) or nil, unpack(commands[c]))
  end
end
put(z, cur, old, 1.0)
if target then put(znew, cur, zmscore(znew, users, 1, nu), f) end
local old_last = zmscore(last, users, 1, nu)
-- {K}:last: the newest timestamp (ZADD GT), replaced after a remove in the batch;
-- removed users leave it (also when this writer does not publish last updates).
local gt, plain, drop = {}, {}, {'ZREM', last}
for i = 1, nu do
  if keep_last and cur[i] then
    local into = reset[i] and plain or gt
    into[#into + 1] = newest[i]
    into[#into + 1] = users[i]
  elseif (reset[i] or not cur[i]) and old_last[i] then
    drop[#drop + 1] = users[i]
  end
end
local first = true
local function undo_once() if first then first = false; return zset_undo(last, users, old_last) end end
for s = 1, #gt, 4000 do
  local command = {'ZADD', last, 'GT'}
  for i = s, math.min(#gt, s + 3999) do command[#command + 1] = gt[i] end
  w(undo_once(), unpack(command))
end
for _, command in ipairs(zadd_commands(last, plain)) do w(undo_once(), unpack(command)) end
for s = 3, #drop, 4000 do
  local command = {'ZREM', last}
  for i = s, math.min(#drop, s + 3999) do command[#command + 1] = drop[i] end
  w(undo_once(), unpack(command))
end
local trimmed = 0
local max = tonumber(ARGV[5])
if max > 0 then
  local size = redis.call('ZCARD', z)
  if size > max then
    local gone = redis.call('ZRANGE', z, max, -1, 'WITHSCORES')
    local back, ids_gone = {}, {}
    for i = 1, #gone, 2 do
      back[#back + 1] = gone[i + 1]; back[#back + 1] = gone[i]
      ids_gone[#ids_gone + 1] = gone[i]
    end
    trimmed = #ids_gone
    w(zadd_commands(z, back), 'ZREMRANGEBYRANK', z, max, -1)
    for _, k in ipairs(target and {last, znew} or {last}) do
      local before = zmscore(k, ids_gone, 1, trimmed)
      local restore = {}
      for i = 1, trimmed do
        if before[i] then restore[#restore + 1] = before[i]; restore[#restore + 1] = ids_gone[i] end
      end
      for s = 1, trimmed, 4000 do
        w(s == 1 and zadd_commands(k, restore) or nil, 'ZREM', k, unpack(ids_gone, s, math.min(trimmed, s + 3999)))
      end
    end
    w({'HINCRBY', meta, 'trimmed', -trimmed}, 'HINCRBY', meta, 'trimmed', trimmed)
  end
end
w(string_undo(pub, done, pub_ttl), 'SET', pub, seq, 'EX', ARGV[6])
return {1, trimmed, target and 1 or 0}
""".replace("REBASE_EXPONENT", repr(REBASE_EXPONENT)).replace("MAX_EXPONENT", repr(MAX_EXPONENT))
)


# One step of a leaderboard rebase: copies up to ARGV[1] users (a ZSCAN page) of
# {K}:z into {K}:z:rebase at the new scale; the step whose page ends the scan swaps
# the sets and the landmark. ZSCAN returns every user present for the whole scan;
# users written during it are written to both sets by the publish script.
# KEYS: 1 {K}:z, 2 {K}:meta, 3 {K}:z:rebase, 4 {K}:z:old. ARGV: 1 users per step.
# Returns {finished (1 = no rebase in progress any more), users copied, swapped
# (1 = this step ended the rebase)}.
LEADERBOARD_REBASE_STEP = (
    _PRELUDE
    + r"""
local z, meta, znew, zold = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if not check_type(meta, 'hash', 'a hash') then return {1, 0, 0} end
local m = redis.call('HMGET', meta, 'landmark', 'decay_factor', 'decay_period_secs', 'rebase_landmark',
                     'rebase_cursor')
if not m[4] then return {1, 0, 0} end
local landmark, target = tonumber(m[1]), tonumber(m[4])
local lambda = -math.log(tonumber(m[2])) / tonumber(m[3])
if not landmark or not target or not m[5] or lambda ~= lambda then
  fail('corrupt', meta .. ' has an invalid rebase state')
end
local has_z = check_type(z, 'zset', 'a sorted set')
check_type(znew, 'zset', 'a sorted set')
local f = math.exp(-lambda * (target - landmark))
local copied, cursor, page = 0, '0', {'0', {}}
if has_z then page = redis.call('ZSCAN', z, m[5], 'COUNT', tonumber(ARGV[1])) end
cursor = page[1]
if cursor == '0' and redis.call('EXISTS', zold) == 1 then
  -- The set an earlier rebase replaced is not deleted yet (the client UNLINKs it).
  fail('busy', zold .. ' still exists: the swap waits until it is deleted')
end
if has_z then
  local members, flat = {}, {}
  for i = 1, #page[2], 2 do
    members[#members + 1] = page[2][i]
    flat[#flat + 1] = tonumber(page[2][i + 1]) * f + 0.0
    flat[#flat + 1] = page[2][i]
  end
  copied = #members
  if copied > 0 then
    local before = zmscore(znew, members, 1, copied)
    local commands = zadd_commands(znew, flat)
    for c = 1, #commands do w(c == 1 and zset_undo(znew, members, before) or nil, unpack(commands[c])) end
  end
end
if cursor ~= '0' then
  w({'HSET', meta, 'rebase_cursor', m[5]}, 'HSET', meta, 'rebase_cursor', cursor)
  return {0, copied, 0}
end
-- The scan is over: {K}:z:rebase holds every user at the new scale. Swap.
if has_z then w({'RENAME', zold, z}, 'RENAME', z, zold) end
if redis.call('EXISTS', znew) == 1 then w({'RENAME', z, znew}, 'RENAME', znew, z) end
w({'HSET', meta, 'landmark', m[1], 'rebase_landmark', m[4], 'rebase_cursor', m[5]},
  'HSET', meta, 'landmark', m[4])
w(nil, 'HDEL', meta, 'rebase_landmark', 'rebase_cursor')
w({'HINCRBY', meta, 'rebases', -1}, 'HINCRBY', meta, 'rebases', 1)
return {1, copied, 1}
"""
)


# Reads of the shared leaderboard, one round trip each. KEYS: {K}:z, {K}:meta,
# {K}:last. ARGV: mode, then   'top': start, stop (ZRANGE indexes)
#                              'rank': user id      'around': user id, radius
# Returns {meta {landmark, decay, period}, start (0-based), flat id/score list,
# last updates}; for 'rank'/'around' of an absent user the list is empty, start -1.
LEADERBOARD_READ = (
    _PRELUDE
    + r"""
local z, meta, last = KEYS[1], KEYS[2], KEYS[3]
check_type(z, 'zset', 'a sorted set')
check_type(last, 'zset', 'a sorted set')
local m = {false, false, false}
if check_type(meta, 'hash', 'a hash') then
  m = redis.call('HMGET', meta, 'landmark', 'decay_factor', 'decay_period_secs')
  if not tonumber(m[1]) or not tonumber(m[2]) or not tonumber(m[3]) then
    fail('corrupt', meta .. ' is not a leaderboard meta hash')
  end
end
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
  lasts = zmscore(last, ids, 1, #ids)
end
return {m, start, rows, lasts}
"""
)


# The k highest members of one zset, or of the sum of several, in the library's
# tie order (higher score first, then member ascending, bytewise): the script picks
# the members, the caller sorts them (Lua's string order follows the server's
# locale). One round trip.
# KEYS: 1 a scratch key (used only with 2+ sources), 2.. the source zsets.
# ARGV: 1 k.
# Returns a flat list member, score, member, score... (unsorted).
ANALYTICS_TOP = (
    _PRELUDE
    + r"""
local k = tonumber(ARGV[1])
if k <= 0 then return {} end
for i = 2, #KEYS do check_type(KEYS[i], 'zset', 'a sorted set') end
local src = KEYS[2]
if #KEYS > 2 then
  local sources = {}
  for i = 2, #KEYS do sources[#sources + 1] = KEYS[i] end
  redis.call('ZUNIONSTORE', KEYS[1], #sources, unpack(sources))
  src = KEYS[1]
end
local top = redis.call('ZRANGE', src, 0, k - 1, 'REV', 'WITHSCORES')
local rows = {}
if #top > 0 then
  local floor = top[#top]
  for i = 1, #top, 2 do
    if tonumber(top[i + 1]) > tonumber(floor) then rows[#rows + 1] = {top[i], top[i + 1]} end
  end
  -- Members tied at the lowest score kept: the bytewise-lowest ones win.
  local tied = redis.call('ZRANGE', src, floor, floor, 'BYSCORE', 'LIMIT', 0, k - #rows)
  for i = 1, #tied do rows[#rows + 1] = {tied[i], floor} end
end
if #KEYS > 2 then redis.call('DEL', KEYS[1]) end
local out = {}
for i = 1, #rows do out[#out + 1] = rows[i][1]; out[#out + 1] = rows[i][2] end
return out
"""
)


# -- the daily history (active users, retention cohorts, heatmaps) ----------------------

#: Days of a user record's ring for a history of ``history_days`` (as the native
#: processor's: the history and a month before it, in 64-day words).
def history_ring(history_days: int) -> int:
    days = history_days + 30
    return 128 if days <= 128 else 256 if days <= 256 else 448


# Shared by the history's publish and read scripts: days, weeks, the ring.
_HISTORY_PRELUDE = r"""
local function week_of(d) return math.floor((d + 3) / 7) end
local function week_start(wk) return wk * 7 - 3 end
local function ring_of(history)
  if history + 30 <= 128 then return 128 elseif history + 30 <= 256 then return 256 end
  return 448
end
-- YYYY-MM-DD of a day number (Howard Hinnant's civil_from_days).
local function date(d)
  local z = d + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local dd = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02d', y, m, dd)
end
"""

# One chunk of a writer's daily history: activations (a user's first event of a
# day, as the writer saw it) and heat deltas (see src/community/publish.rs for the
# chunk's format). Each activation is applied to the shared user record exactly as
# the native processor applies an event to its own (the same ring of day bits, the
# same counter ranges), so the shared counters are those of one processor fed every
# writer's events; an activation already recorded changes nothing.
# KEYS: 1 {ns}:pub:<id>, 2 {ns}:config, then for each guild of the chunk (the
#       first is "": events without a guild / all guilds) {ns}:hu:<g> and
#       {ns}:hd:<g>.
# ARGV: 1 seq, 2 publisher key TTL, 3 history_days, 4 the chunk.
# Returns 1 when applied, 0 when this sequence number was applied before.
HISTORY_PUBLISH = (
    _PRELUDE
    + _HISTORY_PRELUDE
    + r"""
local seq = tonumber(ARGV[1])
local done = int_at(KEYS[1], 'a sequence number')
if done and done >= seq then return 0 end
local pub_ttl = redis.call('TTL', KEYS[1])
local history = tonumber(ARGV[3])
local has_config = check_type(KEYS[2], 'hash', 'a hash')
local stored = has_config and redis.call('HGET', KEYS[2], 'history_days')
if stored and tonumber(stored) ~= history then
  fail('config', KEYS[2] .. ' has history_days ' .. tostring(stored) .. ', but this writer has ' ..
       history .. ': use the same settings in every writer')
end
local RING = ring_of(history)
local KEEP = RING + 31
local RB = RING / 8
-- The chunk: guilds, heat days, entries.
local chunk = ARGV[4]
local GUILDS, HEATS, ENTRIES = {}, {}, {}
local ok, err = pcall(function()
  local p = 1
  local n
  n, p = struct.unpack('<H', chunk, p)
  for i = 1, n do
    local len
    len, p = struct.unpack('<H', chunk, p)
    GUILDS[i] = string.sub(chunk, p, p + len - 1)
    p = p + len
  end
  n, p = struct.unpack('<H', chunk, p)
  for i = 1, n do
    local g, d
    g, d, p = struct.unpack('<Hi4', chunk, p)
    HEATS[i] = {g + 1, d}
  end
  n, p = struct.unpack('<I4', chunk, p)
  for i = 1, n do
    local kind
    kind, p = struct.unpack('<B', chunk, p)
    if kind == 1 then
      local g, key, d
      g, key, d, p = struct.unpack('<Hc8i4', chunk, p)
      ENTRIES[i] = {1, g + 1, key, d}
    elseif kind == 2 then
      local h, has, ch
      h, has, p = struct.unpack('<HB', chunk, p)
      if has ~= 0 then
        local len
        len, p = struct.unpack('<H', chunk, p)
        ch = string.sub(chunk, p, p + len - 1)
        p = p + len
      end
      local deltas = {}
      for hour = 1, 24 do deltas[hour], p = struct.unpack('<I8', chunk, p) end
      ENTRIES[i] = {2, h + 1, ch, deltas}
    else
      error('entry type ' .. kind)
    end
  end
  if p ~= #chunk + 1 then error('bytes after the entries') end
end)
if not ok then fail('corrupt', 'a history chunk that does not parse: ' .. tostring(err)) end
if #KEYS ~= 2 + 2 * #GUILDS or GUILDS[1] ~= '' then
  fail('corrupt', 'the chunk names ' .. #GUILDS .. ' guilds but ' .. (#KEYS - 2) .. ' keys were given')
end
for i = 3, #KEYS do check_type(KEYS[i], 'hash', 'a hash') end
for _, e in ipairs(ENTRIES) do
  if (e[1] == 1 and not GUILDS[e[2]]) or (e[1] == 2 and not HEATS[e[2]]) then
    fail('corrupt', 'a history chunk entry with an index out of range')
  end
end
for _, h in ipairs(HEATS) do
  if not GUILDS[h[1]] then fail('corrupt', 'a history chunk heat with a guild out of range') end
end

-- Per guild: its keys, newest day, record cache, counter increments.
local state = {}
local function guild(i)
  local s = state[i]
  if s then return s end
  local U, C = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local mx = redis.call('HGET', C, 'max')
  if mx and not tonumber(mx) then fail('corrupt', C .. ' has a max that is not a day number') end
  mx = mx and tonumber(mx) or nil
  s = {U = U, C = C, max = mx, old_max = mx, recs = {}, changed = {}, order = {}, inc = {}, channels = {}}
  state[i] = s
  return s
end
local function inc(s, field, n) s.inc[field] = (s.inc[field] or 0) + n end
local function load(s, key)
  local r = s.recs[key]
  if r ~= nil then return r end
  local v = redis.call('HGET', s.U, key)
  if not v then s.recs[key] = false; return false end
  if #v ~= 8 + RB then
    fail('corrupt', s.U .. ' holds a user record of ' .. #v .. ' bytes, not ' .. (8 + RB))
  end
  local first, last = struct.unpack('<i4i4', v)
  r = {first = first, last = last, bits = {string.byte(v, 9, 8 + RB)}, old = v}
  s.recs[key] = r
  return r
end
local function mark(s, key)
  if not s.changed[key] then s.changed[key] = true; s.order[#s.order + 1] = key end
end
local function at(d) local q = d % RING; return math.floor(q / 8) + 1, bit.lshift(1, q % 8) end
local function in_ring(r, d) return d <= r.last and d > r.last - RING end
local function has(r, d)
  if not in_ring(r, d) then return false end
  local i, m = at(d)
  return bit.band(r.bits[i], m) ~= 0
end
local function set(r, d) local i, m = at(d); r.bits[i] = bit.bor(r.bits[i], m) end
local function advance(r, d)
  if d - r.last >= RING then
    for i = 1, RB do r.bits[i] = 0 end
  else
    for x = r.last + 1, d do local i, m = at(x); r.bits[i] = bit.band(r.bits[i], bit.bnot(m)) end
  end
  r.last = d
end
-- As the native Counters::activate.
local function activate(s, x, prev, nxt, first, week_first, horizon)
  if x < horizon then return end
  inc(s, 'a:' .. x, 1)
  for _, spec in ipairs({{7, 'w:'}, {30, 'm:'}}) do
    local reach, tag = spec[1], spec[2]
    local lo, hi = x, x + reach - 1
    if prev then lo = math.max(x, prev + reach) end
    if nxt then hi = math.min(hi, nxt - 1) end
    for d = lo, hi do inc(s, tag .. d, 1) end
  end
  if first >= horizon then
    inc(s, 'c:' .. first .. ':' .. x, 1)
    if week_first then inc(s, 'k:' .. week_of(first) .. ':' .. week_of(x), 1) end
  end
end
-- As the native Counters::move_cohort.
local function move_cohort(s, r, from, to, horizon)
  local old, new = from >= horizon, to >= horizon
  if old then inc(s, 'n:' .. from, -1) end
  if new then inc(s, 'n:' .. to, 1) end
  local last_week
  for d = r.last - RING + 1, r.last do
    if has(r, d) then
      if old then inc(s, 'c:' .. from .. ':' .. d, -1) end
      if new then inc(s, 'c:' .. to .. ':' .. d, 1) end
      local wk = week_of(d)
      if wk ~= last_week then
        last_week = wk
        if old then inc(s, 'k:' .. week_of(from) .. ':' .. wk, -1) end
        if new then inc(s, 'k:' .. week_of(to) .. ':' .. wk, 1) end
      end
    end
  end
end
-- As the native observe().
local function observe(s, key, x)
  if not s.max or x > s.max then s.max = x end
  local horizon = s.max - KEEP
  local r = load(s, key)
  if not r then
    r = {first = x, last = x, bits = {}, old = false}
    for i = 1, RB do r.bits[i] = 0 end
    set(r, x)
    s.recs[key] = r
    mark(s, key)
    if x >= horizon then inc(s, 'n:' .. x, 1) end
    activate(s, x, nil, nil, x, true, horizon)
    return
  end
  if x > r.last then advance(r, x); mark(s, key) end
  local ir = in_ring(r, x)
  if ir and has(r, x) then return end
  if x < r.first then
    move_cohort(s, r, r.first, x, horizon)
    r.first = x
    mark(s, key)
  end
  if not ir then return end
  local prev, nxt
  for d = x - 1, x - 29, -1 do if has(r, d) then prev = d; break end end
  for d = x + 1, x + 29 do if has(r, d) then nxt = d; break end end
  local ws = week_start(week_of(x))
  local week_first = true
  for d = ws, ws + 6 do if d ~= x and has(r, d) then week_first = false; break end end
  set(r, x)
  mark(s, key)
  activate(s, x, prev, nxt, r.first, week_first, horizon)
end
-- The channels with heat on day d (a list field: u16 length, bytes, ...).
local function channels(s, d)
  local c = s.channels[d]
  if c then return c end
  local raw = redis.call('HGET', s.C, 'hc:' .. d)
  c = {set = {}, list = {}, old = raw, added = false}
  if raw then
    local p = 1
    local ok = pcall(function()
      while p <= #raw do
        local len
        len, p = struct.unpack('<H', raw, p)
        local name = string.sub(raw, p, p + len - 1)
        p = p + len
        c.set[name] = true
        c.list[#c.list + 1] = name
      end
    end)
    if not ok then fail('corrupt', s.C .. ' has a channel list for day ' .. d .. ' that does not parse') end
  end
  s.channels[d] = c
  return c
end

for _, e in ipairs(ENTRIES) do
  if e[1] == 1 then
    observe(guild(0), e[3], e[4])
    if e[2] > 1 then observe(guild(e[2] - 1), e[3], e[4]) end
  else
    local h = HEATS[e[2]]
    local s, d = guild(h[1] - 1), h[2]
    if not s.max or d >= s.max - KEEP then
      local ch = e[3]
      if ch then
        local c = channels(s, d)
        if not c.set[ch] then
          c.set[ch] = true
          c.list[#c.list + 1] = ch
          c.added = true
        end
      end
      for hour = 1, 24 do
        local n = e[4][hour]
        if n > 0 then
          local field = 'h:' .. d .. ':' .. (hour - 1)
          if ch then field = field .. ':' .. ch end
          inc(s, field, n)
        end
      end
    end
  end
end

-- Every check passed: write.
if not stored then
  w({'HDEL', KEYS[2], 'history_days'}, 'HSET', KEYS[2], 'history_days', history)
end
-- Deletes `fields` of hash k (those present), undoably, 1000 per command.
local function hdel(k, fields)
  for s0 = 1, #fields, 1000 do
    local part = {}
    for i = s0, math.min(#fields, s0 + 999) do part[#part + 1] = fields[i] end
    local old = redis.call('HMGET', k, unpack(part))
    local back, gone = {'HSET', k}, {'HDEL', k}
    for i = 1, #part do
      if old[i] then back[#back + 1] = part[i]; back[#back + 1] = old[i]; gone[#gone + 1] = part[i] end
    end
    if #gone > 2 then w(back, unpack(gone)) end
  end
end
for i = 0, #GUILDS - 1 do
  local s = state[i]
  if s then
    local fields = {}
    for field, n in pairs(s.inc) do if n ~= 0 then fields[#fields + 1] = field end end
    for s0 = 1, #fields, 1000 do
      local part = {}
      for j = s0, math.min(#fields, s0 + 999) do part[#part + 1] = fields[j] end
      local old = redis.call('HMGET', s.C, unpack(part))
      for j, field in ipairs(part) do
        -- Undone to what it was: a counter that was absent goes again.
        w(old[j] and {'HSET', s.C, field, old[j]} or {'HDEL', s.C, field}, 'HINCRBY', s.C, field, s.inc[field])
      end
    end
    for d, c in pairs(s.channels) do
      if c.added then
        local parts = {}
        for _, name in ipairs(c.list) do parts[#parts + 1] = struct.pack('<H', #name) .. name end
        w(c.old and {'HSET', s.C, 'hc:' .. d, c.old} or {'HDEL', s.C, 'hc:' .. d},
          'HSET', s.C, 'hc:' .. d, table.concat(parts))
      end
    end
    for _, key in ipairs(s.order) do
      local r = s.recs[key]
      local v = struct.pack('<i4i4', r.first, r.last) .. string.char(unpack(r.bits))
      w(r.old and {'HSET', s.U, key, r.old} or {'HDEL', s.U, key}, 'HSET', s.U, key, v)
    end
    if s.max and s.max ~= s.old_max then
      w(s.old_max and {'HSET', s.C, 'max', s.old_max} or {'HDEL', s.C, 'max'}, 'HSET', s.C, 'max', s.max)
      -- The days that left the horizon go (a long jump: every day of the old state).
      if s.old_max then
        local from, to = s.old_max - KEEP, s.max - KEEP
        if to - from > KEEP + 31 then from = to - KEEP - 31 end
        local fields = {}
        local top = week_of(s.max)
        for t = from, to - 1 do
          for _, tag in ipairs({'a:', 'w:', 'm:', 'n:'}) do fields[#fields + 1] = tag .. t end
          for d = t, s.max do fields[#fields + 1] = 'c:' .. t .. ':' .. d end
          local c = channels(s, t)
          for hour = 0, 23 do
            fields[#fields + 1] = 'h:' .. t .. ':' .. hour
            for _, ch in ipairs(c.list) do fields[#fields + 1] = 'h:' .. t .. ':' .. hour .. ':' .. ch end
          end
          fields[#fields + 1] = 'hc:' .. t
          if week_start(week_of(t)) + 6 == t then
            for wk = week_of(t), top do fields[#fields + 1] = 'k:' .. week_of(t) .. ':' .. wk end
          end
        end
        hdel(s.C, fields)
      end
    end
  end
end
w(string_undo(KEYS[1], done, pub_ttl), 'SET', KEYS[1], seq, 'EX', ARGV[2])
return 1
"""
)


# The history's reads, one round trip each. "Today" is the namespace's clock
# ({ns}:clock, event-time writers) or the reader's wall clock.
# KEYS: 1 {ns}:config, 2 {ns}:clock, 3 {ns}:hd:<g> (the guild's counters).
# ARGV: 1 the reader's unix time, 2 what, then:
#   'active': 3 day, 4 period ('a' day, 'w' week, 'm' month) -> the count
#   'retention': 3 now (0: the namespace's), 4 'day' or 'week', 5 cohorts ->
#       {start day, size, active in each period...} per cohort, flat
#   'heatmap': 3 now (0: the namespace's), 4 days, 5 '1' with a channel, 6 channel
#       -> 168 counts, weekday (Monday first) by hour
# Errors: 'ENGAGEHUB invalid: ...' for a question outside the history.
HISTORY_READ = (
    _PRELUDE
    + _HISTORY_PRELUDE
    + r"""
local history
if check_type(KEYS[1], 'hash', 'a hash') then history = redis.call('HGET', KEYS[1], 'history_days') end
if not history then
  fail('invalid', 'no writer published a daily history to ' .. KEYS[1] ..
       ' (writers need history_days > 0 and a release with community analytics)')
end
history = tonumber(history)
if not history then fail('corrupt', KEYS[1] .. ' has a history_days that is not a number') end
local clock = int_at(KEYS[2], 'a unix time')
check_type(KEYS[3], 'hash', 'a hash')
local function day_of(ts) return math.floor(ts / 86400) end
local function today_of(now)
  if now and now > 0 then return day_of(now) end
  return day_of(clock or tonumber(ARGV[1]))
end
local what = ARGV[2]
if what == 'active' then
  local today = today_of(nil)
  local day = tonumber(ARGV[3])
  if day > today or day <= today - history then
    fail('invalid', 'day ' .. date(day) .. ' is outside the kept history, ' .. date(today - history + 1) ..
         ' to ' .. date(today) .. ' (' .. history .. ' days ending today)')
  end
  return tonumber(redis.call('HGET', KEYS[3], ARGV[4] .. ':' .. day) or 0)
elseif what == 'retention' then
  local today = today_of(tonumber(ARGV[3]))
  local weekly = ARGV[4] == 'week'
  local n = tonumber(ARGV[5])
  local last = weekly and week_of(today) or today
  local first = last - n + 1
  local first_day = weekly and week_start(first) or first
  if n < 1 or first_day <= today - history then
    fail('invalid', n .. ' cohorts of a ' .. ARGV[4] .. ' reach before the kept history (' .. history .. ' days)')
  end
  local fields = {}
  for p = first, last do
    local start = weekly and week_start(p) or p
    for d = start, start + (weekly and 6 or 0) do fields[#fields + 1] = 'n:' .. d end
    for q = p, last do
      fields[#fields + 1] = (weekly and 'k:' or 'c:') .. p .. ':' .. q
    end
  end
  local got = redis.call('HMGET', KEYS[3], unpack(fields))
  local out, i = {}, 1
  for p = first, last do
    local start = weekly and week_start(p) or p
    local size = 0
    for _ = 1, weekly and 7 or 1 do size = size + tonumber(got[i] or 0); i = i + 1 end
    out[#out + 1] = start
    out[#out + 1] = size
    for _ = p, last do out[#out + 1] = tonumber(got[i] or 0); i = i + 1 end
  end
  return out
elseif what == 'heatmap' then
  local today = today_of(tonumber(ARGV[3]))
  local days = tonumber(ARGV[4])
  if days < 1 or days > history then
    fail('invalid', 'days ' .. days .. ' is outside 1..' .. history .. ' (the kept history)')
  end
  local suffix = ARGV[5] == '1' and (':' .. ARGV[6]) or ''
  local out = {}
  for i = 1, 168 do out[i] = 0 end
  for d = today - days + 1, today do
    local fields = {}
    for hour = 0, 23 do fields[hour + 1] = 'h:' .. d .. ':' .. hour .. suffix end
    local got = redis.call('HMGET', KEYS[3], unpack(fields))
    local row = (d + 3) % 7
    for hour = 0, 23 do
      out[row * 24 + hour + 1] = out[row * 24 + hour + 1] + tonumber(got[hour + 1] or 0)
    end
  end
  return out
end
fail('invalid', 'unknown history query ' .. tostring(what))
"""
)
