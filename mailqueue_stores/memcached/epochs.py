"""Finding out that a memcached server was emptied: epoch markers, and what they tell.

Each server holds an epoch marker (``epoch``, :class:`Epoch`: a random token
and when it was made). A server that restarts, is flushed or evicts the marker
comes back without it, and the next client to look makes a new one: a changed
token means the server was emptied. With several servers, each server's journal
on its witness is kept per pair of epochs (the server's and the witness's), and
the journal of a pair that is gone names, by id, what was lost (see
:mod:`mailqueue_stores.memcached.journal`). With one server nothing outlives a
restart, so a client that saw the old token reports the count it last saw queued.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

from mailqueue_stores.memcached.buckets import proven_by_low
from mailqueue_stores.memcached.codec import Stored, as_int, decode_or_none, number, stored, text
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.shard import Shard


@dataclasses.dataclass(frozen=True, kw_only=True)
class Epoch(Stored):
    """A server's epoch marker."""

    token: str = stored("token", text)
    created: float | None = stored("created", number, required=False)
    """When it was made (the caller's clock): the low cursor's fallback."""

    @classmethod
    def read(cls, raw: bytes) -> Epoch:
        """The marker stored as ``raw``; junk written over it is an epoch of its own.

        So a marker overwritten by something else shows as a change, and the
        journals are checked against the server.
        """
        value = decode_or_none(raw)
        if isinstance(value, dict) and text(value.get("token")):
            created = value.get("created")
            return cls(token=value["token"], created=created if number(created) else None)
        return cls(token="x" + hashlib.sha256(raw).hexdigest()[:15])


class EpochWatch:
    """Every server's epoch, as this client last saw it, checked at each call."""

    def __init__(self, shards: list[Shard], keys: Keys) -> None:
        self._shards = shards
        self._keys = keys
        #: One server only: its epoch token as this client last saw it.
        self._tokens: dict[str, str] = {}

    def check(self, now: float, *, audit: bool | None, from_caller: bool = True) -> float | None:
        """Read every server's epoch marker; report what an emptied server took.

        ``audit``: None to only keep the journals' epochs listed (enqueue, in a
        web request), False to walk a journal of an emptied server unless this
        client already did, True to walk it in any case. ``from_caller``: False
        when ``now`` is a server's clock, which then stamps reports but is never
        written as a marker's ``created`` (the next call with a caller's time
        writes it). Returns the latest time the servers' low cursors prove has
        passed (None when none has one): a write is never indexed behind it.
        """
        shards, keys = self._shards, self._keys
        found = []
        for i, shard in enumerate(shards):
            watched = shards[i - 1]  # the server this one is the witness of
            wanted = [keys.epoch, keys.live, keys.low, keys.journals(watched.name)]
            found.append(shard.client.get_many(wanted))
        made = now if from_caller else None
        tokens = [
            self._epoch(shard, seen, made) for shard, seen in zip(shards, found, strict=True)
        ]
        lows = [low for seen in found if (low := as_int(seen.get(keys.low))) is not None]
        if len(shards) == 1:
            self._watch_alone(shards[0], found[0], tokens[0], now)
        else:
            for i, shard in enumerate(shards):
                j = (i + 1) % len(shards)
                self._sync(shard, f"{tokens[i]}.{tokens[j]}", found[j], now, audit)
        return proven_by_low(max(lows)) if lows else None

    def _sync(
        self,
        shard: Shard,
        epoch: str,
        on_witness: dict[str, bytes],
        now: float,
        audit: bool | None,
    ) -> None:
        """List ``shard``'s journal under ``epoch`` (a new ring after either server is emptied)."""
        assert shard.journal is not None
        old = shard.journal.sync(epoch, on_witness.get(self._keys.journals(shard.name)))
        if old is None:
            shard.rejournal(now)
        elif audit is not None:
            shard.journal.audit(old, shard.client, now, again=audit)

    def _epoch(self, shard: Shard, seen: dict[str, bytes], now: float | None) -> str:
        """The server's epoch token, made when it has none.

        A marker made without a time (or junk written over it) gets one from
        the first call that has one: the low cursor's fallback depends on it.
        """
        key = self._keys.epoch
        raw = seen.get(key)
        if raw is None:
            fresh = Epoch(token=secrets.token_hex(8), created=now).encode()
            made = shard.client.add(key, fresh)
            raw = fresh if made else shard.client.get(key) or fresh
        epoch = Epoch.read(raw)
        if epoch.created is None and now is not None:
            epoch = Epoch(token=epoch.token, created=now)
            shard.client.set_many({key: epoch.encode()})
        if epoch.created is not None:
            shard.created = min(epoch.created, shard.created or epoch.created)
        return epoch.token

    def _watch_alone(self, shard: Shard, seen: dict[str, bytes], token: str, now: float) -> None:
        """One server: a restart seen by this client is reported with the count it last saw."""
        live = as_int(seen.get(self._keys.live))
        known = self._tokens.get(shard.name)
        self._tokens[shard.name] = token
        if known is not None and known != token:
            if shard.client.add(self._keys.wipe(shard.name, known), b"1"):
                if live is not None or shard.last_live == 0:
                    # Either the count was rebuilt since by another client, or this
                    # client last saw an empty queue: the number is unknown, but
                    # the loss is still told.
                    count, what = 1, "an unknown number of queued messages"
                else:
                    count, what = shard.last_live, f"{shard.last_live} queued message(s)"
                shard.ledger.report_count(
                    f"unknown-{known}",
                    count,
                    f"memcached {shard.name} was emptied (restart, flush_all or eviction of"
                    f" the namespace marker): {what} lost with their ids",
                    now,
                )
            shard.last_live = 0
        shard.last_live = shard.last_live if live is None else live
