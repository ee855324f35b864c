"""Rings of numbered slots in memcached: the memcached store's only way to list things.

A ring is a tail counter (``incr`` hands out slot numbers, so writers on any
machine never collide), a head (every slot at or below it is finished) and the
slot items themselves. Each server keeps one ring per due-time bucket of
:data:`~mailqueue_stores.memcached_layout.BUCKET_WIDTH` seconds, one for dead
letters, one for loss reports, and the journal rings of the server it is the
witness of (:mod:`~mailqueue_stores.memcached_journal`). ``low`` and ``top`` bound the buckets that
may hold live slots, so nothing ever scans keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import Keys, as_int, lowest_open_bucket

#: Buckets whose counters are read in one round trip.
BUCKET_CHUNK = 64
#: Slots read from one ring per round trip.
SLOT_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class Slot:
    ring: int | str
    n: int
    key: str
    value: bytes | None  # None: the slot item is gone


class Rings:
    def __init__(self, client: MemcachedClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._top_seen: int | None = None

    def allocate(self, ring: int | str, count: int) -> list[str]:
        end = self._client.counter(self._keys.tail(ring), count)
        return [self._keys.slot(ring, n) for n in range(end - count + 1, end + 1)]

    def bounds(self, rings: list[int | str]) -> dict[int | str, tuple[int, int]]:
        """``(head, tail)`` of each ring that has ever had a slot."""
        keys = self._keys
        found = self._client.get_many(
            [keys.tail(r) for r in rings] + [keys.head(r) for r in rings]
        )
        out: dict[int | str, tuple[int, int]] = {}
        for ring in rings:
            tail = found.get(keys.tail(ring))
            if tail is not None:
                out[ring] = (as_int(found.get(keys.head(ring)), 0), as_int(tail, 0))
        return out

    def slots(self, ring: int | str, first: int, last: int) -> list[Slot]:
        """Slots ``first..last`` of ``ring``, in order."""
        keys = [self._keys.slot(ring, n) for n in range(first, last + 1)]
        found = self._client.get_many(keys)
        return [
            Slot(ring, n, k, found.get(k))
            for n, k in zip(range(first, last + 1), keys, strict=True)
        ]

    def walk(self, ring: int | str, head: int, tail: int) -> Iterator[list[Slot]]:
        for first in range(head + 1, tail + 1, SLOT_CHUNK):
            yield self.slots(ring, first, min(tail, first + SLOT_CHUNK - 1))

    def advance_head(self, ring: int | str, to: int) -> None:
        """Move the head forward to ``to``; a concurrent move wins (best effort)."""
        key = self._keys.head(ring)
        value, token = self._client.gets(key)
        if value is None:
            self._client.add(key, str(to).encode())
        elif as_int(value, -1) < to:
            self._client.cas(key, str(to).encode(), token)  # type: ignore[arg-type]

    # -- the span of due-time buckets -------------------------------------------

    def low(self, fallback: int) -> int:
        return as_int(self._client.get(self._keys.low), fallback)

    def advance_low(self, to: int, wall: float, drained: list[int]) -> None:
        """Raise ``low`` to ``to`` (never past a bucket writers may still use).

        ``drained`` buckets below the new low are forgotten: no writer can reach
        them any more.
        """
        to = min(to, lowest_open_bucket(wall))
        key = self._keys.low
        value, token = self._client.gets(key)
        if value is None:
            self._client.add(key, str(to).encode())
        elif as_int(value, -1) < to:
            if not self._client.cas(key, str(to).encode(), token):  # type: ignore[arg-type]
                return
        else:
            return
        gone = [b for b in drained if b < to]
        self._client.delete_many(
            [self._keys.tail(b) for b in gone] + [self._keys.head(b) for b in gone]
        )

    def top(self, fallback: int) -> int:
        top = max(fallback, as_int(self._client.get(self._keys.top), fallback))
        self._top_seen = top
        return top

    def raise_top(self, bucket: int) -> None:
        """Make sure ``top`` is at least ``bucket``; one round trip when it already is."""
        if self._top_seen is not None and bucket <= self._top_seen:
            return
        key = self._keys.top
        for _ in range(8):
            value, token = self._client.gets(key)
            if value is None:
                if self._client.add(key, str(bucket).encode()):
                    break
                continue
            if as_int(value, -1) >= bucket:
                self._top_seen = as_int(value, -1)
                return
            if self._client.cas(key, str(bucket).encode(), token):  # type: ignore[arg-type]
                break
        self._top_seen = bucket

    def non_empty(self, first: int, last: int) -> Iterator[tuple[int, int, int]]:
        """``(bucket, head, tail)`` for buckets in ``first..last``, in order.

        Buckets never used or fully finished are given with ``head >= tail``
        so the caller can tell how far the finished prefix reaches.
        """
        for start in range(first, last + 1, BUCKET_CHUNK):
            chunk: list[int | str] = list(range(start, min(last, start + BUCKET_CHUNK - 1) + 1))
            found = self.bounds(chunk)
            for bucket in chunk:
                head, tail = found.get(bucket, (0, 0))
                yield bucket, head, tail  # type: ignore[misc]
