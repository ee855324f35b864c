"""The Lua scripts of the Redis store's console: browsing, single-record actions, the pause flag.

Registered with the queue's scripts (:mod:`mailqueue_stores.redis.scripts`),
whose rules they follow: every key they touch is declared, floats travel as
Python ``repr`` strings, stored values come back as stored. A page of
``browse`` is two calls: ``WALK`` reads ids from the indexes it declares, then
``READ_RECORDS`` declares those ids' keys and reads them, checking each id
against the indexes again (one settled in between is left out). Both are
``no-writes``: a read creates no key and changes nothing. Deleting frees
memory and making mail due helps a queue drain, so those are ``allow-oom``, as
is the pause flag: an operator may need to pause a full server.

Ties. Redis orders equal scores by the members' bytes, and a cursor is a
(score, id) pair. ``WALK`` finds where a cursor resumes by rank: ``ZRANK``
when the cursor's id is still there at its score, else a bisection over the
ranks of that score (``ZCOUNT`` gives its first and last), comparing ids byte
by byte (Lua's ``<`` on strings follows the server's locale, Redis's order
does not). Either costs O(log N) steps however many records share a due time,
where skipping the ties one by one would walk them all on every page.
"""

from __future__ import annotations

from mailqueue_stores.redis.wakeups import WAKE_LUA

__all__ = ["CONSOLE_SCRIPTS"]

# KEYS: held, then the indexes to walk (one; or dead and lost).
# ARGV: window ('le': scores <= now, 'gt': scores > now, 'all'), now, reverse ('1'/'0'),
# want, cap, skip held ids ('1'/'0'), cursor score ('' for none), cursor id, then per
# index '1' when a member equal to the cursor is still to come in it (the merge of
# dead and lost orders such a tie by index), else '0'.
# Returns per index {found, stopped}: found lists {id, score, ...} of at most `want`
# members from the cursor on, in the walk's direction; stopped is {id, score} of the
# last member examined when `cap` were examined before `want` were found and the
# window goes on (the next page starts there), else false.
WALK = """
local window, now, reverse = ARGV[1], ARGV[2], ARGV[3] == '1'
local want, cap, skip_held = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local after_score, after_id = ARGV[7], ARGV[8]
if skip_held and redis.call('ZCARD', KEYS[1]) == 0 then skip_held = false end
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- How many members sort before (score, id), and 1 when (score, id) is a member.
local function position(key, score, id)
  local at = redis.call('ZSCORE', key, id)
  if at and tonumber(at) == tonumber(score) then return redis.call('ZRANK', key, id), 1 end
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', key, '-inf', score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if before(redis.call('ZRANGE', key, mid, mid)[1], id) then lo = mid + 1 else hi = mid end
  end
  return lo, 0
end
local out = {}
for k = 2, #KEYS do
  local key = KEYS[k]
  -- The window is the ranks [a, b).
  local a, b = 0, redis.call('ZCARD', key)
  if window == 'le' then
    b = redis.call('ZCOUNT', key, '-inf', now)
  elseif window == 'gt' then
    a = redis.call('ZCOUNT', key, '-inf', now)
  end
  if after_score ~= '' then
    local rank, same = position(key, after_score, after_id)
    local tie_to_come = ARGV[7 + k] == '1'
    if reverse then
      if tie_to_come then rank = rank + same end
      b = math.min(b, rank)
    else
      if not tie_to_come then rank = rank + same end
      a = math.max(a, rank)
    end
  end
  local found, count, examined, last = {}, 0, 0, false
  local pos, step = a, 1
  if reverse then pos, step = b - 1, -1 end
  while count < want and examined < cap and pos >= a and pos < b do
    local n = want - count
    if skip_held then n = 2 * n end
    n = math.min(cap - examined, n)
    local from, to = pos, math.min(b - 1, pos + n - 1)
    if reverse then from, to = math.max(a, pos - n + 1), pos end
    local chunk = redis.call('ZRANGE', key, from, to, 'WITHSCORES')
    local first, final = 1, #chunk - 1
    if reverse then first, final = #chunk - 1, 1 end
    for i = first, final, 2 * step do
      if count >= want then break end
      local id = chunk[i]
      examined = examined + 1
      pos = pos + step
      last = {id, chunk[i + 1]}
      if not (skip_held and redis.call('ZSCORE', KEYS[1], id)) then
        found[#found + 1] = id
        found[#found + 1] = chunk[i + 1]
        count = count + 1
      end
    end
  end
  local stopped = false
  if count < want and pos >= a and pos < b then stopped = last end
  out[#out + 1] = {found, stopped}
end
return out
"""

# KEYS: due, held, created, dead, lost, then per id the keys of where to look.
# ARGV: per id the id and where to look: 'q' (queued: its live key), 'd' (dead: its
# dead-letter key), 'l' (lost: its loss key) or '*' (all three keys, looked at in
# that order).
# Returns a row per id found where it was looked for, fields as stored (false when
# absent, all false when the key is not a hash):
# {id, 'queued', due score, held score, created score (only when the created field is
#  not a number), key type, data, created, due, attempts, last_error},
# {id, 'dead', buried, data, created, due, attempts, last_error, reason} or
# {id, 'lost', found, created, due, reason}.
READ_RECORDS = """
local QUEUED = {'data', 'created', 'due', 'attempts', 'last_error'}
local DEAD = {'data', 'created', 'due', 'attempts', 'last_error', 'reason'}
local LOST = {'created', 'due', 'reason'}
-- HMGET answers nils for a missing key and an error for a key of another type;
-- only then does TYPE say which (a page of whole hashes costs no TYPE call).
local function read(key, names)
  local f = redis.pcall('HMGET', key, unpack(names))
  local fields, any = {}, false
  for j = 1, #names do
    fields[j] = (not f.err and f[j]) or false
    any = any or fields[j]
  end
  if any then return fields, 'hash' end
  return fields, redis.call('TYPE', key)['ok']
end
local function row(head, fields)
  for _, value in ipairs(fields) do head[#head + 1] = value end
  return head
end
local out = {}
local k = 5
for i = 1, #ARGV, 2 do
  local id, where = ARGV[i], ARGV[i + 1]
  local live, dead, lost = KEYS[k + 1], KEYS[k + 1], KEYS[k + 1]
  if where == '*' then dead, lost = KEYS[k + 2], KEYS[k + 3] end
  if where == '*' then k = k + 3 else k = k + 1 end
  local due, buried, found = false, false, false
  if where == 'q' or where == '*' then due = redis.call('ZSCORE', KEYS[1], id) end
  if not due and (where == 'd' or where == '*') then
    buried = redis.call('ZSCORE', KEYS[4], id)
  end
  if not due and not buried and (where == 'l' or where == '*') then
    found = redis.call('ZSCORE', KEYS[5], id)
  end
  if due then
    local fields, kind = read(live, QUEUED)
    local created = false
    if not tonumber(fields[2]) then created = redis.call('ZSCORE', KEYS[3], id) end
    local held = redis.call('ZSCORE', KEYS[2], id)
    out[#out + 1] = row({id, 'queued', due, held, created, kind}, fields)
  elseif buried then
    out[#out + 1] = row({id, 'dead', buried}, (read(dead, DEAD)))
  elseif found then
    out[#out + 1] = row({id, 'lost', found}, (read(lost, LOST)))
  end
end
return out
"""

# KEYS: due, held, created, dead, lost, then per id its live key, dead-letter key and
# loss key. ARGV: now, max clock skew, ids.
# An id whose claim still runs is left whole: by the caller's clock (held past now),
# or by the server's, within the skew, as a claim would refuse to take it over (see
# "Leases and clocks" in scripts). Anything else under the id goes: its keys and
# every index entry. Returns how many ids had something to delete.
DELETE = """
local t = redis.call('TIME')
local server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now, skew = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local live, dead, lost = KEYS[3 * i - 3], KEYS[3 * i - 2], KEYS[3 * i - 1]
  local held = redis.call('ZSCORE', KEYS[2], id)
  local running = held and tonumber(held) > now
  if held and not running and redis.call('TYPE', live)['ok'] == 'hash' then
    local f = redis.call('HMGET', live, 'token', 'server_expires')
    local until_ = tonumber(f[2])
    running = f[1] and until_ and server_now < until_ - skew
  end
  if not running then
    local gone = redis.call('DEL', live, dead, lost)
    for k = 1, 5 do gone = gone + redis.call('ZREM', KEYS[k], id) end
    if gone > 0 then n = n + 1 end
  end
end
return n
"""

# KEYS: due, held, wake, then per id its live key. ARGV: now, ids.
# Only a queued hash, unclaimed and due later than now, is changed: its due field
# and its score, nothing else. Returns how many were; any wakes the waiting flushers.
SEND_NOW = (
    WAKE_LUA
    + """
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id, key = ARGV[i], KEYS[i + 2]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) > now and not redis.call('ZSCORE', KEYS[2], id)
      and redis.call('TYPE', key)['ok'] == 'hash'
      and redis.call('HEXISTS', key, 'token') == 0 then
    redis.call('HSET', key, 'due', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    n = n + 1
  end
end
if n > 0 then wake(KEYS[3]) end
return n
"""
)

# KEYS: the pause flag, wake. ARGV: '1' to pause, '0' to resume.
# A resume wakes the waiting flushers: mail held by the pause may go now.
SET_PAUSED = (
    WAKE_LUA
    + """
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '1')
else
  redis.call('DEL', KEYS[1])
  wake(KEYS[2])
end
return 1
"""
)

#: name -> (Redis 7 script flags, body), as :data:`~mailqueue_stores.redis.scripts.SCRIPTS`.
CONSOLE_SCRIPTS: dict[str, tuple[str, str]] = {
    "walk": ("no-writes", WALK),
    "read_records": ("no-writes", READ_RECORDS),
    "delete": ("allow-oom", DELETE),
    "send_now": ("allow-oom", SEND_NOW),
    "set_paused": ("allow-oom", SET_PAUSED),
}
