"""Rings of numbered slots in memcached: the memcached store's only way to list things.

A ring is a tail counter (``incr`` hands out slot numbers, so writers on any
machine never collide), a head (every slot at or below it is finished) and the
slot items themselves. Each server keeps one ring per due-time bucket of
:data:`~mailqueue_stores.memcached.buckets.BUCKET_WIDTH` seconds, one for dead
letters, one for loss reports, and the journal rings of the server it is the
witness of (:mod:`~mailqueue_stores.memcached.journal`). ``low`` and ``top``
bound the buckets that may hold live slots, so nothing ever scans keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from mailqueue_stores.memcached.buckets import lowest_open_bucket
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.codec import as_int
from mailqueue_stores.memcached.keys import Keys, Ring

#: Buckets whose counters are read in one round trip.
BUCKET_CHUNK = 64
#: Slots read from one ring per round trip.
SLOT_CHUNK = 256

R = TypeVar("R", int, str)


@dataclasses.dataclass(frozen=True)
class Slot:
    ring: Ring
    n: int
    key: str
    value: bytes | None  # None: the slot item is gone

    @property
    def mid(self) -> str:
        """The message id a slot of a bucket, dead or journal ring names."""
        return (self.value or b"").decode(errors="replace")


class Rings:
    def __init__(self, client: MemcachedClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._top_seen: int | None = None

    def allocate(self, ring: Ring, count: int) -> list[str]:
        end = self._client.counter(self._keys.tail(ring), count)
        return [self._keys.slot(ring, n) for n in range(end - count + 1, end + 1)]

    def bounds(self, rings: Sequence[R]) -> dict[R, tuple[int, int]]:
        """``(head, tail)`` of each ring that has ever had a slot."""
        keys = self._keys
        found = self._client.get_many(
            [keys.tail(r) for r in rings] + [keys.head(r) for r in rings]
        )
        out: dict[R, tuple[int, int]] = {}
        for ring in rings:
            tail = found.get(keys.tail(ring))
            if tail is not None:
                out[ring] = (as_int(found.get(keys.head(ring))) or 0, as_int(tail) or 0)
        return out

    def slots(self, ring: Ring, first: int, last: int) -> list[Slot]:
        """Slots ``first..last`` of ``ring``, in order."""
        keys = [self._keys.slot(ring, n) for n in range(first, last + 1)]
        found = self._client.get_many(keys)
        return [
            Slot(ring, n, k, found.get(k))
            for n, k in zip(range(first, last + 1), keys, strict=True)
        ]

    def walk(self, ring: Ring, head: int, tail: int) -> Iterator[list[Slot]]:
        for first in range(head + 1, tail + 1, SLOT_CHUNK):
            yield self.slots(ring, first, min(tail, first + SLOT_CHUNK - 1))

    def sweep(
        self,
        ring: Ring,
        bounds: tuple[int, int],
        finished: Callable[[list[Slot]], list[bool]],
        *,
        enough: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Read a ring's slots a chunk at a time; True when every one is finished.

        ``finished`` judges a chunk slot by slot (and may clean up on the way);
        the head moves past the finished prefix, so the next walk starts where
        live slots begin. The walk stops early once ``enough()`` says so.
        """
        head, tail = bounds
        done, prefix = head, True
        for chunk in self.walk(ring, head, tail):
            for slot, over in zip(chunk, finished(chunk), strict=True):
                prefix = prefix and over
                if prefix:
                    done = slot.n
            if enough():
                break
        if done > head:
            self.advance_head(ring, done)
        return done >= tail

    def _raise(self, key: str, to: int) -> bool:
        """Raise the cursor ``key`` to ``to``; False when it is there or a rival moved it."""
        seen = self._client.gets(key)
        if seen is None:
            return self._client.add(key, str(to).encode())
        at = as_int(seen.value)
        if at is not None and at >= to:
            return False
        return self._client.cas(key, str(to).encode(), seen)

    def advance_head(self, ring: Ring, to: int) -> None:
        """Move the head forward to ``to``; a concurrent move wins (best effort)."""
        self._raise(self._keys.head(ring), to)

    # -- the span of due-time buckets -------------------------------------------

    def low(self, fallback: int) -> int:
        found = as_int(self._client.get(self._keys.low))
        return fallback if found is None else found

    def advance_low(self, to: int, now: float, drained: list[int]) -> None:
        """Raise ``low`` to ``to`` (never past a bucket writers may still use at ``now``).

        ``drained`` buckets below the new low are forgotten: no writer can reach
        them any more.
        """
        to = min(to, lowest_open_bucket(now))
        if not self._raise(self._keys.low, to):
            return
        gone = [b for b in drained if b < to]
        self._client.delete_many(
            [self._keys.tail(b) for b in gone] + [self._keys.head(b) for b in gone]
        )

    def top(self, fallback: int) -> int:
        """The highest bucket used, or ``fallback`` when that is higher."""
        found = as_int(self._client.get(self._keys.top))
        if found is None:
            return fallback
        self._top_seen = found  # what the server holds, never the fallback
        return max(fallback, found)

    def raise_top(self, bucket: int) -> None:
        """Make sure ``top`` is at least ``bucket``; one round trip when it already is."""
        if self._top_seen is not None and bucket <= self._top_seen:
            return
        key = self._keys.top
        for _ in range(8):
            seen = self._client.gets(key)
            if seen is None:
                if self._client.add(key, str(bucket).encode()):
                    break
                continue
            at = as_int(seen.value)
            if at is not None and at >= bucket:
                self._top_seen = at
                return
            if self._client.cas(key, str(bucket).encode(), seen):
                break
        self._top_seen = bucket

    def non_empty(self, first: int, last: int) -> Iterator[tuple[int, int, int]]:
        """``(bucket, head, tail)`` for buckets in ``first..last``, in order.

        Buckets never used or fully finished are given with ``head >= tail``
        so the caller can tell how far the finished prefix reaches.
        """
        for start in range(first, last + 1, BUCKET_CHUNK):
            chunk = list(range(start, min(last, start + BUCKET_CHUNK - 1) + 1))
            found = self.bounds(chunk)
            for bucket in chunk:
                head, tail = found.get(bucket, (0, 0))
                yield bucket, head, tail
