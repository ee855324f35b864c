"""The Redis store's sent log: its scripts, its records, and its pages.

The log is the sorted set ``sent`` of :mod:`~mailqueue_stores.redis.keys`,
whose members are ``SENT:ID`` (``SENT`` the ``repr`` of the send time) scored
by the send time, and one hash per member, ``s:SENT:ID``, holding the rest of
the :class:`~mailqueue_core.store.SentRecord`. A record logged twice (same id,
same time) has one member and one hash, so it is kept once; the same id sent
at two times (a lease lost, a message sent twice) is two records, as it
happened.

Equal scores have equal ``SENT`` prefixes, so Redis orders ties by id, byte
by byte: the order of ``(sent, id)``. A page reuses the console's walk
(``WALK`` in :mod:`~mailqueue_stores.redis.console`: resuming after a cursor
by rank or, when its record is gone, by bisection over the ties), then
``READ_SENT`` declares the walked members' hashes and reads them.

Expiry. Each hash gets a TTL of ``expires - sent`` when it is written (at
least a second), and ``sent`` a TTL as long as its longest-kept record's, so
nothing outlives its ``expires`` by more than the delay between sending and
logging, even when no flusher prunes any more. A member whose hash expired
stays in ``sent`` until :meth:`~mailqueue_stores.redis.RedisStore.prune_sent`
deletes it (every 10 minutes); a page skips such members, walking on for at
most :data:`ROUNDS` walks that grow by :data:`GROWTH`, and then returns what
it found (even nothing) with a cursor past them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailqueue_core.cursors import decode_cursor, encode_cursor
from mailqueue_core.store import Page, SentRecord
from mailqueue_core.text import get_logger

if TYPE_CHECKING:
    from mailqueue_stores.redis.client import RedisClient

__all__ = ["FIELDS", "SENT_SCRIPTS", "fields_of", "member", "page", "record_from_row", "ttl_ms"]

log = get_logger("mailqueue.stores.redis")

#: The fields of a logged record's hash, in the order rows carry them.
FIELDS = (
    "recipients",
    "subject",
    "message_id",
    "transport",
    "provider_id",
    "attempts",
    "created",
    "data",
)
#: Walks per page at most when expired members crowd the log, each GROWTH times the last.
ROUNDS = 3
GROWTH = 4
#: The longest TTL given (a century): Redis refuses an expiry time past its range.
MAX_TTL_MS = 100 * 365 * 86400 * 1000

# KEYS: sent, then per record its hash. ARGV: per record its member, send time, TTL in
# ms, the number n of fields, then n field/value pairs.
# A record whose hash is there already is left as it is (the first logging wins).
LOG_SENT = """
local a, k, longest = 1, 2, 0
while a <= #ARGV do
  local member, sent, ttl, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, a + 4, a + 3 + 2 * n))
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
  redis.call('ZADD', KEYS[1], sent, member)
  longest = math.max(longest, ttl)
  a, k = a + 4 + 2 * n, k + 1
end
if redis.call('PTTL', KEYS[1]) < longest then redis.call('PEXPIRE', KEYS[1], longest) end
return 1
"""

# KEYS: sent, then per member its hash. ARGV: how many records are needed, the fields,
# then the members. Returns {member, score, field values...} (false where absent) for
# each member still in `sent` whose hash holds its recipients, in ARGV order, stopping
# once enough were found.
READ_SENT = """
local need, nfields = tonumber(ARGV[1]), tonumber(ARGV[2])
local names = {unpack(ARGV, 3, 2 + nfields)}
local out = {}
for i = 3 + nfields, #ARGV do
  if #out >= need then break end
  local member = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score then
    local f = redis.pcall('HMGET', KEYS[i - nfields - 1], unpack(names))
    if not f.err and f[1] then
      local row = {member, score}
      for j = 1, nfields do row[j + 2] = f[j] or false end
      out[#out + 1] = row
    end
  end
end
return out
"""

# KEYS: sent, then per member its hash. ARGV: sent before, then the members.
# Deletes each member (and its hash) still in `sent` at a score before the bound;
# returns how many.
PRUNE_SENT = """
local before, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < before then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""

#: name -> (Redis 7 script flags, body), as :data:`~mailqueue_stores.redis.scripts.SCRIPTS`.
#: Logging has no flag: a full server refuses it (the flusher says the log missed a
#: batch) rather than grow; pruning frees memory.
SENT_SCRIPTS: dict[str, tuple[str, str]] = {
    "log_sent": ("", LOG_SENT),
    "read_sent": ("no-writes", READ_SENT),
    "prune_sent": ("allow-oom", PRUNE_SENT),
}


def member(sent: float, record_id: str) -> str:
    """The member of ``sent`` for the record ``record_id`` sent at ``sent``."""
    return f"{sent + 0.0!r}:{record_id}"  # + 0.0: -0.0 and 0.0 are one score, one prefix


def _parts(name: bytes) -> tuple[float, str]:
    sent, _, record_id = name.decode().partition(":")
    return float(sent), record_id


def ttl_ms(sent: float, expires: float) -> int:
    """How long a record sent at ``sent`` is kept to last until ``expires``, in ms."""
    seconds = expires - sent
    if not seconds > 1:  # NaN too: a record is kept a second at least
        return 1000
    return math.ceil(min(seconds * 1000, MAX_TTL_MS))


def fields_of(record: SentRecord) -> list[Any]:
    """The field/value pairs of a record's hash (its id and time are in its member)."""
    pairs: list[Any] = [
        "recipients",
        json.dumps(list(record.recipients)),
        "subject",
        record.subject,
        "transport",
        record.transport,
        "attempts",
        int(record.attempts),
        "created",
        repr(float(record.created)),
        "data",
        record.data,
    ]
    if record.message_id is not None:
        pairs += ["message_id", record.message_id]
    if record.provider_id is not None:
        pairs += ["provider_id", record.provider_id]
    return pairs


def record_from_row(row: Sequence[Any]) -> SentRecord | None:
    """The record of a row of ``READ_SENT``; None (logged) for a hash changed by hand."""
    name, _score, recipients, subject, message_id, transport, provider_id, *rest = row
    attempts, created, data = rest
    sent, record_id = _parts(name)
    try:
        listed = json.loads(recipients)
        if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
            raise ValueError("recipients is not a list of addresses")
        return SentRecord(
            id=record_id,
            sent=sent,
            recipients=tuple(listed),
            subject=(subject or b"").decode(),
            message_id=None if message_id is None else message_id.decode(),
            transport=(transport or b"").decode(),
            provider_id=None if provider_id is None else provider_id.decode(),
            attempts=int(attempts),
            created=float(created),
            data=data or b"",
        )
    except (ValueError, TypeError) as exc:
        log.warning(
            "redis store: sent log record %s (sent at %r) cannot be read and is left out: %s",
            record_id,
            sent,
            exc,
        )
        return None


def page(
    client: RedisClient, limit: int, cursor: str | None, newest_first: bool
) -> Page[SentRecord]:
    """One page of the log (see :meth:`mailqueue_core.store.Store.sent_log`)."""
    if limit < 1:
        raise ValueError(f"sent_log() needs a limit of at least 1, not {limit}")
    after = None if cursor is None else decode_cursor(cursor)
    position = None if after is None else (after[0], member(*after))
    found: list[SentRecord] = []
    size = limit + 1  # one more than the page, to know whether a next page exists
    for _ in range(ROUNDS):
        walked = client.walk_sent(position, size, newest_first)
        if walked:
            rows = client.read_sent([name for name, _ in walked], limit + 1 - len(found))
            found += [r for r in map(record_from_row, rows) if r is not None]
        if len(found) > limit:
            last = found[limit - 1]
            return Page(found[:limit], encode_cursor(last.sent, last.id))
        if len(walked) < size:
            return Page(found)
        name, score = walked[-1]
        position = (float(score), name.decode())
        size *= GROWTH
    return Page(found, encode_cursor(*_parts(walked[-1][0])))
