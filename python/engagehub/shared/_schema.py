"""The analytics half of the Redis key schema, and its two Lua scripts.

The README's "Shared through Redis" section is the contract; this module is its
one implementation on the Python side. Every key starts with ``{ns}:`` (the
namespace in braces is a Redis Cluster hash tag: all of a namespace's keys live in
one slot, so the scripts and multi-key commands below work on a cluster).

=======================  =========  ============================================
key                      type       value
=======================  =========  ============================================
``{ns}:uu:<minute>``     HLL        users seen in the minute starting at unix
                                    second ``<minute>`` (a multiple of 60),
                                    the ``PFMERGE`` of every writer's sketch
``{ns}:uu:all``          HLL        users of all time
``{ns}:ch:<minute>``     zset       channel id → events in that minute
``{ns}:ch:all``          zset       channel id → events of all time
``{ns}:events``          string     events processed by all writers (integer)
``{ns}:clock``           string     newest event time of ``clock="event_time"``
                                    writers (absent under wall-clock writers)
``{ns}:pub:<id>``        string     last sequence number applied for publisher
                                    ``<id>``
``{ns}:tmp:<id>``        string     scratch key inside a script; never outlives it
=======================  =========  ============================================
"""

from __future__ import annotations

from typing import List

#: Seconds a minute key outlives its window (the TTL is ``window * 60 + MARGIN``,
#: refreshed by every publish touching the key).
MINUTE_KEY_MARGIN_SECS = 600
#: Seconds a publisher's sequence key lives after its last publish. A reply lost
#: and retried within this time is never applied twice.
PUBLISHER_KEY_TTL_SECS = 7 * 86400


def key(namespace: str, *parts: object) -> str:
    """``{namespace}:part:part``."""
    return ":".join(["{" + namespace + "}"] + [str(p) for p in parts])


def minute_keys(namespace: str, kind: str, first_minute: int, last_minute: int) -> List[str]:
    """Keys ``{ns}:<kind>:<m>`` for minute starts ``first_minute..=last_minute``."""
    prefix = "{" + namespace + "}:" + kind + ":"
    return [prefix + str(m) for m in range(first_minute, last_minute + 1, 60)]


# One publish, applied atomically and at most once per (publisher, sequence).
#
# KEYS: 1 {ns}:pub:<id>, 2 {ns}:events, 3 {ns}:uu:all, 4 {ns}:ch:all, 5 {ns}:tmp:<id>,
#       6 {ns}:clock, then pairs ({ns}:uu:<m>, {ns}:ch:<m>) per minute published.
# ARGV: 1 seq, 2 publisher key TTL, 3 minute key TTL, 4 max members per zset,
#       5 events delta, 6 clock ('' = none), 7 all-time HLL bytes ('' = unchanged),
#       8 n, then n (member, delta) pairs for {ns}:ch:all,
#       then per minute: HLL bytes ('' = unchanged), n, n (member, delta) pairs.
# Returns 1 when applied, 0 when this sequence number was applied before.
PUBLISH_SCRIPT = r"""
local seq = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq <= last then return 0 end
local minute_ttl = tonumber(ARGV[3])
local max_members = tonumber(ARGV[4])
local events = tonumber(ARGV[5])
if events ~= 0 then redis.call('INCRBY', KEYS[2], events) end
if ARGV[6] ~= '' then
  local clock = tonumber(redis.call('GET', KEYS[6]) or '0')
  if tonumber(ARGV[6]) > clock then redis.call('SET', KEYS[6], ARGV[6]) end
end
local function merge(dest, bytes)
  if bytes ~= '' then
    redis.call('SET', KEYS[5], bytes)
    redis.call('PFMERGE', dest, KEYS[5])
    redis.call('DEL', KEYS[5])
  end
end
local a = 8
local function add(dest)
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = 0, n - 1 do
    redis.call('ZINCRBY', dest, ARGV[a + 2 * i + 1], ARGV[a + 2 * i])
  end
  a = a + 2 * n
  if n > 0 and redis.call('ZCARD', dest) > max_members then
    redis.call('ZREMRANGEBYRANK', dest, 0, -(max_members + 1))
  end
end
merge(KEYS[3], ARGV[7])
add(KEYS[4])
for j = 7, #KEYS, 2 do
  merge(KEYS[j], ARGV[a])
  a = a + 1
  add(KEYS[j + 1])
  redis.call('EXPIRE', KEYS[j], minute_ttl)
  redis.call('EXPIRE', KEYS[j + 1], minute_ttl)
end
redis.call('SET', KEYS[1], seq, 'EX', tonumber(ARGV[2]))
return 1
"""

# The k highest members of one zset, or of the sum of several, in the library's
# tie order (higher score first, then member ascending, bytewise): the script picks
# the members, the caller sorts them (Lua's string order follows the server's
# locale). One round trip.
#
# KEYS: 1 a scratch key (used only with 2+ sources), 2.. the source zsets.
# ARGV: 1 k.
# Returns a flat list member, score, member, score... (unsorted).
TOP_SCRIPT = r"""
local k = tonumber(ARGV[1])
if k <= 0 then return {} end
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
