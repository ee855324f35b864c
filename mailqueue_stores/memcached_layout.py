"""Where the memcached store keeps what: item keys, due-time buckets, item values.

Every key starts with ``mq:<namespace>:`` so two namespaces never share an item.
A namespace or id that is not plain ``[A-Za-z0-9_.-]`` (at most 64 characters)
is replaced by ``~`` and a SHA-256 prefix, so every key is printable ASCII
without spaces and far below memcached's 250-byte limit; ``~`` cannot occur in
a plain part, so a hashed part never collides with a plain one.

Items of a namespace (see ``docs/stores/memcached.rst`` for the design):

``epoch``            marker whose disappearance means the server was emptied
``live``             count of queued messages (to say how many a wipe took)
``low`` / ``top``    lowest bucket that may hold live pointers / highest bucket used
``t:<ring>``         tail counter of a ring: slots handed out so far (``incr``)
``h:<ring>``         head of a ring: every slot at or below it is finished
``p:<ring>:<n>``     slot ``n`` of a ring: a message id (time buckets, dead ring)
                     or a loss report (lost ring)
``m:<id>``           header of a queued message (JSON, changed only by ``cas``)
``z:<id>``           header of a dead letter
``d:<id>:<gen>``     the record's data, written once; ``gen`` tells incarnations apart
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from mailqueue_core.store import Record

#: Seconds of due time per bucket ring.
BUCKET_WIDTH = 10.0
#: Writers never index into a bucket older than ``wall clock - GRACE / 2``, and
#: the low cursor never passes ``wall clock - GRACE``: a write that takes less than
#: half the grace (with clocks in sync) cannot land behind the cursor.
GRACE = 120.0
DEAD_RING = "x"
LOST_RING = "y"

_PLAIN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def key_part(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def bucket_of(t: float) -> int:
    return int(t // BUCKET_WIDTH)


def place(due: float, wall: float) -> int:
    """The bucket a message due at ``due`` is indexed in, written at ``wall``."""
    return max(bucket_of(due), bucket_of(wall - GRACE / 2))


def lowest_open_bucket(wall: float) -> int:
    """The low cursor may not pass this bucket: writers may still add to it."""
    return bucket_of(wall - GRACE)


class Keys:
    def __init__(self, namespace: str) -> None:
        p = f"mq:{key_part(namespace)}:"
        self.prefix = p
        self.epoch = p + "epoch"
        self.live = p + "live"
        self.low = p + "low"
        self.top = p + "top"

    def tail(self, ring: int | str) -> str:
        return f"{self.prefix}t:{ring}"

    def head(self, ring: int | str) -> str:
        return f"{self.prefix}h:{ring}"

    def slot(self, ring: int | str, n: int) -> str:
        return f"{self.prefix}p:{ring}:{n}"

    def header(self, mid: str) -> str:
        return f"{self.prefix}m:{key_part(mid)}"

    def dead(self, mid: str) -> str:
        return f"{self.prefix}z:{key_part(mid)}"

    def data(self, mid: str, gen: str) -> str:
        return f"{self.prefix}d:{key_part(mid)}:{gen}"

    def wipe(self, server: str, token: str) -> str:
        return f"{self.prefix}w:{key_part(server)}:{token}"


def new_gen() -> str:
    return secrets.token_hex(6)


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    return json.loads(raw)


def header_for(record: Record, slot: str, gen: str) -> dict[str, Any]:
    """A queued message's header: everything but the data, plus its claim state."""
    return {
        "id": record.id,
        "created": record.created,
        "due": record.due,
        "attempts": record.attempts,
        "err": record.last_error,
        "size": len(record.data),
        "gen": gen,
        "ptr": slot,  # the one slot that indexes this message
        "pend": None,  # a slot being written by a requeue in progress
        "tok": None,
        "exp": 0.0,
    }


def record_from(header: dict[str, Any], data: bytes) -> Record:
    return Record(
        id=header["id"],
        data=data,
        created=header["created"],
        due=header["due"],
        attempts=header["attempts"],
        last_error=header["err"],
    )


def known_facts(header: dict[str, Any]) -> dict[str, Any]:
    """What a loss report keeps of a message: everything but its data."""
    return {k: header.get(k) for k in ("id", "created", "due", "attempts", "err", "size")}
