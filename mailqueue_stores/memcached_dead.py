"""The memcached store's dead letters: a ring of slots naming dead-letter headers.

A dead letter keeps its data item; its header (``z:<id>``) records when and why
it was buried. Burial, revival and purge remove the slot before the header, so
a slot whose header is gone is an eviction and is reported as a loss, as is a
dead letter whose data is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailqueue_core.store import DeadLetter, Record
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import (
    DEAD_RING,
    Keys,
    encode,
    header_for,
    known_facts,
    place,
    record_from,
)
from mailqueue_stores.memcached_loss import LossLedger
from mailqueue_stores.memcached_ring import Rings
from mailqueue_stores.memcached_scan import Entry, Scanner

DEAD_DATA_GONE = "its data was evicted from memcached while it lay in the dead letters"


class DeadLetterBook:
    def __init__(
        self, client: MemcachedClient, keys: Keys, rings: Rings, ledger: LossLedger, scan: Scanner
    ) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._ledger = ledger
        self._scan = scan

    def write(self, items: list[tuple[Record, str, float]], data: bool) -> list[str]:
        slots = self._rings.allocate(DEAD_RING, len(items))
        values: dict[str, bytes] = {}
        for (record, gen, buried), slot in zip(items, slots, strict=True):
            header = {**header_for(record, slot, gen), "buried": buried}
            values[self._keys.dead(record.id)] = encode(header)
            values[slot] = record.id.encode()
            if data:
                values[self._keys.data(record.id, gen)] = record.data
        self._client.set_many(values)
        return slots

    def entries(self, now: float) -> list[Entry]:
        entries = self._scan.dead(now)
        return sorted(entries, key=lambda e: (e.header["buried"], e.slot.n))

    def letters(self, limit: int | None, now: float) -> list[DeadLetter]:
        entries = self.entries(now)
        letters: list[tuple[float, int, DeadLetter]] = []
        for _, report in self._ledger.entries():
            record = Record(
                id=report["id"],
                data=b"",
                created=report.get("created") or report["detected"],
                due=report.get("due") or report["detected"],
                attempts=report.get("attempts") or 0,
                last_error=report.get("err"),
            )
            letter = DeadLetter(record, report["reason"], report["detected"], lost=True)
            letters.append((report["detected"], 0, letter))
        chosen = entries if limit is None else entries[:limit]
        data = self._client.get_many(
            [self._keys.data(e.header["id"], e.header["gen"]) for e in chosen]
        )
        for entry in chosen:
            h = entry.header
            raw = data.get(self._keys.data(h["id"], h["gen"]))
            lost = raw is None
            if lost and self._client.delete(entry.slot.key):
                self._ledger.report(known_facts(h), DEAD_DATA_GONE, now)
                self._client.delete(self._keys.dead(h["id"]))
            record = record_from(h, raw or b"")
            reason = DEAD_DATA_GONE if lost else (h["err"] or "")
            letters.append((h["buried"], 1, DeadLetter(record, reason, h["buried"], lost=lost)))
        letters.sort(key=lambda t: (t[0], t[1]))
        out = [letter for _, _, letter in letters]
        return out if limit is None else out[:limit]

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
            header = {**header_for(record, slot, h["gen"]), "size": h["size"], "ring": bucket}
            if not self._client.add(self._keys.header(h["id"]), encode(header)):
                continue  # the same id is queued again: leave the dead letter be
            self._client.set_many({slot: h["id"].encode()})
            self._rings.raise_top(bucket)
            self._client.delete(entry.slot.key)
            self._client.delete(self._keys.dead(h["id"]))
            revived += 1
        if revived:
            self._ledger.saw_live(self._client.counter(self._keys.live, revived))
        return revived

    def purge(self, buried_before: float) -> int:
        purged = 0
        for entry in self.entries(buried_before):
            h = entry.header
            if h["buried"] < buried_before and self._client.delete(entry.slot.key):
                self._client.delete(self._keys.dead(h["id"]))
                self._client.delete(self._keys.data(h["id"], h["gen"]))
                purged += 1
        return purged + self._ledger.purge(buried_before)
