"""Rings of numbered slots in memcached: the memcached store's only way to list things.

A ring is a tail counter (``incr`` hands out slot numbers, so writers on any
machine never collide), a head (every slot at or below it is finished) and the
slot items themselves. Each server keeps one ring per due-time bucket of
:data:`~mailqueue_stores.memcached.buckets.BUCKET_WIDTH` seconds, one for dead
letters, one for loss reports, and the journal rings of the server it is the
witness of (:mod:`~mailqueue_stores.memcached.journal`). ``low`` and ``top``
bound the buckets that may hold live slots, so nothing ever scans keys.

A slot is handed out a few round trips before it is written, so a walk can
read it empty while its writer is still on the way. A walk never passes an
empty slot without first marking it (``add`` of :data:`PASSED`), and a writer
writes a slot by ``add`` too: of the two, exactly one wins. The walk deletes
its marks only once the head is past them, and the writer checks the head
after writing, so a writer that lost (its ``add`` failed, or it wrote after
the mark was gone) always knows it was passed over, and indexes again
(:meth:`Rings.fill`). No slot written is ever left below the head unknown to
its writer; no clock is involved.
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

#: What a walk writes into an empty slot it passes: the slot's writer then fails.
PASSED = b"\x00passed"
#: Tries to raise a head a rival keeps raising too.
RAISE_TRIES = 8

R = TypeVar("R", int, str)


@dataclasses.dataclass(frozen=True)
class Slot:
    ring: Ring
    n: int
    key: str
    value: bytes | None  # None: the slot item is gone, never written, or passed
    passed: bool = False  # a walk marked it empty (PASSED) on its way past

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

    def fill(self, ring: Ring, values: dict[str, bytes]) -> dict[str, bool]:
        """Write slots handed out by :meth:`allocate`; the ones a walk passed over.

        Each passed slot maps to whether this call wrote it (it must then be
        deleted once nothing points at it); a passed slot is never read again,
        so what it names must be indexed again.
        """
        wrote = {key: self._client.add(key, value) for key, value in values.items()}
        found = self._client.get_many([self._keys.head(ring), self._keys.low])
        head = as_int(found.get(self._keys.head(ring))) or 0
        low = as_int(found.get(self._keys.low))
        gone = isinstance(ring, int) and low is not None and ring < low  # drained, forgotten
        return {
            key: ok
            for key, ok in wrote.items()
            if not ok or gone or int(key.rsplit(":", 1)[1]) <= head
        }

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
        out = []
        for n, k in zip(range(first, last + 1), keys, strict=True):
            value = found.get(k)
            passed = value == PASSED
            out.append(Slot(ring, n, k, None if passed else value, passed))
        return out

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
        marks: list[str] = []
        for chunk in self.walk(ring, head, tail):
            for slot, over in zip(chunk, finished(chunk), strict=True):
                prefix = prefix and over and self._pass(slot, marks)
                if prefix:
                    done = slot.n
            if enough():
                break
        if done > head and self.advance_head(ring, done):
            # Only now: a writer that finds its mark gone finds the head past it.
            self._client.delete_many(marks)
        return done >= tail

    def _pass(self, slot: Slot, marks: list[str]) -> bool:
        """Whether a finished slot may be passed: an empty one only once marked."""
        if slot.value is not None:
            return True
        if not slot.passed and not self._client.add(slot.key, PASSED):
            return False  # its writer got there first: read it next time
        marks.append(slot.key)
        return True

    def _raise(self, key: str, to: int) -> bool:
        """Raise the cursor ``key`` to ``to``; False when it is there or a rival moved it."""
        seen = self._client.gets(key)
        if seen is None:
            return self._client.add(key, str(to).encode())
        at = as_int(seen.value)
        if at is not None and at >= to:
            return False
        return self._client.cas(key, str(to).encode(), seen)

    def advance_head(self, ring: Ring, to: int) -> bool:
        """Move the head forward to at least ``to``; whether it is there now."""
        return self._at_least(self._keys.head(ring), to)

    def _at_least(self, key: str, to: int) -> bool:
        """Raise the cursor ``key`` to at least ``to``; whether it is there now.

        A rival's move makes our ``cas`` fail even when it moved less far: read again.
        """
        for _ in range(RAISE_TRIES):
            seen = self._client.gets(key)
            if seen is None:
                if self._client.add(key, str(to).encode()):
                    return True
                continue
            at = as_int(seen.value)
            if (at is not None and at >= to) or self._client.cas(key, str(to).encode(), seen):
                return True
        return False

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
        self._at_least(self._keys.top, bucket)
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
