"""The loss reports a memcached server keeps: the lost ring.

A message is reported lost when the store finds that memcached no longer has
it: its header or data was evicted or deleted (found by a walk, a claim or a
count), or the server that held it was emptied (found through its journal, see
:mod:`mailqueue_stores.memcached_journal`). A report names the message by id
with whatever else is known of it; a guard item (``l:<id>``) makes sure that
an id is reported once, whichever client notices first and however it
noticed. With a single server, a restart is reported by count instead (the ids
went with the server).

Every report is logged at ERROR and kept in the lost ring, where ``stats()``
counts it and ``dead_letters()`` lists it with ``lost=True`` until purged.
"""

from __future__ import annotations

from typing import Any

from mailqueue_core.text import get_logger
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import LOST_RING, Keys, decode_or_none, encode
from mailqueue_stores.memcached_ring import Rings

log = get_logger("mailqueue.stores.memcached")


class LossLedger:
    def __init__(self, client: MemcachedClient, keys: Keys, rings: Rings, namespace: str) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._namespace = namespace

    def report(self, facts: dict[str, Any], reason: str, now: float) -> bool:
        """Report the message ``facts["id"]`` lost; False when it was reported already."""
        if not self._client.add(self._keys.reported(facts["id"]), b"1"):
            return False
        self._file({**facts, "reason": reason, "detected": now, "count": 1})
        log.error(
            "memcached store (namespace %r) lost message %s: %s",
            self._namespace,
            facts["id"],
            reason,
        )
        return True

    def report_count(self, name: str, count: int, reason: str, now: float) -> None:
        """Report ``count`` messages lost whose ids are not known (a wipe of a lone server)."""
        self._file(
            {
                "id": name,
                "created": now,
                "due": now,
                "reason": reason,
                "detected": now,
                "count": count,
            }
        )
        log.error("memcached store (namespace %r): %s", self._namespace, reason)

    def _file(self, entry: dict[str, Any]) -> None:
        (slot,) = self._rings.allocate(LOST_RING, 1)
        self._client.set_many({slot: encode(entry)})

    # -- the lost ring -----------------------------------------------------------

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """``(slot key, report)`` for every report not yet purged, oldest first."""
        bounds = self._rings.bounds([LOST_RING]).get(LOST_RING)
        if bounds is None:
            return []
        head, tail = bounds
        out: list[tuple[str, dict[str, Any]]] = []
        finished = head
        for chunk in self._rings.walk(LOST_RING, head, tail):
            for slot in chunk:
                if slot.value is None:
                    if finished == slot.n - 1:
                        finished = slot.n
                    continue
                out.append((slot.key, _readable(decode_or_none(slot.value))))
        if finished > head:
            self._rings.advance_head(LOST_RING, finished)
        return out

    def total(self) -> int:
        return sum(entry["count"] for _, entry in self.entries())

    def purge(self, before: float) -> int:
        purged = 0
        for key, entry in self.entries():
            if entry["detected"] < before and self._client.delete(key):
                self._client.delete(self._keys.reported(entry["id"]))
                purged += 1
        return purged


def _readable(entry: object) -> dict[str, Any]:
    """A report as written, or a stand-in for one that was damaged (it still counts)."""
    if (
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("reason"), str)
        and isinstance(entry.get("detected"), (int, float))
        and isinstance(entry.get("count"), int)
    ):
        return entry
    return {
        "id": "unknown",
        "reason": "a loss report that is itself damaged",
        "detected": 0.0,
        "count": 1,
    }
