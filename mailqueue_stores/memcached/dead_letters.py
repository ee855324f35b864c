"""The memcached store's dead letters: a ring of slots naming dead-letter headers.

A dead letter keeps its data item; its header (``z:<id>``) records when and why
it was buried. Burial, revival and purge remove the slot before the header, so
a slot whose header is gone is an eviction and is reported as a loss, as is a
dead letter whose data is gone. Dead letters stay in their server's journal
until purged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from mailqueue_core.store import DeadLetter, Record
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import (
    DEAD_RING,
    Keys,
    dead_header,
    encode,
    header_for,
    known_facts,
    place,
    record_from,
)
from mailqueue_stores.memcached_ring import Rings
from mailqueue_stores.memcached_scan import Entry, Losses, Scanner

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

    def write(
        self, items: Sequence[tuple[Mapping[str, Any], bytes | None]], buried: float
    ) -> list[str]:
        """Add dead letters: a message header's fields, and the data to write (or None)."""
        slots = self._rings.allocate(DEAD_RING, len(items))
        values: dict[str, bytes] = {}
        for (fields, data), slot in zip(items, slots, strict=True):
            values[self._keys.dead(fields["id"])] = encode(dead_header(fields, slot, buried))
            values[slot] = fields["id"].encode()
            if data is not None:
                values[self._keys.data(fields["id"], fields["gen"])] = data
        self._client.set_many(values)
        return slots

    def entries(self, now: float) -> list[Entry]:
        entries = self._scan.dead(now)
        return sorted(entries, key=lambda e: (e.header["buried"], e.slot.n))

    def letters(self, limit: int | None, now: float) -> list[tuple[float, DeadLetter]]:
        """``(burial time, letter)``, oldest first, at most ``limit``."""
        chosen = self.entries(now)[:limit]
        data = self._client.get_many(
            [self._keys.data(e.header["id"], e.header["gen"]) for e in chosen]
        )
        letters = []
        for entry in chosen:
            h = entry.header
            raw = data.get(self._keys.data(h["id"], h["gen"]))
            lost = raw is None
            if lost and self._client.delete(entry.slot.key):
                self._home.lost(known_facts(h), DEAD_DATA_GONE, now, h.get("j"))
                self._client.delete(self._keys.dead(h["id"]))
            record = record_from(h, raw or b"")
            reason = DEAD_DATA_GONE if lost else (h["err"] or "")
            letters.append((h["buried"], DeadLetter(record, reason, h["buried"], lost=lost)))
        return letters

    def count(self, now: float) -> int:
        """Dead letters whose data is still there; the others are reported lost."""
        dead = 0
        for entry in self.entries(now):
            h = entry.header
            if self._client.exists(self._keys.data(h["id"], h["gen"])):
                dead += 1
            elif self._client.delete(entry.slot.key):
                self._home.lost(known_facts(h), DEAD_DATA_GONE, now, h.get("j"))
                self._client.delete(self._keys.dead(h["id"]))
        return dead

    def revive(self, ids: Iterable[str] | None, now: float, wall: float) -> int:
        wanted = None if ids is None else set(ids)
        revived = 0
        for entry in self.entries(now):
            h = entry.header
            if wanted is not None and h["id"] not in wanted:
                continue
            record = Record(h["id"], b"", now, now, 0, h["err"])
            bucket = place(now, wall)
            (slot,) = self._rings.allocate(bucket, 1)
            header = {
                **header_for(record, slot, h["gen"], h.get("j")),
                "size": h["size"],
                "sum": h.get("sum"),
                "ring": bucket,
            }
            if not self._client.add(self._keys.header(h["id"]), encode(header)):
                continue  # the same id is queued again: leave the dead letter be
            self._client.set_many({slot: h["id"].encode()})
            self._rings.raise_top(bucket)
            self._client.delete(entry.slot.key)
            self._client.delete(self._keys.dead(h["id"]))
            revived += 1
        self._home.counted(revived)
        return revived

    def purge(self, buried_before: float) -> int:
        purged = 0
        for entry in self.entries(buried_before):
            h = entry.header
            if h["buried"] < buried_before and self._client.delete(entry.slot.key):
                self._home.forget(h["id"], h.get("j"))
                self._client.delete(self._keys.dead(h["id"]))
                self._client.delete(self._keys.data(h["id"], h["gen"]))
                purged += 1
        return purged
