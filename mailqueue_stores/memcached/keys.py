"""Where the memcached store keeps what: the key of every item.

Every key starts with ``mq:<namespace>:`` so two namespaces never share an item.
A namespace or id that is not plain ``[A-Za-z0-9_.-]`` (at most 64 characters)
is replaced by ``~`` and a SHA-256 prefix, so every key is printable ASCII
without spaces and far below memcached's 250-byte limit; ``~`` cannot occur in
a plain part, so a hashed part never collides with a plain one.

Every item of a message lives on its home server (see
:mod:`mailqueue_stores.memcached.shard`); each server holds these items for
the messages it is home to (see ``docs/stores/memcached.rst`` for the design):

``epoch``            marker whose disappearance means the server was emptied
``live``             count of queued messages (one server only: what a wipe took)
``low`` / ``top``    lowest bucket that may hold live pointers / highest bucket used
``t:<ring>``         tail counter of a ring: slots handed out so far (``incr``)
``h:<ring>``         head of a ring: every slot at or below it is finished
``p:<ring>:<n>``     slot ``n`` of a ring: a message id (time buckets, dead ring,
                     journal rings) or a loss report (lost ring)
``m:<id>``           header of a queued message (:class:`~.headers.QueuedHeader`)
``z:<id>``           header of a dead letter (:class:`~.headers.DeadHeader`)
``d:<id>:<gen>``     the record's data, written once; ``gen`` tells incarnations apart

and, as the witness of another server ``S`` (several servers only):

``jk:<S>``           the epochs of ``S`` whose journal rings are kept here
``p:j<S>.<epoch>:<n>``  journal: the id of every message ``S`` holds, per epoch of ``S``
``s:<id>``           a message of ``S`` delivered while ``S`` could not be told
``l:<id>``           this id was reported lost (so it is reported once)
"""

from __future__ import annotations

import hashlib
import re

#: A ring's name: a due-time bucket's number, or a name (dead, lost, journal rings).
Ring = int | str

DEAD_RING = "x"
LOST_RING = "y"

_PLAIN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def key_part(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class Keys:
    def __init__(self, namespace: str) -> None:
        p = f"mq:{key_part(namespace)}:"
        self.prefix = p
        self.epoch = p + "epoch"
        self.live = p + "live"
        self.low = p + "low"
        self.top = p + "top"

    def tail(self, ring: Ring) -> str:
        return f"{self.prefix}t:{ring}"

    def head(self, ring: Ring) -> str:
        return f"{self.prefix}h:{ring}"

    def slot(self, ring: Ring, n: int) -> str:
        return f"{self.prefix}p:{ring}:{n}"

    def header(self, mid: str) -> str:
        return f"{self.prefix}m:{key_part(mid)}"

    def dead(self, mid: str) -> str:
        return f"{self.prefix}z:{key_part(mid)}"

    def data(self, mid: str, gen: str) -> str:
        return f"{self.prefix}d:{key_part(mid)}:{gen}"

    def wipe(self, server: str, token: str) -> str:
        return f"{self.prefix}w:{key_part(server)}:{token}"

    def journal_ring(self, server: str, epoch: str) -> str:
        return f"j{key_part(server)}.{key_part(epoch)}"

    def journals(self, server: str) -> str:
        return f"{self.prefix}jk:{key_part(server)}"

    def sent(self, mid: str) -> str:
        return f"{self.prefix}s:{key_part(mid)}"

    def reported(self, mid: str) -> str:
        return f"{self.prefix}l:{key_part(mid)}"
