"""The memcached store's dead letters: a ring of slots naming dead-letter headers.

A dead letter keeps its data item; its header (``z:<id>``,
:class:`~.headers.DeadHeader`) records when and why it was buried. Burial,
revival and purge remove the slot before the header, so a slot whose header is
gone is an eviction and is reported as a loss, as is a dead letter whose data
is gone. Dead letters stay in their server's journal until purged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from mailqueue_core.errors import StoreError
from mailqueue_core.store import DeadLetter
from mailqueue_stores.memcached.buckets import place
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.headers import DeadHeader, Header
from mailqueue_stores.memcached.indexing import index_again
from mailqueue_stores.memcached.keys import DEAD_RING, Keys
from mailqueue_stores.memcached.rings import Rings
from mailqueue_stores.memcached.scanner import Entry, Losses, Scanner

DEAD_DATA_GONE = "its data was evicted from memcached while it lay in the dead letters"


class Home(Losses, Protocol):
    """The shard a dead-letter book belongs to: it counts what is queued there."""

    def counted(self, delta: int) -> None: ...


class DeadLetterBook:
    def __init__(
        self, client: MemcachedClient, keys: Keys, rings: Rings, scan: Scanner, home: Home
    ) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._scan = scan
        self._home = home

    def write(self, items: Sequence[tuple[Header, bytes | None]], buried: float) -> list[str]:
        """Add dead letters: a message's facts, and its data to write (None: already there)."""
        slots = self._rings.allocate(DEAD_RING, len(items))
        values: dict[str, bytes] = {}
        for (facts, data), slot in zip(items, slots, strict=True):
            values[self._keys.dead(facts.id)] = DeadHeader.of(facts, slot, buried).encode()
            values[slot] = facts.id.encode()
            if data is not None:
                values[facts.data_key(self._keys)] = data
        self._client.set_many(values)
        return slots

    def entries(self, now: float) -> list[Entry[DeadHeader]]:
        entries = self._scan.dead(now)
        return sorted(entries, key=lambda e: (e.header.buried, e.slot.n))

    def _data_gone(self, entry: Entry[DeadHeader], now: float) -> None:
        """Report a dead letter whose data is gone, once (whoever deletes its slot)."""
        h = entry.header
        if self._client.delete(entry.slot.key):
            self._home.lost(h.id, h, DEAD_DATA_GONE, now)
            self._client.delete(self._keys.dead(h.id))

    def letters(self, limit: int | None, now: float) -> list[DeadLetter]:
        """Dead letters, oldest burial first, at most ``limit``."""
        chosen = self.entries(now)[:limit]
        data = self._client.get_many([e.header.data_key(self._keys) for e in chosen])
        letters = []
        for entry in chosen:
            h = entry.header
            raw = data.get(h.data_key(self._keys))
            if raw is None:
                self._data_gone(entry, now)
                letters.append(DeadLetter(h.record(b""), DEAD_DATA_GONE, h.buried, lost=True))
            else:
                letters.append(DeadLetter(h.record(raw), h.error or "", h.buried))
        return letters

    def count(self, now: float) -> int:
        """Dead letters whose data is still there; the others are reported lost."""
        dead = 0
        for entry in self.entries(now):
            if self._client.exists(entry.header.data_key(self._keys)):
                dead += 1
            else:
                self._data_gone(entry, now)
        return dead

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        """Queue dead letters again, due at ``now`` (also the time of the write)."""
        wanted = None if ids is None else set(ids)
        revived = 0
        for entry in self.entries(now):
            h = entry.header
            if wanted is not None and h.id not in wanted:
                continue
            bucket = place(now, now)
            (slot,) = self._rings.allocate(bucket, 1)
            if not self._client.add(
                self._keys.header(h.id), h.revived(now, slot, bucket).encode()
            ):
                continue  # the same id is queued again: leave the dead letter be
            self._rings.raise_top(bucket)
            passed = self._rings.fill(bucket, {slot: h.id.encode()})
            if passed:
                self._index_again(h, (slot, bucket), passed[slot])
            self._client.delete(entry.slot.key)
            self._client.delete(self._keys.dead(h.id))
            revived += 1
        self._home.counted(revived)
        return revived

    def _index_again(self, h: DeadHeader, placed: tuple[str, int], wrote: bool) -> None:
        """A revived message whose slot a walk passed; given up, it stays a dead letter."""
        try:
            index_again(self._client, self._keys, self._rings, (h.id, h.gen), placed, wrote)
        except StoreError:
            self._client.delete(self._keys.header(h.id))
            raise

    def purge(self, buried_before: float, now: float) -> int:
        purged = 0
        for entry in self.entries(now):
            h = entry.header
            if h.buried < buried_before and self._client.delete(entry.slot.key):
                self._home.forget(h.id, h.journal)
                self._client.delete(self._keys.dead(h.id))
                self._client.delete(h.data_key(self._keys))
                purged += 1
        return purged
