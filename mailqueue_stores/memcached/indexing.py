"""Indexing a queued message again when a walk passed its slot before it was written.

A slot is handed out (``incr``) a few round trips before it is written, and a
walk that reads it empty meanwhile marks it and moves the ring's head past it
(:meth:`~.rings.Rings.fill` tells the writer so). A message whose header names
such a slot would never be read again: it gets a new slot here, named in the
header before it is written, as at enqueue. The passed slot, if the writer
wrote it, is dropped once the header no longer names it.
"""

from __future__ import annotations

from mailqueue_core.errors import StoreUnavailable
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.headers import QueuedHeader
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.rings import Rings

#: Slots a write tries in turn when walks keep passing them before they are written.
INDEX_TRIES = 4


def passed_over(mid: str, what: str) -> StoreUnavailable:
    # StoreUnavailable, as the contract asks of a call that did nothing: the
    # backend then hands the message to the fallback store instead of failing
    # the request, and a flusher stops as for any store it cannot write to.
    return StoreUnavailable(
        f"message {mid} could not be {what}: its slot was passed over by other clients'"
        f" walks {INDEX_TRIES} times before it was written; try again"
    )


def index_again(
    client: MemcachedClient,
    keys: Keys,
    rings: Rings,
    header: tuple[str, str],
    placed: tuple[str, int],
    wrote: bool,
) -> tuple[str, int]:
    """Give the message ``header`` (id, data generation) a new slot; ``(slot, bucket)``.

    ``placed`` is the passed slot and its bucket, ``wrote`` whether the caller
    wrote it. When a flusher already found the message through the passed slot
    (a walk that read the ring before the head moved) and moved it on, it is
    left as it is. Gives up with
    :class:`~mailqueue_core.errors.StoreUnavailable` after :data:`INDEX_TRIES`
    slots, having dropped the last one it wrote.
    """
    mid, gen = header
    slot, bucket = placed
    key = keys.header(mid)
    for _ in range(INDEX_TRIES):
        bucket = max(bucket, rings.low(bucket))
        (new,) = rings.allocate(bucket, 1)
        seen = client.gets(key)
        now = None if seen is None else QueuedHeader.whole(seen.value, mid)
        if seen is None or now is None or (now.gen, now.ptr) != (gen, slot):
            return slot, bucket
        if not client.cas(key, now.indexed_at(new, bucket).encode(), seen):
            continue  # claimed through the passed slot meanwhile: read it again
        if wrote:
            client.delete(slot)
        rings.raise_top(bucket)
        passed = rings.fill(bucket, {new: mid.encode()})
        slot, wrote = new, passed.get(new, False)
        if new not in passed:
            return slot, bucket
    if wrote:
        client.delete(slot)
    raise passed_over(mid, "queued")
