"""The Redis store's key layout: every key of one namespace.

For namespace ``NS`` every key starts with ``P`` = ``mailqueue:{NS}:``::

    P m:ID          hash    a live message: data, created, due, attempts,
                            last_error (absent for None); while claimed also token,
                            expires (the caller's clock) and server_expires (the
                            Redis server's clock; see "Leases and clocks" in scripts)
    P d:ID          hash    a dead letter: the same fields plus reason and buried
    P l:ID          hash    a lost message: what the indexes still knew of it
                            (created, due), reason and found
    P due           zset    live ids scored by due time; a claimed id is re-scored
                            at its lease expiry, so an abandoned claim comes back by itself
    P held          zset    claimed ids scored by lease expiry (counts in-flight mail)
    P created       zset    live ids scored by created time (age of the oldest ready)
    P dead          zset    dead ids scored by burial time
    P lost          zset    lost ids scored by when the loss was found
    P bucket:NAME   hash    a rate limit's tokens and last update; expires once full again
    P slots:NAME    zset    connection slot tokens scored by lease expiry; expires with
                            the last lease
    P paused        string  "1" while delivery is paused (absent otherwise)
    P sent          zset    the sent log: members SENT:ID (SENT the ``repr`` of the send
                            time) scored by send time; expires with its longest-kept record
    P s:SENT:ID     hash    one logged record: recipients (a JSON list), subject,
                            message_id, transport, provider_id (absent for None),
                            attempts, created, data; expires when the record may go
    P beats         hash    each flusher's name -> when it was last active
    P beats:until   zset    each flusher's name scored by when its note may be forgotten
    P wake          stream  its newest entry: the last time mail may have become due
                            (:mod:`~mailqueue_stores.redis.wakeups`); expires an hour after it

Redis Cluster hashes only what stands between a key's first braces, so every
key of a namespace, whatever follows the prefix, lives in the slot of
``{NS}``: one shard, and one slot for every script (see "Declared keys" in
:mod:`mailqueue_stores.redis.scripts`). The namespace therefore holds no brace.
"""

from __future__ import annotations

__all__ = ["RedisKeys"]


class RedisKeys:
    """Key names for one namespace."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"mailqueue:{{{namespace}}}:"
        self.live_prefix = self.prefix + "m:"
        self.dead_prefix = self.prefix + "d:"
        self.lost_prefix = self.prefix + "l:"
        self.due = self.prefix + "due"
        self.held = self.prefix + "held"
        self.created = self.prefix + "created"
        self.dead = self.prefix + "dead"
        self.lost = self.prefix + "lost"
        self.paused = self.prefix + "paused"
        self.sent = self.prefix + "sent"
        self.beats = self.prefix + "beats"
        self.beats_until = self.prefix + "beats:until"
        self.wake = self.prefix + "wake"

    def live(self, mid: str) -> str:
        return self.live_prefix + mid

    def dead_letter(self, mid: str) -> str:
        return self.dead_prefix + mid

    def lost_letter(self, mid: str) -> str:
        return self.lost_prefix + mid

    def sent_record(self, member: str) -> str:
        """The key of the logged record whose member of ``sent`` is ``member``."""
        return f"{self.prefix}s:{member}"

    def bucket(self, name: str) -> str:
        return f"{self.prefix}bucket:{name}"

    def slots(self, name: str) -> str:
        return f"{self.prefix}slots:{name}"
