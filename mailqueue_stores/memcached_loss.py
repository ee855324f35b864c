"""How the memcached store notices and reports what memcached lost.

Two kinds of loss:

* one message: a slot or header names it but its header or data is gone (an
  eviction). The client that notices first wins a ``delete`` or ``cas`` race
  and files one report, with the message's id and whatever else is known.
* a whole server emptied (restart, ``flush_all``): each server holds an
  ``epoch`` marker for the namespace. A client that saw the marker and later
  finds it gone or replaced files one report (guarded by ``add``) counting the
  messages it last knew to be queued, since their ids went with the server.

Every report is logged at ERROR and kept in the lost ring, where ``stats()``
counts it and ``dead_letters()`` lists it with ``lost=True`` until purged.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_layout import LOST_RING, Keys, decode, encode
from mailqueue_stores.memcached_ring import Rings

log = logging.getLogger("mailqueue.stores.memcached")


class LossLedger:
    def __init__(self, client: MemcachedClient, keys: Keys, rings: Rings, namespace: str) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._namespace = namespace
        self._epochs: dict[str, str] = {}
        #: When this client first found the namespace's epoch (the low cursor's fallback).
        self.created: float | None = None
        #: Queued messages as last seen by this client: the count a wipe reports.
        self.last_live = 0

    def report(self, facts: dict[str, Any], reason: str, now: float, count: int = 1) -> None:
        (slot,) = self._rings.allocate(LOST_RING, 1)
        entry = {**facts, "reason": reason, "detected": now, "count": count}
        self._client.set_many({slot: encode(entry)})
        remaining = self._client.decrement(self._keys.live, count)
        if remaining is not None:
            self.last_live = remaining
        log.error(
            "memcached store (namespace %r) lost message %s: %s",
            self._namespace,
            facts.get("id"),
            reason,
        )

    def saw_live(self, value: int) -> None:
        self.last_live = value

    def check_epochs(self, wall: float) -> None:
        """Compare every server's epoch marker with the one this client saw last."""
        live_server = self._client.node(self._keys.live)
        for server in self._client.servers:
            wanted = [self._keys.epoch]
            if server == live_server:
                wanted.append(self._keys.live)
            found = self._client.get_many_on(server, wanted)
            if self._keys.live in found:
                self.last_live = int(found[self._keys.live])
            raw = found.get(self._keys.epoch)
            if raw is None:
                fresh = {"token": secrets.token_hex(8), "created": wall}
                if not self._client.add_on(server, self._keys.epoch, encode(fresh)):
                    raw = self._client.get_on(server, self._keys.epoch)
            epoch = decode(raw) if raw is not None else fresh
            known = self._epochs.get(server)
            if known is not None and known != epoch["token"]:
                self._wiped(server, known, wall, live_survived=self._keys.live in found)
            self._epochs[server] = epoch["token"]
            self.created = min(epoch["created"], self.created or epoch["created"])

    def _wiped(self, server: str, old_token: str, wall: float, *, live_survived: bool) -> None:
        if not self._client.add(self._keys.wipe(server, old_token), b"1"):
            return  # another client already reported this wipe
        if live_survived or self.last_live == 0:
            # Either the count lives on another server, or this client last saw
            # an empty queue: the number is unknown, but the loss is still told.
            count, what = 1, "an unknown number of queued messages"
        else:
            count, what = self.last_live, f"{self.last_live} queued message(s)"
        self.report(
            {"id": f"unknown-{old_token}", "created": wall, "due": wall},
            f"memcached {server} was emptied (restart, flush_all or eviction of the"
            f" namespace marker): {what} lost with their ids",
            wall,
            count,
        )
        self.last_live = 0

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
                out.append((slot.key, decode(slot.value)))
        if finished > head:
            self._rings.advance_head(LOST_RING, finished)
        return out

    def total(self) -> int:
        return sum(int(entry.get("count", 1)) for _, entry in self.entries())

    def purge(self, before: float) -> int:
        purged = 0
        for key, entry in self.entries():
            if entry["detected"] < before and self._client.delete(key):
                purged += 1
        return purged
