"""The Lua scripts of the Redis store, and the key layout they work on.

Every state change of the queue is one of these scripts, so it is one atomic
step on the server. All keys of one namespace share the hash tag ``{NS}``, so
they live in one Cluster slot and a script may touch any of them.

Key layout for namespace ``NS`` (``P`` = ``mailqueue:{NS}:``)::

    P m:ID      hash    a live message: data, created, due, attempts,
                        last_error (absent for None), token and expires (while claimed)
    P d:ID      hash    a dead letter: the same fields plus reason and buried
    P due       zset    live ids scored by due time; a claimed id is re-scored
                        at its lease expiry, so an abandoned claim comes back by itself
    P held      zset    claimed ids scored by lease expiry (counts in-flight mail)
    P created   zset    live ids scored by created time (age of the oldest ready)
    P dead      zset    dead ids scored by burial time

Floats travel as Python ``repr`` strings and are stored as given, so times
round-trip exactly. Scripts return stored strings rather than Lua numbers,
which Redis would truncate to integers.
"""

from __future__ import annotations

from mailqueue_stores.redis_limits import LIMIT_SCRIPTS

__all__ = ["SCRIPTS", "RedisKeys"]


class RedisKeys:
    """Key names for one namespace."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"mailqueue:{{{namespace}}}:"
        self.live_prefix = self.prefix + "m:"
        self.dead_prefix = self.prefix + "d:"
        self.due = self.prefix + "due"
        self.held = self.prefix + "held"
        self.created = self.prefix + "created"
        self.dead = self.prefix + "dead"

    def live(self, mid: str) -> str:
        return self.live_prefix + mid

    def dead_letter(self, mid: str) -> str:
        return self.dead_prefix + mid


# KEYS: due, created. ARGV: live prefix, dead prefix, then per record
# id, data, created, due, attempts, has_error ("1"/"0"), error.
ENQUEUE = """
for i = 3, #ARGV, 7 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 0 and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('HSET', key, 'data', ARGV[i + 1], 'created', ARGV[i + 2],
               'due', ARGV[i + 3], 'attempts', ARGV[i + 4])
    if ARGV[i + 5] == '1' then redis.call('HSET', key, 'last_error', ARGV[i + 6]) end
    redis.call('ZADD', KEYS[1], ARGV[i + 3], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 2], id)
  end
end
return 1
"""

# KEYS: due, held. ARGV: live prefix, now, limit, expires, token prefix.
CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {}
for i, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local token = ARGV[5] .. i
  redis.call('HSET', key, 'token', token, 'expires', ARGV[4])
  redis.call('ZADD', KEYS[1], ARGV[4], id)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  local f = redis.call('HMGET', key, 'data', 'created', 'due', 'attempts', 'last_error')
  out[#out + 1] = {id, token, f[1], f[2], f[3], f[4], f[5]}
end
return out
"""

# KEYS: message, due, held, created. ARGV: id, token.
ACK = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

# KEYS: message, due, held. ARGV: id, token, due, has_error, error.
REQUEUE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'token', 'expires')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'due', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'last_error')
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: message, due, held. ARGV: id, token.
RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'token', 'expires')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'due'), ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: message, dead letter, due, held, created, dead. ARGV: id, token, error, now.
BURY = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'token', 'expires')
redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'reason', ARGV[3], 'buried', ARGV[4])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
return 1
"""

# KEYS: dead. ARGV: dead prefix, now, then per record as ENQUEUE.
ADD_DEAD = """
for i = 3, #ARGV, 7 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  local reason = ''
  if ARGV[i + 5] == '1' then reason = ARGV[i + 6] end
  redis.call('DEL', key)
  redis.call('HSET', key, 'data', ARGV[i + 1], 'created', ARGV[i + 2], 'due', ARGV[i + 3],
             'attempts', ARGV[i + 4], 'reason', reason, 'buried', ARGV[2])
  if ARGV[i + 5] == '1' then redis.call('HSET', key, 'last_error', ARGV[i + 6]) end
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return 1
"""

# KEYS: due, held, created, dead. ARGV: live prefix, dead prefix, now, ids...
REVIVE = """
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('EXISTS', ARGV[2] .. id) == 1 then
    redis.call('RENAME', ARGV[2] .. id, key)
    redis.call('HDEL', key, 'reason', 'buried', 'token', 'expires')
    redis.call('HSET', key, 'created', ARGV[3], 'due', ARGV[3], 'attempts', '0')
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], ARGV[3], id)
    redis.call('ZREM', KEYS[4], id)
    n = n + 1
  end
end
return n
"""

# KEYS: dead. ARGV: dead prefix, buried before, at most this many.
PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""

# KEYS: dead. ARGV: dead prefix, stop index (-1 for all).
DEAD_LETTERS = """
local ids = redis.call('ZRANGE', KEYS[1], 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'data', 'created', 'due', 'attempts',
                       'last_error', 'reason', 'buried')
  out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
end
return out
"""

# KEYS: due, held, created, dead. ARGV: now, how many old messages to look at.
# A message is ready when its score in `due` is <= now (an expired lease
# included). The oldest ready one is found by walking `created` from the
# oldest; when more than ARGV[2] older messages are held or scheduled, the
# walk stops and the oldest created among the first ARGV[2] ready ones is
# reported instead, so the cost stays bounded (the documented approximation).
STATS = """
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local later = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
local dead = redis.call('ZCARD', KEYS[4])
local oldest = false
if ready > 0 then
  local walked = redis.call('ZRANGE', KEYS[3], 0, cap - 1, 'WITHSCORES')
  for i = 1, #walked, 2 do
    local due = redis.call('ZSCORE', KEYS[1], walked[i])
    if due and tonumber(due) <= now then
      oldest = walked[i + 1]
      break
    end
  end
  if not oldest then
    local best = nil
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, cap)) do
      local created = redis.call('ZSCORE', KEYS[3], id)
      if created and (best == nil or tonumber(created) < tonumber(best)) then best = created end
    end
    oldest = best or false
  end
end
return {ready, later - in_flight, in_flight, dead, oldest}
"""

SCRIPTS: dict[str, str] = {
    "enqueue": ENQUEUE,
    "claim": CLAIM,
    "ack": ACK,
    "requeue": REQUEUE,
    "release": RELEASE,
    "bury": BURY,
    "add_dead": ADD_DEAD,
    "revive": REVIVE,
    "purge": PURGE,
    "dead_letters": DEAD_LETTERS,
    "stats": STATS,
}

# Rate limits live in a module of their own; their scripts are registered with these.
SCRIPTS.update(LIMIT_SCRIPTS)
