"""One memcached server's part of the queue: the messages whose home it is.

Every item of a message (header, data, index slot) lives on one server, its
*home*, chosen by the rendezvous hash of the message id over the server names
(the hash pymemcache's ``HashClient`` uses). Each server holds its own rings,
cursors and dead letters, so a server that is emptied takes whole messages
with it and leaves the others whole: nothing is ever half there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from mailqueue_core.errors import LeaseLost, StoreError, StoreUnavailable
from mailqueue_core.store import Claim, Record
from mailqueue_stores.memcached_client import MemcachedClient
from mailqueue_stores.memcached_dead import DeadLetterBook
from mailqueue_stores.memcached_journal import Journal
from mailqueue_stores.memcached_layout import (
    DEAD_FIELDS,
    LIVE_FIELDS,
    Keys,
    check_header,
    checksum,
    encode,
    header_for,
    known_facts,
    new_gen,
    place,
    record_from,
    tombstone_in,
)
from mailqueue_stores.memcached_loss import LossLedger
from mailqueue_stores.memcached_ring import Rings
from mailqueue_stores.memcached_scan import Entry, Scanner, tombstone

DATA_GONE = "its data was evicted from memcached before it was delivered"


def _lease_lost(mid: str) -> LeaseLost:
    return LeaseLost(f"message {mid} is no longer held by this claim")


def _gone(entry: Entry) -> str:
    """Why a message whose data cannot be found is lost."""
    if entry.damage is None:
        return DATA_GONE
    return f"{entry.damage}, and its data cannot be found"


def data_problem(header: dict[str, Any], data: bytes) -> str | None:
    """What is wrong with a message's data item, judged by its header; None if nothing."""
    size, expected = header.get("size"), header.get("sum")
    if size is not None and len(data) != size:
        return f"its data is {len(data)} bytes; {size} were written"
    if expected is not None and checksum(data) != expected:
        return "its data does not match the checksum written with it"
    return None


class Shard:
    """The messages one server is home to, and what is done to them there."""

    def __init__(self, client: MemcachedClient, keys: Keys, namespace: str) -> None:
        self.name = client.server
        self.client = client
        self.keys = keys
        self.rings = Rings(client, keys)
        #: The loss reports kept on this server.
        self.ledger = LossLedger(client, keys, self.rings, namespace)
        #: Where losses of this server's messages are reported: its witness's
        #: ledger, so that the report outlives this server being emptied.
        self.reports = self.ledger
        #: This server's journal, on its witness (None with one server).
        self.journal: Journal | None = None
        #: One server only: keep the count of queued messages (see ``live``), and
        #: the count as this client last saw it: what a restart is reported to take.
        self.counting = True
        self.last_live = 0
        #: When the namespace's epoch on this server began (the low cursor's fallback).
        self.created: float | None = None
        self.scan = Scanner(client, keys, self.rings, self)
        self.dead = DeadLetterBook(client, keys, self.rings, self.scan, self)

    # -- what the scanner and the dead letters report -----------------------------------

    def lost(self, facts: dict[str, Any], reason: str, now: float, journal: Any) -> None:
        if self.journal is not None:
            self.journal.drop([(facts["id"], journal if isinstance(journal, str) else None)])
        if self.reports.report(facts, reason, now):
            self.counted(-1)

    def forget(self, mid: str, journal: Any) -> None:
        if self.journal is not None and isinstance(journal, str):
            self.journal.drop([(mid, journal)])

    def counted(self, delta: int) -> None:
        if not self.counting or delta == 0:
            return
        if delta > 0:
            self.last_live = self.client.counter(self.keys.live, delta)
        else:
            self.last_live = self.client.decrement(self.keys.live, -delta) or 0

    def rejournal(self, now: float, wall: float) -> None:
        """Name every message this server holds in a journal that was lost or is new.

        The witness was emptied (or is new to the namespace, when there is
        nothing to name): without this, emptying this server next would lose
        the messages it holds now without a word.
        """
        assert self.journal is not None
        entries = [(self.keys.header(e.header["id"]), e) for e in self.scan.queued(now, wall)] + [
            (self.keys.dead(e.header["id"]), e) for e in self.scan.dead(now)
        ]
        entries = [(k, e) for k, e in entries if not e.broken]
        if not entries:
            return
        slots = self.journal.write([e.header["id"] for _, e in entries])
        unused = [
            slot
            for (key, entry), slot in zip(entries, slots, strict=True)
            if not self._name_in_journal(key, entry, slot)
        ]
        self.journal.forget(unused)

    def _name_in_journal(self, key: str, entry: Entry, slot: str) -> bool:
        """Point a header at its new journal slot; False when it needs none."""
        assert self.journal is not None
        header, cas = entry.header, entry.cas
        fields = LIVE_FIELDS if key == self.keys.header(header["id"]) else DEAD_FIELDS
        for _ in range(3):  # a flusher may change the header meanwhile: read it again
            if self.journal.current(header.get("j")):
                return False
            if self.client.cas(key, encode({**header, "j": slot}), cas):
                return True
            raw, token = self.client.gets(key)
            if raw is None or tombstone_in(raw) is not None:
                return False
            header, damage = check_header(raw, header["id"], fields, {})
            if damage is not None:
                return False
            cas = token  # type: ignore[assignment]
        return False

    # -- enqueue -------------------------------------------------------------------

    def enqueue(self, records: Sequence[Record], wall: float) -> Callable[[], None]:
        """Add the records whose home this is; a function that takes them out again."""
        dead = self.client.get_many([self.keys.dead(r.id) for r in records])
        fresh = [r for r in records if self.keys.dead(r.id) not in dead]
        if not fresh:
            return lambda: None
        # The journal names a message before it exists, so no moment passes
        # where this server holds a message its witness does not know of.
        journal: Sequence[str | None] = (
            self.journal.write([r.id for r in fresh]) if self.journal else [None] * len(fresh)
        )
        by_bucket: dict[int, list[tuple[Record, str | None]]] = {}
        for record, slot in zip(fresh, journal, strict=True):
            by_bucket.setdefault(place(record.due, wall), []).append((record, slot))
        added: list[tuple[Record, str, str]] = []
        duplicates: list[str | None] = []
        try:
            for bucket, group in by_bucket.items():
                for (record, jslot), slot in zip(
                    group, self.rings.allocate(bucket, len(group)), strict=True
                ):
                    gen = new_gen()
                    header = {**header_for(record, slot, gen, jslot), "ring": bucket}
                    if self._claim_id(record.id, header):
                        added.append((record, slot, gen))
                    else:
                        duplicates.append(jslot)
            self.client.set_many({self.keys.data(r.id, g): r.data for r, _, g in added})
            self.client.set_many({slot: r.id.encode() for r, slot, _ in added})
            for bucket in by_bucket:
                self.rings.raise_top(bucket)
            if self.journal is not None:
                self.journal.forget(duplicates)
        except StoreError:
            self._undo(added, journal)
            raise
        self.counted(len(added))
        return lambda: self._undo(added, journal)

    def _claim_id(self, mid: str, header: dict[str, Any]) -> bool:
        """Take the id for a new message; False when it is already queued.

        A header left by an enqueue that failed before writing its slot is taken
        over, so retrying that enqueue is not mistaken for a duplicate.
        """
        key = self.keys.header(mid)
        if self.client.add(key, encode(header)):
            return True
        raw, cas = self.client.gets(key)
        if raw is None:
            return self.client.add(key, encode(header))
        if tombstone_in(raw) is not None:
            return False
        old, damage = check_header(raw, mid, LIVE_FIELDS, {})
        if damage is not None or self.client.get_many([old["ptr"]]):
            return False  # queued (a damaged record too: the next claim buries it)
        if not self.client.cas(key, encode(header), cas):  # type: ignore[arg-type]
            return False
        self.forget(mid, old.get("j"))
        return True

    def _undo(self, added: list[tuple[Record, str, str]], journal: Sequence[str | None]) -> None:
        try:
            self.client.delete_many([slot for _, slot, _ in added])
            self.client.delete_many([self.keys.data(r.id, g) for r, _, g in added])
            self.client.delete_many([self.keys.header(r.id) for r, _, _ in added])
            if self.journal is not None:
                self.journal.forget(journal)
        except StoreError:
            pass  # the server is gone too: what it holds is unreachable anyway

    # -- claims --------------------------------------------------------------------

    def take(self, entry: Entry, now: float, lease: float) -> tuple[dict[str, Any], str] | None:
        """Claim one entry by ``cas``: its new header and token, or None if another won."""
        token = secrets.token_hex(16)
        header = {**entry.header, "tok": token, "exp": now + lease}
        if entry.damage is not None:
            header["damage"] = entry.damage
        if self.client.cas(self.keys.header(entry.header["id"]), encode(header), entry.cas):
            return header, token
        return None

    def with_data(
        self, taken: list[tuple[Entry, dict[str, Any], str]], now: float
    ) -> list[tuple[Any, Claim]]:
        """Claims for what was taken, with their data; what has none is reported lost."""
        keys = [
            None if h["gen"] is None else self.keys.data(h["id"], h["gen"]) for _, h, _ in taken
        ]
        data = self.client.get_many([k for k in keys if k is not None])
        claims = []
        for (entry, header, token), key in zip(taken, keys, strict=True):
            raw = None if key is None else data.get(key)
            if raw is None:
                self._lose(header, token, now, _gone(entry))
                continue
            damage = entry.damage
            problem = data_problem(header, raw)
            if problem is not None:
                damage = problem if damage is None else f"{damage}; {problem}"
                raw = b""
            record = record_from(header, raw, damage)
            claims.append((entry.order, Claim(record, token, header["exp"])))
        return claims

    def _lose(self, header: dict[str, Any], token: str, now: float, reason: str) -> None:
        key = self.keys.header(header["id"])
        raw, cas = self.client.gets(key)
        if raw is None:
            return
        held, damage = check_header(raw, header["id"], LIVE_FIELDS, {})
        if damage is None and held["tok"] == token:
            done = tombstone(held, keep_data=False)
            if self.client.cas(key, encode(done), cas):  # type: ignore[arg-type]
                self.lost(known_facts(held), reason, now, held.get("j"))
                self.scan.finish(held["id"], done)

    def lose_unread(self, entry: Entry, now: float) -> bool:
        """Report an entry lost when its data is gone (for counts); True if it was."""
        h = entry.header
        if h["gen"] is not None and self.client.exists(self.keys.data(h["id"], h["gen"])):
            return False
        done = tombstone(h, keep_data=False)
        if self.client.cas(self.keys.header(h["id"]), encode(done), entry.cas):
            self.lost(known_facts(h), _gone(entry), now, h.get("j"))
            self.scan.finish(h["id"], done)
        return True

    def release_taken(self, taken: list[tuple[Entry, dict[str, Any], str]]) -> None:
        """Give back claims taken by a fetch that then failed (best effort)."""
        for _, header, token in taken:
            try:
                key, held, cas = self._held(header["id"], token)
                self.client.cas(key, encode({**held, "tok": None, "exp": 0.0}), cas)
            except StoreError:
                pass

    def _held(self, mid: str, token: str) -> tuple[str, dict[str, Any], bytes]:
        key = self.keys.header(mid)
        raw, cas = self.client.gets(key)
        if raw is None:
            raise _lease_lost(mid)
        header, damage = check_header(raw, mid, LIVE_FIELDS, {})
        if damage is not None or header["tok"] != token:
            raise _lease_lost(mid)
        return key, header, cas  # type: ignore[return-value]

    def _leave(self, claim: Claim, *, keep_data: bool) -> dict[str, Any]:
        """Turn a held message's header into a tombstone; the header as it was."""
        key, header, cas = self._held(claim.id, claim.token)
        if not self.client.cas(key, encode(tombstone(header, keep_data=keep_data)), cas):
            raise _lease_lost(claim.id)
        return header

    def ack(self, claim: Claim) -> None:
        try:
            header = self._leave(claim, keep_data=False)
            self.scan.finish(claim.id, tombstone(header, keep_data=False))
        except StoreUnavailable:
            # Sent, and perhaps never to be acked here: tell the witness, so that
            # emptying this server does not report a delivered message lost.
            if self.journal is not None:
                try:
                    self.journal.delivered(claim.id)
                except StoreError:
                    pass
            raise
        self.counted(-1)

    def release(self, claim: Claim) -> None:
        key, header, cas = self._held(claim.id, claim.token)
        if not self.client.cas(key, encode({**header, "tok": None, "exp": 0.0}), cas):
            raise _lease_lost(claim.id)

    def requeue(self, claim: Claim, due: float, error: str | None, wall: float) -> None:
        key, header, cas = self._held(claim.id, claim.token)
        changes = {"due": due, "attempts": header["attempts"] + 1, "err": error, "tok": None}
        bucket = place(due, wall)
        if bucket == header["ring"]:
            if not self.client.cas(key, encode({**header, **changes, "exp": 0.0}), cas):
                raise _lease_lost(claim.id)
            return
        # Moving to another bucket: announce the new slot in the header first
        # ("pend"), so no slot ever names the message without the header naming it.
        if header.get("old"):
            self.client.delete(header["old"])
        (slot,) = self.rings.allocate(bucket, 1)
        if not self.client.cas(key, encode({**header, "pend": slot, "old": None}), cas):
            raise _lease_lost(claim.id)
        self.client.set_many({slot: claim.id.encode()})
        self.rings.raise_top(bucket)
        try:
            key, header, cas = self._held(claim.id, claim.token)
        except LeaseLost:
            self.client.delete(slot)
            raise
        moved = {**header, **changes, "exp": 0.0, "ring": bucket}
        moved.update(ptr=slot, pend=None, old=header["ptr"])
        if header["pend"] != slot or not self.client.cas(key, encode(moved), cas):
            self.client.delete(slot)
            raise _lease_lost(claim.id)
        self.client.delete(moved["old"])

    def bury(self, claim: Claim, error: str, now: float) -> None:
        _, header, _ = self._held(claim.id, claim.token)
        fields = {**header, "err": error, "attempts": header["attempts"] + 1}
        (slot,) = self.dead.write([(fields, None)], now)
        try:
            header = self._leave(claim, keep_data=True)
        except LeaseLost:
            self.client.delete(slot)
            raise
        self.scan.finish(claim.id, tombstone(header, keep_data=True))
        self.counted(-1)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        journal: Sequence[str | None] = (
            self.journal.write([r.id for r in records]) if self.journal else [None] * len(records)
        )
        items = [
            (header_for(r, "", new_gen(), slot), r.data)
            for r, slot in zip(records, journal, strict=True)
        ]
        self.dead.write(items, now)
