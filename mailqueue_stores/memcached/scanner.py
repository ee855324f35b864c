"""Walking the memcached store's rings: which slot is live, which is finished.

A slot is live when the header it names still points back at it. Every other
slot is finished and is cleaned up on the way: a stale slot left by a requeue,
the tombstone of an interrupted ack, or a slot whose header is gone, which is
a loss and is reported once. Heads and the low cursor move past the finished
prefix, so the next walk starts where live slots begin.

A header that cannot be read whole (deleted fields, junk written over it) is
never a reason to stop: its slot is live, with what could be read of the
header and a sentence saying what is wrong (:attr:`Entry.damage`), so that the
claim path hands it out for burial or reports it lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol

from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import (
    BUCKET_WIDTH,
    DEAD_FIELDS,
    DEAD_RING,
    LIVE_FIELDS,
    Keys,
    bucket_of,
    check_header,
    encode,
    lowest_open_bucket,
    tombstone_in,
)
from mailqueue_stores.memcached_ring import Rings, Slot

HEADER_GONE = "its header was evicted from memcached; the data went with it or is unreachable"


class Losses(Protocol):
    """What the scanner tells about messages that left or were lost (the shard)."""

    created: float | None

    def lost(self, facts: dict[str, Any], reason: str, now: float, journal: Any) -> None: ...

    def forget(self, mid: str, journal: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class Entry:
    """A live slot with the header it names, as read (``cas`` for a guarded write)."""

    slot: Slot
    header: dict[str, Any]
    cas: bytes
    damage: str | None = None
    """What is wrong with the record, when it is damaged."""
    broken: bool = False
    """The header itself could not be read whole: ``header`` holds what could be."""

    def claimable(self, now: float) -> bool:
        if self.broken:
            return True  # nothing it says about its claim can be trusted: bury it now
        h = self.header
        return h["due"] <= now and (h["tok"] is None or h["exp"] <= now)

    def waiting(self, now: float) -> bool:
        """Claimable and not a claim whose lease ran out.

        Walks stop once they found enough of these: a message whose lease ran
        out sorts by its expiry, which can be later than messages in later buckets.
        """
        return self.claimable(now) and (self.broken or self.header["tok"] is None)

    @property
    def order(self) -> tuple[float, int | str, int]:
        # A message whose lease ran out is due again from the lease's expiry.
        h = self.header
        due = h["due"] if h["tok"] is None else max(h["due"], h["exp"])
        return (due, self.slot.ring, self.slot.n)


_BUSY = object()  # a slot a requeue in progress is writing: not finished, not live


def tombstone(header: dict[str, Any], *, keep_data: bool) -> dict[str, Any]:
    """What a header becomes when its message leaves the queue.

    ``keep_data``: it moves to the dead letters, which keep its data and its
    journal slot. Otherwise it leaves the store (ack, loss) and both go.
    """
    slots = [header.get(k) for k in ("ptr", "pend", "old")]
    return {
        "done": True,
        "slots": [s for s in slots if isinstance(s, str) and s],
        "data": not keep_data,
        "gen": header.get("gen"),
        "j": None if keep_data else header.get("j"),
    }


def placeholders(mid: str, slot: Slot, now: float) -> dict[str, Any]:
    """Stand-ins for the fields a damaged header lost (see ``check_header``)."""
    when = slot.ring * BUCKET_WIDTH if isinstance(slot.ring, int) else now
    return {
        "id": mid,
        "created": when,
        "due": when,
        "attempts": 0,
        "ptr": slot.key,
        "exp": 0.0,
        "ring": slot.ring,
        "buried": now,
    }


class Scanner:
    def __init__(self, client: MemcachedClient, keys: Keys, rings: Rings, losses: Losses) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._losses = losses

    def finish(self, mid: str, done: dict[str, Any]) -> None:
        """Remove what a tombstone names, then the tombstone itself.

        The journal slot goes first: a journal slot whose header is gone reads
        as a loss once the server has been emptied.
        """
        self._losses.forget(mid, done.get("j"))
        keys = [s for s in done.get("slots", []) if isinstance(s, str)]
        if done.get("data") and isinstance(done.get("gen"), str):
            keys.append(self._keys.data(mid, done["gen"]))
        self._client.delete_many(keys)
        self._client.delete(self._keys.header(mid))

    def _classify(self, chunk: list[Slot], now: float) -> Iterable[tuple[Slot, Any]]:
        ids = {s.key: s.value.decode(errors="replace") for s in chunk if s.value is not None}
        headers = self._client.gets_many({self._keys.header(m) for m in ids.values()})
        for slot in chunk:
            if slot.value is None:
                yield slot, None
                continue
            mid = ids[slot.key]
            got = headers.get(self._keys.header(mid))
            if got is None:
                if self._client.delete(slot.key):
                    self._losses.lost({"id": mid}, HEADER_GONE, now, None)
                yield slot, None
                continue
            done = tombstone_in(got[0])
            if done is not None:
                self.finish(mid, done)
                yield slot, None
                continue
            header, damage = check_header(got[0], mid, LIVE_FIELDS, placeholders(mid, slot, now))
            if damage is not None:
                whole = {**header, "ptr": slot.key, "ring": slot.ring}
                yield slot, Entry(slot, whole, got[1], header.get("damage") or damage, True)
            elif header["ptr"] == slot.key:
                yield slot, Entry(slot, header, got[1], header.get("damage"))
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
                    found += state.waiting(now)
            if found >= enough:
                break
        if finished > head:
            self._rings.advance_head(ring, finished)
        return finished >= tail

    def queued(self, now: float, wall: float, enough: int | None = None) -> list[Entry]:
        """Live entries of the time buckets, in bucket order.

        With ``enough``, the walk stops at the wall clock's bucket (or ``now``'s)
        once that many waiting entries are found; without it, every bucket up to
        ``top`` is read (for stats).
        """
        fallback = lowest_open_bucket(self._losses.created or wall)
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
            if enough is not None and sum(e.waiting(now) for e in out) >= enough:
                break
        if new_low > low:
            self._rings.advance_low(new_low, wall, drained)
        return out

    def dead(self, now: float) -> list[Entry]:
        """Live entries of the dead ring (their headers are dead-letter headers).

        A dead-letter header that cannot be read whole is reported lost: a
        dead letter is kept for people to read, and this one cannot be.
        """
        bounds = self._rings.bounds([DEAD_RING]).get(DEAD_RING)
        if bounds is None:
            return []
        head, tail = bounds
        out: list[Entry] = []
        finished, prefix = head, True
        for chunk in self._rings.walk(DEAD_RING, head, tail):
            ids = {s.key: s.value.decode(errors="replace") for s in chunk if s.value is not None}
            headers = self._client.gets_many({self._keys.dead(m) for m in ids.values()})
            for slot in chunk:
                mid = ids.get(slot.key, "")
                got = headers.get(self._keys.dead(mid)) if slot.value else None
                header, damage = (
                    check_header(got[0], mid, DEAD_FIELDS, placeholders(mid, slot, now))
                    if got is not None
                    else ({}, None)
                )
                if got is not None and damage is None and header["ptr"] == slot.key:
                    out.append(Entry(slot, header, got[1]))
                    prefix = False
                    continue
                if slot.value is not None and self._client.delete(slot.key):
                    # Burial, revival and purge remove the slot before the
                    # header: a slot whose header is gone means an eviction.
                    if got is None:
                        self._losses.lost({"id": mid}, HEADER_GONE, now, None)
                    elif damage is not None:
                        self._losses.lost(
                            {**header, "id": mid}, f"dead letter: {damage}", now, header.get("j")
                        )
                        self._client.delete(self._keys.dead(mid))
                if prefix:
                    finished = slot.n
        if finished > head:
            self._rings.advance_head(DEAD_RING, finished)
        return out
