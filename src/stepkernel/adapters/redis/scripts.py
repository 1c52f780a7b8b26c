"""The Lua scripts of the Redis store: each store operation that changes state is one.

Every script takes ``KEYS[1]`` = the epoch marker and ``KEYS[2]`` = the due set, and
``ARGV[1]`` = the marker the store bound to and ``ARGV[2]`` = the key prefix
(``{p}:``); it first checks the marker (:data:`PRELUDE`) and answers an error reply
``STEPKERNEL_EPOCH <found>`` when it differs, before touching anything.  Time is never
Redis ``TIME``: ``now`` and lease expiries come in as arguments, read from the store's
:class:`~stepkernel.ports.clock.Clock`.

Scripts run with ``EVALSHA``; the SHA-1 is computed here, so a script is sent to Redis
only when Redis answers ``NOSCRIPT`` (first use, after a restart or ``SCRIPT FLUSH``).
Record, message and index keys other than ``KEYS`` are built inside the scripts from the
prefix; they share its hash tag, so they live in the same Cluster slot.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stepkernel.adapters.redis.errors import EPOCH_ERROR, MISSING

__all__ = [
    "ACK",
    "ACK_LUA",
    "COMMIT",
    "COUNT",
    "EXTEND",
    "FIND",
    "INIT",
    "LEASE",
    "NEXT_DUE",
    "QUEUED",
    "RELEASE",
    "Script",
    "reply_text",
]


class Script:
    """A Lua script and its SHA-1 (what ``EVALSHA`` names it by)."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


PRELUDE = f"""
local found = redis.call('GET', KEYS[1])
if found ~= ARGV[1] then
  return redis.error_reply('{EPOCH_ERROR} ' .. (found or '{MISSING}'))
end
local p = ARGV[2]
"""


def reply_text(value: Any) -> str:
    """A script's reply as text (clients may or may not decode responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


ACK_LUA = """
local function ack(id)
  local mk = p .. 'm:' .. id
  local action = redis.call('HGET', mk, 'a')
  if action then
    redis.call('DEL', mk)
    redis.call('ZREM', KEYS[2], id)
    redis.call('SREM', p .. 'qa:' .. action, id)
  end
end
"""

INIT = Script(
    "init",
    """
-- KEYS: epoch; ARGV: create ('1' or '0'), a fresh marker
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'NX')
end
return redis.call('GET', KEYS[1])
""",
)

COMMIT = Script(
    "commit",
    PRELUDE
    + ACK_LUA
    + """
-- KEYS[3..]: record keys of the guards, then the deletes, then the writes.
-- ARGV[3..7]: how many guards, deletes, writes, acks, enqueues; then
--   per guard: expected version
--   per delete: expected version, action id ('' for lanes and achievements)
--   per write: expected version, stored value, action id (or ''), index entry
--   per ack: message id
--   per enqueue: message id, available_at, action id, message text
-- Returns 0 when applied, {position, actual version} for the first failed check
-- (positions count guards, then deletes, then writes, from 1); then nothing changed.
local ng, nd, nw = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local na, ne = tonumber(ARGV[6]), tonumber(ARGV[7])
local gd = 8 + ng
local gw = gd + 2 * nd
local ga = gw + 4 * nw
local ge = ga + na

local function version_of(key)
  local head = redis.call('GETRANGE', key, 0, 24)
  if head == '' then return 0 end
  local bar = string.find(head, '|', 1, true)
  return (bar and tonumber(string.sub(head, 1, bar - 1))) or -1
end

for i = 1, ng do
  local actual = version_of(KEYS[2 + i])
  if actual ~= tonumber(ARGV[7 + i]) then return {i, actual} end
end
for i = 1, nd do
  local actual = version_of(KEYS[2 + ng + i])
  if actual ~= tonumber(ARGV[gd + 2 * (i - 1)]) then return {ng + i, actual} end
end
for i = 1, nw do
  local actual = version_of(KEYS[2 + ng + nd + i])
  if actual ~= tonumber(ARGV[gw + 4 * (i - 1)]) then return {ng + nd + i, actual} end
end

local FIELDS = {'status', 'root', 'type', 'key', 'name'}
local function reindex(aid, entry)
  local meta = p .. 'x:meta'
  local before = redis.call('HGET', meta, aid)
  if before == entry or (not before and entry == '') then return end
  local old = before and cjson.decode(before) or nil
  local new = (entry ~= '') and cjson.decode(entry) or nil
  local moved = (not old) or (not new) or old[1] ~= new[1]
  for f = 1, 5 do
    local was = old and old[f + 1]
    local now = new and new[f + 1]
    if moved or was ~= now then
      if old then redis.call('ZREM', p .. 'x:' .. FIELDS[f] .. ':' .. was, aid) end
      if new then redis.call('ZADD', p .. 'x:' .. FIELDS[f] .. ':' .. now, new[1], aid) end
    end
  end
  -- Actions owing callbacks (entry element 7 is the callbacks state), a sparse index;
  -- an entry written by an older stepkernel has no state: it may have been indexed.
  local had = old ~= nil and old[7] == 'pending'
  local maybe = had or (old ~= nil and old[7] == nil)
  local now_after = new ~= nil and new[7] == 'pending'
  if not now_after and (maybe or not new) then
    redis.call('ZREM', p .. 'x:after', aid)
  elseif now_after and (moved or not had) then
    redis.call('ZADD', p .. 'x:after', new[1], aid)
  end
  if new then
    if moved then redis.call('ZADD', p .. 'x:all', new[1], aid) end
    redis.call('HSET', meta, aid, entry)
  else
    redis.call('ZREM', p .. 'x:all', aid)
    redis.call('HDEL', meta, aid)
  end
end

for i = 1, nd do
  redis.call('DEL', KEYS[2 + ng + i])
  local aid = ARGV[gd + 2 * (i - 1) + 1]
  if aid ~= '' then reindex(aid, '') end
end
for i = 1, nw do
  local o = gw + 4 * (i - 1)
  redis.call('SET', KEYS[2 + ng + nd + i], ARGV[o + 1])
  if ARGV[o + 2] ~= '' then reindex(ARGV[o + 2], ARGV[o + 3]) end
end
for i = 0, na - 1 do ack(ARGV[ga + i]) end
for i = 0, ne - 1 do
  local o = ge + 4 * i
  local id = ARGV[o]
  local mk = p .. 'm:' .. id
  if redis.call('EXISTS', mk) == 0 then
    redis.call('HSET', mk, 'd', ARGV[o + 3], 'at', ARGV[o + 1], 'a', ARGV[o + 2], 'n', 0)
    redis.call('ZADD', KEYS[2], ARGV[o + 1], id)
    redis.call('SADD', p .. 'qa:' .. ARGV[o + 2], id)
  end
end
return 0
""",
)

LEASE = Script(
    "lease",
    PRELUDE
    + """
-- ARGV[3..7]: now, lease expiry, worker, limit, mode ('due' or 'ids'); then the ids.
-- Returns {id, message text, deliveries, ...} for each message leased.
local now, till, worker, limit = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local out = {}
local granted = 0
local function grant(id)
  local mk = p .. 'm:' .. id
  local text = redis.call('HGET', mk, 'd')
  if not text then
    redis.call('ZREM', KEYS[2], id)
    return
  end
  local n = redis.call('HINCRBY', mk, 'n', 1)
  redis.call('HSET', mk, 'o', worker)
  redis.call('ZADD', KEYS[2], till, id)
  out[#out + 1] = id
  out[#out + 1] = text
  out[#out + 1] = n
  granted = granted + 1
end
if ARGV[7] == 'due' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do grant(id) end
else
  local t = tonumber(now)
  for i = 8, #ARGV do
    if granted >= limit then break end
    local due = redis.call('ZSCORE', KEYS[2], ARGV[i])
    if due and tonumber(due) <= t then grant(ARGV[i]) end
  end
end
return out
""",
)

ACK = Script(
    "ack",
    PRELUDE
    + ACK_LUA
    + """
-- ARGV[3..]: message ids
for i = 3, #ARGV do ack(ARGV[i]) end
return 0
""",
)

RELEASE = Script(
    "release",
    PRELUDE
    + """
-- ARGV[3]: worker; ARGV[4..]: message ids.  Only the holder's leases are given back.
for i = 4, #ARGV do
  local mk = p .. 'm:' .. ARGV[i]
  local state = redis.call('HMGET', mk, 'o', 'at')
  if state[1] == ARGV[3] then
    redis.call('HDEL', mk, 'o')
    redis.call('ZADD', KEYS[2], state[2], ARGV[i])
  end
end
return 0
""",
)

EXTEND = Script(
    "extend",
    PRELUDE
    + """
-- ARGV[3]: worker; ARGV[4]: new lease expiry; ARGV[5..]: message ids.
for i = 5, #ARGV do
  if redis.call('HGET', p .. 'm:' .. ARGV[i], 'o') == ARGV[3] then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[i])
  end
end
return 0
""",
)

NEXT_DUE = Script(
    "next_due",
    PRELUDE
    + """
-- Returns the smallest due time (as text), or nil for an empty queue.
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return first[2]
""",
)

COUNT = Script(
    "count",
    PRELUDE
    + """
-- ARGV[3..]: status index keys.  Returns each one's size, in order.
local out = {}
for i = 3, #ARGV do out[#out + 1] = redis.call('ZCARD', ARGV[i]) end
return out
""",
)

QUEUED = Script(
    "queued",
    PRELUDE
    + """
-- ARGV[3]: 'all' or 'action'; ARGV[4]: the action id.  Returns {id, text, ...}.
local ids
if ARGV[3] == 'action' then
  ids = redis.call('SMEMBERS', p .. 'qa:' .. ARGV[4])
else
  ids = redis.call('ZRANGE', KEYS[2], 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local text = redis.call('HGET', p .. 'm:' .. id, 'd')
  if text then
    out[#out + 1] = id
    out[#out + 1] = text
  end
end
return out
""",
)

FIND = Script(
    "find",
    PRELUDE
    + """
-- ARGV[3]: 'inter', 'union' or 'all'; ARGV[4]: created_at bound ('+inf', or '(<t>' for
-- strictly before t); ARGV[5..]: index keys (all: the one of every action).  Returns the
-- matching action ids ordered by created_at, then id (every index scores an action by
-- its created_at, so MAX keeps that score exactly).
if ARGV[3] == 'all' then
  return redis.call('ZRANGE', ARGV[5], '-inf', ARGV[4], 'BYSCORE')
end
local command = {(ARGV[3] == 'inter') and 'ZINTER' or 'ZUNION', #ARGV - 4}
for i = 5, #ARGV do command[#command + 1] = ARGV[i] end
command[#command + 1] = 'AGGREGATE'
command[#command + 1] = 'MAX'
if ARGV[4] == '+inf' then return redis.call(unpack(command)) end
command[#command + 1] = 'WITHSCORES'
local scored = redis.call(unpack(command))
local bound = tonumber(string.sub(ARGV[4], 2))
local out = {}
for i = 1, #scored, 2 do
  if tonumber(scored[i + 1]) < bound then out[#out + 1] = scored[i] end
end
return out
""",
)
