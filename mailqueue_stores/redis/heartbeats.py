"""The Lua scripts of the Redis store's heartbeats: when each flusher was last active.

Two keys of :mod:`mailqueue_stores.redis.keys`: the hash ``beats`` (a
flusher's name -> when it was last active) and the sorted set ``beats:until``
(the name scored by when its note may be forgotten). Each beat replaces the
flusher's note, forgets up to 100 notes that expired by the beat's ``now``
and stretches both keys' TTL to the longest note's, so the two keys vanish
once no flusher has beaten for that long. Reading is one ``no-writes`` call.
"""

from __future__ import annotations

__all__ = ["HEARTBEAT_SCRIPTS"]

# KEYS: beats, beats:until. ARGV: flusher, now, expires, TTL in ms.
BEAT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 100)) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
local ttl = tonumber(ARGV[4])
for k = 1, 2 do
  if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
end
return 1
"""

# KEYS: beats, beats:until. ARGV: now.
# Returns {name, last active, ...} for the notes that expire after now.
BEATS = """
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')) do
  local at = redis.call('HGET', KEYS[1], name)
  if at then
    out[#out + 1] = name
    out[#out + 1] = at
  end
end
return out
"""

#: name -> (Redis 7 script flags, body), as :data:`~mailqueue_stores.redis.scripts.SCRIPTS`.
#: A beat is ``allow-oom``: a flusher draining a full server is still shown as active.
HEARTBEAT_SCRIPTS: dict[str, tuple[str, str]] = {
    "beat": ("allow-oom", BEAT),
    "beats": ("no-writes", BEATS),
}
