"""Walking the memcached store's rings: which slot is live, which is finished.

A slot is live when the header it names still points back at it. Every other
slot is finished and is cleaned up on the way: a stale slot left by a requeue,
the tombstone of an interrupted ack, or a slot whose header is gone, which is
a loss and is reported once. Heads and the low cursor move past the finished
prefix, so the next walk starts where live slots begin.

A header that cannot be read whole (deleted fields, junk written over it) is
never a reason to stop: its slot is live, with a ``broken`` header saying what
is wrong (:meth:`~.headers.Header.read`), so that the claim path hands it out
for burial or reports it lost.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, Literal, Protocol, TypeVar

from mailqueue_stores.memcached.buckets import bucket_of, lowest_open_bucket
from mailqueue_stores.memcached.client import MemcachedClient, Versioned
from mailqueue_stores.memcached.headers import DeadHeader, Header, QueuedHeader, Tombstone
from mailqueue_stores.memcached.keys import DEAD_RING, Keys
from mailqueue_stores.memcached.rings import Rings, Slot

HEADER_GONE = "its header was evicted from memcached; the data went with it or is unreachable"

H = TypeVar("H", QueuedHeader, DeadHeader)


class Losses(Protocol):
    """What the scanner tells about messages that left or were lost (the shard)."""

    created: float | None

    def lost(self, mid: str, known: Header | None, reason: str, now: float) -> None: ...

    def forget(self, mid: str, journal: str | None) -> None: ...


@dataclasses.dataclass(frozen=True)
class Entry(Generic[H]):
    """A live slot with the header it names, as read (``seen`` guards a write back)."""

    slot: Slot
    header: H
    seen: Versioned


def claim_order(entry: Entry[QueuedHeader]) -> tuple[float, int | str, int]:
    """Due order; a message whose lease ran out is due again from its expiry."""
    return (entry.header.due_again, entry.slot.ring, entry.slot.n)


#: A slot a requeue in progress is writing: not finished, not live.
Busy = Literal["busy"]


class Scanner:
    def __init__(self, client: MemcachedClient, keys: Keys, rings: Rings, losses: Losses) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._losses = losses

    def finish(self, mid: str, done: Tombstone) -> None:
        """Remove what a tombstone names, then the tombstone itself.

        The journal slot goes first: a journal slot whose header is gone reads
        as a loss once the server has been emptied.
        """
        self._losses.forget(mid, done.journal)
        self._client.delete_many(done.items(self._keys, mid))
        self._client.delete(self._keys.header(mid))

    def _classify(
        self, chunk: list[Slot], now: float
    ) -> list[tuple[Slot, Entry[QueuedHeader] | Busy | None]]:
        """Each slot of a time bucket: its live entry, busy, or None when finished."""
        headers = self._client.gets_many(
            {self._keys.header(s.mid) for s in chunk if s.value is not None}
        )
        out: list[tuple[Slot, Entry[QueuedHeader] | Busy | None]] = []
        for slot in chunk:
            got = None if slot.value is None else headers.get(self._keys.header(slot.mid))
            if got is None:
                if slot.value is not None and self._client.delete(slot.key):
                    self._losses.lost(slot.mid, None, HEADER_GONE, now)
                out.append((slot, None))
                continue
            done = Tombstone.read(got.value)
            if done is not None:
                self.finish(slot.mid, done)
                out.append((slot, None))
                continue
            header = QueuedHeader.read(got.value, slot.mid, slot, now)
            out.append((slot, self._judge(slot, header, got, now)))
        return out

    def _judge(
        self, slot: Slot, header: QueuedHeader, got: Versioned, now: float
    ) -> Entry[QueuedHeader] | Busy | None:
        if header.broken or header.ptr == slot.key:
            return Entry(slot, header, got)
        if header.pending != slot.key:
            self._client.delete(slot.key)  # stale: the message moved on
            return None
        if header.held(now):
            return "busy"
        if self._client.cas(self._keys.header(header.id), header.move_abandoned().encode(), got):
            # The requeue that wrote this slot died: its lease ran out, and the
            # cas above makes its last step fail if it is merely slow.
            self._client.delete(slot.key)
            return None
        return "busy"

    def _walk_ring(
        self,
        bucket: int,
        bounds: tuple[int, int],
        now: float,
        out: list[Entry[QueuedHeader]],
        enough: int,
    ) -> bool:
        """Collect live entries of one bucket; True when every slot in it is finished."""
        found = [0]

        def finished(chunk: list[Slot]) -> list[bool]:
            states = self._classify(chunk, now)
            for _, state in states:
                if isinstance(state, Entry):
                    out.append(state)
                    found[0] += state.header.waiting(now)
            return [state is None for _, state in states]

        return self._rings.sweep(bucket, bounds, finished, enough=lambda: found[0] >= enough)

    def queued(
        self, now: float, enough: int | None = None, *, advance: bool = True
    ) -> list[Entry[QueuedHeader]]:
        """Live entries of the time buckets, in bucket order.

        With ``enough``, the walk stops at ``now``'s bucket once that many
        waiting entries are found; without it, every bucket up to ``top`` is
        read (for stats). ``advance``: move the low cursor past the drained
        buckets (bounded by ``now``; a walk for another purpose leaves it).
        """
        fallback = lowest_open_bucket(self._losses.created or now)
        low = self._rings.low(fallback)
        last = bucket_of(now)
        if enough is None:
            last = self._rings.top(last)
        out: list[Entry[QueuedHeader]] = []
        new_low, drained, prefix = low, [], True
        for bucket, head, tail in self._rings.non_empty(low, last):
            done = head >= tail or self._walk_ring(
                bucket, (head, tail), now, out, enough or tail + 1
            )
            if done and prefix:
                new_low = bucket + 1
                drained.append(bucket)
            prefix = prefix and done
            if enough is not None and sum(e.header.waiting(now) for e in out) >= enough:
                break
        if advance and new_low > low:
            self._rings.advance_low(new_low, now, drained)
        return out

    def dead(self, now: float) -> list[Entry[DeadHeader]]:
        """Live entries of the dead ring.

        A dead-letter header that cannot be read whole is reported lost: a
        dead letter is kept for people to read, and this one cannot be.
        """
        bounds = self._rings.bounds([DEAD_RING]).get(DEAD_RING)
        if bounds is None:
            return []
        out: list[Entry[DeadHeader]] = []

        def finished(chunk: list[Slot]) -> list[bool]:
            headers = self._client.gets_many(
                {self._keys.dead(s.mid) for s in chunk if s.value is not None}
            )
            over = []
            for slot in chunk:
                entry = self._dead_entry(slot, headers.get(self._keys.dead(slot.mid)), now)
                if entry is not None:
                    out.append(entry)
                over.append(entry is None)
            return over

        self._rings.sweep(DEAD_RING, bounds, finished)
        return out

    def _dead_entry(
        self, slot: Slot, got: Versioned | None, now: float
    ) -> Entry[DeadHeader] | None:
        if slot.value is None:
            return None
        header = None if got is None else DeadHeader.read(got.value, slot.mid, slot, now)
        if got is not None and header is not None and not header.broken and header.ptr == slot.key:
            return Entry(slot, header, got)
        # Burial, revival and purge remove the slot before the header: a slot
        # whose header is gone means an eviction (reported by whoever deletes it).
        if self._client.delete(slot.key):
            if header is None:
                self._losses.lost(slot.mid, None, HEADER_GONE, now)
            elif header.broken:
                self._losses.lost(slot.mid, header, f"dead letter: {header.damage}", now)
                self._client.delete(self._keys.dead(slot.mid))
        return None
