"""Shared rate limits for the Redis store: token buckets and connection slots.

Each step is one Lua script, atomic for every flusher on every machine (see
:mod:`mailqueue_core.ratelimit`). Keys, beside the queue's (``P`` =
``mailqueue:{NS}:``)::

    P bucket:NAME   hash    tokens, updated; expires once it would be full again
    P slots:NAME    zset    slot tokens scored by lease expiry; expires with the last lease
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Protocol

__all__ = ["LIMIT_SCRIPTS", "RedisLimits"]

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


class _Client(Protocol):
    def run(self, script: str, keys: list[str], args: list[Any]) -> Any: ...


class _Keys(Protocol):
    prefix: str


class _RedisStore(Protocol):
    keys: _Keys
    _client: _Client


class RedisLimits:
    """Mixed into :class:`~mailqueue_stores.redis.RedisStore`."""

    def take_token(self: _RedisStore, bucket: str, rate: float, burst: float, now: float) -> float:
        ttl_ms = math.ceil((burst / rate + 60) * 1000)
        wait = self._client.run(
            "take_token",
            [f"{self.keys.prefix}bucket:{bucket}"],
            [repr(float(rate)), repr(float(burst)), repr(float(now)), ttl_ms],
        )
        return float(wait)

    def acquire_slot(
        self: _RedisStore, name: str, limit: int, lease: float, now: float
    ) -> str | None:
        token = uuid.uuid4().hex
        got = self._client.run(
            "acquire_slot",
            [f"{self.keys.prefix}slots:{name}"],
            [repr(float(now)), limit, repr(float(now + lease)), token, math.ceil(lease * 1000)],
        )
        return None if got is None else token

    def release_slot(self: _RedisStore, name: str, token: str) -> None:
        self._client.run("release_slot", [f"{self.keys.prefix}slots:{name}"], [token])
