"""The Lua scripts of the Redis store's shared rate limits: token buckets and connection slots.

Each step is one script, atomic for every flusher on every machine (see
:mod:`mailqueue_core.ratelimit`), on the keys ``bucket:NAME`` and
``slots:NAME`` of :mod:`mailqueue_stores.redis.keys`.
:meth:`~mailqueue_stores.redis.client.RedisClient.take_token` and its
neighbours call them.
"""

from __future__ import annotations

__all__ = ["LIMIT_SCRIPTS"]

# KEYS: bucket. ARGV: rate, burst, now, ttl in ms. Returns the wait as a string.
TAKE_FROM_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tokens, updated = burst, now
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
if state[1] then
  tokens = tonumber(state[1])
  updated = tonumber(state[2])
end
-- Clocks of several machines never run a bucket backwards.
local elapsed = math.max(0, now - updated)
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'updated', string.format('%.17g', math.max(now, updated)))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return string.format('%.17g', wait)
"""

# KEYS: slots. ARGV: now, limit, expires, token, ttl in ms. Returns the token or nil.
ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return false end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return ARGV[4]
"""

# KEYS: slots. ARGV: token.
RELEASE_SLOT = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

LIMIT_SCRIPTS = {
    "take_token": TAKE_FROM_BUCKET,
    "acquire_slot": ACQUIRE_SLOT,
    "release_slot": RELEASE_SLOT,
}
