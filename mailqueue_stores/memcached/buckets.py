"""Due-time buckets: which ring a message is indexed in, and how far the low cursor may go.

Every time here is the caller's (``now`` passed to the store, or a record's
``created``), never a clock the store reads. Writers never index into a bucket
older than ``their time - GRACE / 2``, and the low cursor never passes
``the walker's time - GRACE``: a write that takes less than half the grace,
with callers' clocks in sync, cannot land behind the cursor.
"""

from __future__ import annotations

#: Seconds of due time per bucket ring.
BUCKET_WIDTH = 10.0
GRACE = 120.0


def bucket_of(t: float) -> int:
    return int(t // BUCKET_WIDTH)


def place(due: float, now: float) -> int:
    """The bucket a message due at ``due`` is indexed in, written at ``now``."""
    return max(bucket_of(due), bucket_of(now - GRACE / 2))


def lowest_open_bucket(now: float) -> int:
    """The low cursor may not pass this bucket: writers may still add to it."""
    return bucket_of(now - GRACE)


def proven_by_low(low: int) -> float:
    """The latest time a low cursor at ``low`` proves: a walker's ``now`` was at least this."""
    return low * BUCKET_WIDTH + GRACE


def start_of(bucket: int) -> float:
    return bucket * BUCKET_WIDTH
