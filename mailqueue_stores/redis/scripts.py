"""The Lua scripts of the Redis store.

Every state change of the queue is one of these scripts, so it is one atomic
step on the server. The keys they work on are described in
:mod:`mailqueue_stores.redis.keys`; each script's KEYS and ARGV are listed
above it, and :class:`~mailqueue_stores.redis.client.RedisClient` lays them out.

Declared keys. Every key a script touches comes to it in KEYS, so Redis and
a Cluster client know them before it runs: a Cluster routes the call by them
and, while their slot is being moved, answers ``ASK`` or ``TRYAGAIN`` before
anything runs. A script that must see a message's hash takes its key in
KEYS, one per message (enqueue, withdraw, add to the dead letters, revive,
logging sent mail); one that lists or purges what an index holds reads the
ids first, in a separate call, and the script checks each id again against
the index, so an id settled in between is skipped (the dead letters, purge,
the leases of ``stats``, the console's pages:
:mod:`~mailqueue_stores.redis.console`, and the sent log's pages and prune:
:mod:`~mailqueue_stores.redis.sentlog`).

The one exception is the claim: it reads the due ids from ``due`` and builds
their message keys (and the dead-letter or loss key of a damaged one) from the
prefixes in ARGV. Reading first in a separate call would let two flushers
pick the same ids and take them in turn, and claiming must cost one round
trip. It is safe on Cluster because every key it builds is the namespace
prefix ``mailqueue:{NS}:`` and a suffix: Redis hashes only the ``{NS}`` tag,
so the key lives in the slot of the declared ones, the one slot a flagged
script may touch. While a reshard moves that slot, a message key already gone
to the new node stops the claim where it reaches it (``StoreUnavailable``,
"slot on the move"); what it claimed before that point comes back when the
lease runs out.

Wake-ups. The scripts that may make mail due now (enqueue, requeue, release,
revive, and the console's send now and resume) end with ``wake`` on the
declared key ``wake``, and the claim answers the newest wake-up it saw: see
:mod:`~mailqueue_stores.redis.wakeups`.

Floats travel as Python ``repr`` strings and are stored as given, so times
round-trip exactly. Scripts return stored strings rather than Lua numbers,
which Redis would truncate to integers.

Damaged records. A claim never trusts what it finds under ``m:ID``: an id
whose key is gone is dropped from the indexes and reported in ``lost``; a key
of another type (an operator's ``SET``) is moved to the dead letters with the
reason; a hash is claimed whatever its fields hold, and the store reads the
fields in Python, where a missing or malformed one becomes ``Record.damage``.
The settling scripts (ack, requeue, release, bury) check the key's type and
take the claim's own values for the fields they write, so they work on a
damaged claim too. Nothing here writes to ``m:ID`` unless it is a hash already.

Full servers (``maxmemory`` reached). Scripts carry Redis 7 flags in a
``#!lua`` first line. Enqueue has none, so a full server refuses it before it
runs (``OOM``: the store says ``StoreUnavailable``). Everything that delivers
or frees memory is ``allow-oom``, so a full queue still drains; reads are
``no-writes``. A flagged script loses the cross-slot allowance that unflagged
scripts keep, so the keys the claim builds must hash to the declared keys'
slot: the ``{NS}`` tag gives exactly that. Redis
before 7 does not know the ``#!`` line; :func:`script_source` leaves it out
there, and such a server refuses the claim script's first write when full.

Leases and clocks. The caller's ``now`` decides due times and when a lease
runs out, as the store contract says; the claim script also reads the server's
clock (``TIME``) and writes ``server_expires``. A lease is taken over only when
the caller's clock says it has run out *and* the server's clock agrees within
``max_clock_skew`` seconds. So a flusher whose clock runs ahead cannot take a
live claim, nor can a server whose clock jumped after a failover; the skew
allowance lets tests move ``now`` past a short lease without waiting, and is
the most a lease can be cut short by a clock that is off.
"""

from __future__ import annotations

from mailqueue_stores.redis.console import CONSOLE_SCRIPTS
from mailqueue_stores.redis.heartbeats import HEARTBEAT_SCRIPTS
from mailqueue_stores.redis.limits import LIMIT_SCRIPTS
from mailqueue_stores.redis.sentlog import SENT_SCRIPTS
from mailqueue_stores.redis.wakeups import NEWEST_WAKE_LUA, WAKE_LUA

__all__ = ["SCRIPTS", "script_source", "supports_flags"]

# KEYS: due, created, wake, then per record its live key and its dead-letter key.
# ARGV: per record id, data, created, due, attempts, has_error ("1"/"0"), error.
# Returns the ids it added (not those already present), for a withdrawal.
ENQUEUE = (
    WAKE_LUA
    + """
local added = {}
for r = 0, #ARGV / 7 - 1 do
  local a, live = r * 7, KEYS[4 + 2 * r]
  local id = ARGV[a + 1]
  if redis.call('EXISTS', live, KEYS[5 + 2 * r]) == 0 then
    redis.call('HSET', live, 'data', ARGV[a + 2], 'created', ARGV[a + 3],
               'due', ARGV[a + 4], 'attempts', ARGV[a + 5])
    if ARGV[a + 6] == '1' then redis.call('HSET', live, 'last_error', ARGV[a + 7]) end
    redis.call('ZADD', KEYS[1], ARGV[a + 4], id)
    redis.call('ZADD', KEYS[2], ARGV[a + 3], id)
    added[#added + 1] = id
  end
end
if #added > 0 then wake(KEYS[3]) end
return added
"""
)

# KEYS: due, created, then per id its live key. ARGV: ids.
# Takes back what an enqueue added when the replicas did not confirm it, unless
# a flusher already claimed it.
WITHDRAW = """
local n = 0
for i = 1, #ARGV do
  local key = KEYS[2 + i]
  if redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HEXISTS', key, 'token') == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: due, held, created, dead, lost, wake.
# ARGV: live prefix, dead prefix, lost prefix, now, limit, expires, token prefix,
# lease, max clock skew.
# The one script that builds keys (prefix .. id, for ids read from `due`): see
# "Declared keys" above for why, and why it is safe on a Cluster.
# Returns {claims, troubles, newest wake-up}: a claim is {id, token, data, created,
# due, attempts, last_error, created score, due score} (fields as stored, false
# when absent); a trouble is {id, "lost"} or {id, "buried", key type}; the newest
# wake-up is the id of the wake stream's newest entry (see wakeups).
CLAIM = (
    NEWEST_WAKE_LUA
    + """
local t = redis.call('TIME')
local server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[5])
local skew = tonumber(ARGV[9])
local server_expires = string.format('%.6f', server_now + tonumber(ARGV[8]))
local out, troubles, taken = {}, {}, {}
local function kind_of(key, f)
  if f.err then return redis.call('TYPE', key)['ok'] end
  for i = 1, 7 do if f[i] then return 'hash' end end
  return redis.call('TYPE', key)['ok']  -- nothing we know of: gone, or a stranger hash
end
-- Ids left in the range (held by the server's clock, or claimed by this call
-- with a lease of 0) are stepped over; everything else leaves the range.
local offset = 0
while #out < limit do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'WITHSCORES',
                          'LIMIT', offset, limit - #out)
  if #page == 0 then break end
  for p = 1, #page, 2 do
    local id, due_score = page[p], page[p + 1]
    local key = ARGV[1] .. id
    local f = redis.pcall('HMGET', key, 'data', 'created', 'due', 'attempts', 'last_error',
                          'token', 'server_expires')
    local kind = kind_of(key, f)
    if taken[id] then
      offset = offset + 1
    elseif kind == 'hash' then
      local until_ = tonumber(f[7])
      if f[6] and until_ and server_now < until_ - skew then
        offset = offset + 1
      else
        local token = ARGV[7] .. (#out + 1)
        local created_score = false
        if not tonumber(f[2]) then created_score = redis.call('ZSCORE', KEYS[3], id) end
        redis.call('HSET', key, 'token', token, 'expires', ARGV[6],
                   'server_expires', server_expires)
        redis.call('ZADD', KEYS[1], ARGV[6], id)
        redis.call('ZADD', KEYS[2], ARGV[6], id)
        taken[id] = true
        out[#out + 1] = {id, token, f[1], f[2], f[3], f[4], f[5], created_score, due_score}
      end
    else
      local created_score = redis.call('ZSCORE', KEYS[3], id) or due_score
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
      if kind == 'none' then
        redis.call('DEL', ARGV[3] .. id)
        redis.call('HSET', ARGV[3] .. id, 'created', created_score, 'due', due_score,
                   'found', ARGV[4], 'reason', 'its record was gone when it was claimed')
        redis.call('ZADD', KEYS[5], ARGV[4], id)
        troubles[#troubles + 1] = {id, 'lost'}
      else
        local data = ''
        if kind == 'string' then data = redis.call('GET', key) end
        local reason = 'damaged record: its key holds a ' .. kind .. ', not a hash'
        redis.call('DEL', key)
        redis.call('DEL', ARGV[2] .. id)
        redis.call('HSET', ARGV[2] .. id, 'data', data, 'created', created_score,
                   'due', due_score, 'attempts', '0', 'last_error', reason,
                   'reason', reason, 'buried', ARGV[4])
        redis.call('ZADD', KEYS[4], ARGV[4], id)
        troubles[#troubles + 1] = {id, 'buried', kind}
      end
    end
  end
end
return {out, troubles, newest_wake(KEYS[6])}
"""
)

# The settling scripts answer 0 (LeaseLost) unless KEYS[1] is a hash holding ARGV[2].
_HOLDS = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
"""

# KEYS: message, due, held, created. ARGV: id, token.
ACK = (
    _HOLDS
    + """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""
)

# KEYS: message, due, held, wake. ARGV: id, token, due, attempts, has_error, error.
# Every requeue wakes the waiting flushers, as the contract says: one for later
# costs each of them a claim that finds nothing.
REQUEUE = (
    WAKE_LUA
    + _HOLDS
    + """
redis.call('HDEL', KEYS[1], 'token', 'expires', 'server_expires')
redis.call('HSET', KEYS[1], 'due', ARGV[3], 'attempts', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'last_error')
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
wake(KEYS[4])
return 1
"""
)

# KEYS: message, due, held, wake. ARGV: id, token, the due time the claim reported.
RELEASE = (
    WAKE_LUA
    + _HOLDS
    + """
redis.call('HDEL', KEYS[1], 'token', 'expires', 'server_expires')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
wake(KEYS[4])
return 1
"""
)

# KEYS: message, dead letter, due, held, created, dead.
# ARGV: id, token, error, now, attempts, created, due (the last three as claimed).
BURY = (
    _HOLDS
    + """
redis.call('HDEL', KEYS[1], 'token', 'expires', 'server_expires')
redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'reason', ARGV[3], 'buried', ARGV[4],
           'attempts', ARGV[5], 'created', ARGV[6], 'due', ARGV[7])
if redis.call('HEXISTS', KEYS[1], 'data') == 0 then redis.call('HSET', KEYS[1], 'data', '') end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
return 1
"""
)

# KEYS: dead, then per record its dead-letter key. ARGV: now, then per record as ENQUEUE.
ADD_DEAD = """
for r = 0, (#ARGV - 1) / 7 - 1 do
  local a, key = 1 + r * 7, KEYS[2 + r]
  local reason = ''
  if ARGV[a + 6] == '1' then reason = ARGV[a + 7] end
  redis.call('DEL', key)
  redis.call('HSET', key, 'data', ARGV[a + 2], 'created', ARGV[a + 3], 'due', ARGV[a + 4],
             'attempts', ARGV[a + 5], 'reason', reason, 'buried', ARGV[1])
  if ARGV[a + 6] == '1' then redis.call('HSET', key, 'last_error', ARGV[a + 7]) end
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[a + 1])
end
return 1
"""

# KEYS: due, held, created, dead, wake, then per id its live key and its dead-letter key.
# ARGV: now, ids.
# A dead letter whose id is queued again, or that is not a hash, stays where it is.
REVIVE = (
    WAKE_LUA
    + """
local n = 0
for j = 1, #ARGV - 1 do
  local id, live, dead = ARGV[1 + j], KEYS[4 + 2 * j], KEYS[5 + 2 * j]
  if redis.call('TYPE', dead)['ok'] == 'hash' and redis.call('EXISTS', live) == 0 then
    redis.call('RENAME', dead, live)
    redis.call('HDEL', live, 'reason', 'buried', 'token', 'expires', 'server_expires')
    redis.call('HSET', live, 'created', ARGV[1], 'due', ARGV[1], 'attempts', '0')
    if redis.call('HEXISTS', live, 'data') == 0 then redis.call('HSET', live, 'data', '') end
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    redis.call('ZREM', KEYS[4], id)
    n = n + 1
  end
end
if n > 0 then wake(KEYS[5]) end
return n
"""
)

# KEYS: an index (dead or lost), then per id its hash. ARGV: before, ids.
# The ids were read from the index by an earlier call: one that left it, or
# was buried again since, stays. Returns how many were purged.
PURGE = """
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: an index (dead or lost), then per id its hash.
# ARGV: how many fields, the field names, then the ids (read from the index by
# an earlier call, oldest first).
# Returns a row per id still in the index: {id, score, fields as stored} (false
# when absent, all false when the key is not a hash).
READ_LETTERS = """
local count = tonumber(ARGV[1])
local fields = {unpack(ARGV, 2, count + 1)}
local out = {}
for i = count + 2, #ARGV do
  local id, key = ARGV[i], KEYS[i - count]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score then
    local f = {}
    if redis.call('TYPE', key)['ok'] == 'hash' then
      f = redis.call('HMGET', key, unpack(fields))
    end
    local row = {id, score}
    for j = 1, count do row[#row + 1] = f[j] or false end
    out[#out + 1] = row
  end
end
return out
"""

# KEYS: due, held, created, dead, lost, then the live key of each id in ARGV.
# ARGV: now, how many old messages to look at, max clock skew, then the ids
# whose lease had run out by the caller's clock when an earlier call read `held`.
# Ready: due by now and not held. Held: in flight while the caller's clock or
# the server's (within the skew) says its lease runs; stuck after that. An id
# whose lease ran out by the caller's clock but was not in ARGV was claimed
# after that read, so its lease runs by the server's clock: in flight. The
# oldest ready one is found by walking `created` from the oldest; when more
# than ARGV[2] older messages are held or scheduled, the walk stops and the
# oldest created among the first ARGV[2] ready ones is reported instead, so
# the cost stays bounded (the documented approximation).
STATS = """
local t = redis.call('TIME')
local server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local skew = tonumber(ARGV[3])
local key_of = {}
for i = 4, #ARGV do key_of[ARGV[i]] = KEYS[i + 2] end
local due_by_now = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local later = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local held_later = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local held_by_server, stuck = 0, 0
for _, id in ipairs(expired) do
  local until_ = math.huge
  if key_of[id] then
    until_ = redis.pcall('HGET', key_of[id], 'server_expires')
    until_ = type(until_) == 'string' and tonumber(until_)
  end
  if until_ and server_now < until_ - skew then
    held_by_server = held_by_server + 1
  else
    stuck = stuck + 1
  end
end
local ready = due_by_now - #expired
local oldest = false
local function is_ready(id)
  local due = redis.call('ZSCORE', KEYS[1], id)
  return due and tonumber(due) <= now and not redis.call('ZSCORE', KEYS[2], id)
end
if ready > 0 then
  local walked = redis.call('ZRANGE', KEYS[3], 0, cap - 1, 'WITHSCORES')
  for i = 1, #walked, 2 do
    if is_ready(walked[i]) then
      oldest = walked[i + 1]
      break
    end
  end
  if not oldest then
    local best = nil
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, cap)) do
      local created = redis.call('ZSCORE', KEYS[3], id)
      if created and is_ready(id) and (best == nil or tonumber(created) < tonumber(best)) then
        best = created
      end
    end
    oldest = best or false
  end
end
return {ready, later - held_later, held_later + held_by_server, stuck,
        redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), oldest}
"""

#: name -> (Redis 7 script flags, body). ``""`` declares no flags (a write
#: refused when the server is full); ``None`` would mean no ``#!`` line at all.
SCRIPTS: dict[str, tuple[str, str]] = {
    "enqueue": ("", ENQUEUE),
    "withdraw": ("allow-oom", WITHDRAW),
    "claim": ("allow-oom", CLAIM),
    "ack": ("allow-oom", ACK),
    "requeue": ("allow-oom", REQUEUE),
    "release": ("allow-oom", RELEASE),
    "bury": ("allow-oom", BURY),
    "add_dead": ("allow-oom", ADD_DEAD),
    "revive": ("allow-oom", REVIVE),
    "purge": ("allow-oom", PURGE),
    "read_letters": ("no-writes", READ_LETTERS),
    "stats": ("no-writes", STATS),
}

# Rate limits live in a module of their own; their scripts are registered with
# these, and a flusher draining a full server still needs them.
SCRIPTS.update({name: ("allow-oom", body) for name, body in LIMIT_SCRIPTS.items()})
# So do the console's (browse, get, delete, send now, pause), flags and all.
SCRIPTS.update(CONSOLE_SCRIPTS)
# And what the store keeps for the console's overview: the sent log and heartbeats.
SCRIPTS.update(SENT_SCRIPTS)
SCRIPTS.update(HEARTBEAT_SCRIPTS)


def supports_flags(version: str) -> bool:
    """Whether a server reporting ``redis_version`` reads ``#!lua flags=`` lines."""
    try:
        return int(version.split(".", 1)[0]) >= 7
    except ValueError:
        return True  # a server that hides its version: assume a current one


def script_source(name: str, flags_supported: bool = True) -> str:
    """The source of script ``name``, with its ``#!lua`` line where the server reads it."""
    flags, body = SCRIPTS[name]
    body = body.lstrip()
    if not flags_supported:
        return body
    return f"#!lua flags={flags}\n{body}" if flags else f"#!lua\n{body}"
