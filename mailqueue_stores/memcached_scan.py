"""Walking the memcached store's rings: which slot is live, which is finished.

A slot is live when the header it names still points back at it. Every other
slot is finished and is cleaned up on the way: a stale slot left by a requeue,
the tombstone of an interrupted ack, or a slot whose header is gone, which is
a loss and is reported once. Heads and the low cursor move past the finished
prefix, so the next walk starts where live slots begin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import (
    DEAD_RING,
    Keys,
    bucket_of,
    decode,
    encode,
    lowest_open_bucket,
)
from mailqueue_stores.memcached_loss import LossLedger
from mailqueue_stores.memcached_ring import Rings, Slot

HEADER_GONE = "its header was evicted from memcached; the data went with it or is unreachable"


@dataclasses.dataclass(frozen=True)
class Entry:
    """A live slot with the header it names, as read (``cas`` for a guarded write)."""

    slot: Slot
    header: dict[str, Any]
    cas: bytes

    def claimable(self, now: float) -> bool:
        h = self.header
        return h["due"] <= now and (h["tok"] is None or h["exp"] <= now)

    @property
    def order(self) -> tuple[float, int | str, int]:
        # A message whose lease ran out is due again from the lease's expiry.
        h = self.header
        due = h["due"] if h["tok"] is None else max(h["due"], h["exp"])
        return (due, self.slot.ring, self.slot.n)


_BUSY = object()  # a slot a requeue in progress is writing: not finished, not live


def tombstone(header: dict[str, Any], *, keep_data: bool) -> dict[str, Any]:
    """What a header becomes when its message leaves the queue (ack, bury, loss)."""
    slots = [header.get(k) for k in ("ptr", "pend", "old")]
    return {"done": True, "slots": [s for s in slots if s], "data": not keep_data}


class Scanner:
    def __init__(
        self, client: MemcachedClient, keys: Keys, rings: Rings, ledger: LossLedger
    ) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._ledger = ledger

    def finish(self, mid: str, done: dict[str, Any], gen: str | None) -> None:
        """Remove what a tombstone names, then the tombstone itself."""
        keys = list(done["slots"])
        if done["data"] and gen:
            keys.append(self._keys.data(mid, gen))
        self._client.delete_many(keys)
        self._client.delete(self._keys.header(mid))

    def _classify(self, chunk: list[Slot], now: float) -> Iterable[tuple[Slot, Any]]:
        ids = {s.key: s.value.decode() for s in chunk if s.value is not None}
        headers = self._client.gets_many({self._keys.header(m) for m in ids.values()})
        for slot in chunk:
            if slot.value is None:
                yield slot, None
                continue
            mid = ids[slot.key]
            got = headers.get(self._keys.header(mid))
            if got is None:
                if self._client.delete(slot.key):
                    self._ledger.report({"id": mid}, HEADER_GONE, now)
                yield slot, None
                continue
            header = decode(got[0])
            if header.get("done"):
                self.finish(mid, header, header.get("gen"))
                yield slot, None
            elif header["ptr"] == slot.key:
                yield slot, Entry(slot, header, got[1])
            elif header["pend"] != slot.key:
                self._client.delete(slot.key)  # stale: the message moved on
                yield slot, None
            elif header["tok"] is not None and header["exp"] > now:
                yield slot, _BUSY
            elif self._client.cas(
                self._keys.header(mid), encode({**header, "pend": None}), got[1]
            ):
                # The requeue that wrote this slot died: its lease ran out, and the
                # cas above makes its last step fail if it is merely slow.
                self._client.delete(slot.key)
                yield slot, None
            else:
                yield slot, _BUSY

    def _walk_ring(
        self, ring: int | str, head: int, tail: int, now: float, out: list[Entry], enough: int
    ) -> bool:
        """Collect live entries of one ring; True when every slot up to ``tail`` is finished."""
        finished = head
        prefix = True
        found = 0
        for chunk in self._rings.walk(ring, head, tail):
            for slot, state in self._classify(chunk, now):
                if state is None:
                    if prefix:
                        finished = slot.n
                    continue
                prefix = False
                if isinstance(state, Entry):
                    out.append(state)
                    found += state.claimable(now)
            if found >= enough:
                break
        if finished > head:
            self._rings.advance_head(ring, finished)
        return finished >= tail

    def queued(self, now: float, wall: float, enough: int | None = None) -> list[Entry]:
        """Live entries of the time buckets, in bucket order.

        With ``enough``, the walk stops at the wall clock's bucket (or ``now``'s)
        once that many due entries are found; without it, every bucket up to
        ``top`` is read (for stats).
        """
        fallback = lowest_open_bucket(self._ledger.created or wall)
        low = self._rings.low(fallback)
        last = max(bucket_of(now), bucket_of(wall))
        if enough is None:
            last = self._rings.top(last)
        out: list[Entry] = []
        new_low, drained, prefix = low, [], True
        for bucket, head, tail in self._rings.non_empty(low, last):
            done = head >= tail or self._walk_ring(
                bucket, head, tail, now, out, enough or tail + 1
            )
            if done and prefix:
                new_low = bucket + 1
                drained.append(bucket)
            prefix = prefix and done
            if enough is not None and sum(e.claimable(now) for e in out) >= enough:
                break
        if new_low > low:
            self._rings.advance_low(new_low, wall, drained)
        return out

    def dead(self, now: float) -> list[Entry]:
        """Live entries of the dead ring (their headers are dead-letter headers)."""
        bounds = self._rings.bounds([DEAD_RING]).get(DEAD_RING)
        if bounds is None:
            return []
        head, tail = bounds
        out: list[Entry] = []
        finished, prefix = head, True
        for chunk in self._rings.walk(DEAD_RING, head, tail):
            ids = {s.key: s.value.decode() for s in chunk if s.value is not None}
            headers = self._client.gets_many({self._keys.dead(m) for m in ids.values()})
            for slot in chunk:
                got = headers.get(self._keys.dead(ids[slot.key])) if slot.value else None
                if got is not None and decode(got[0])["ptr"] == slot.key:
                    out.append(Entry(slot, decode(got[0]), got[1]))
                    prefix = False
                    continue
                if slot.value is not None and self._client.delete(slot.key) and got is None:
                    # Burial, revival and purge remove the slot before the
                    # header: a slot whose header is gone means an eviction.
                    self._ledger.report({"id": ids[slot.key]}, HEADER_GONE, now)
                if prefix:
                    finished = slot.n
        if finished > head:
            self._rings.advance_head(DEAD_RING, finished)
        return out
