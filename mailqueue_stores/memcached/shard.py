"""One memcached server's part of the queue: the messages whose home it is.

Every item of a message (header, data, index slot) lives on one server, its
*home*, chosen by the rendezvous hash of the message id over the server names
(the hash pymemcache's ``HashClient`` uses). Each server holds its own rings,
cursors and dead letters, so a server that is emptied takes whole messages
with it and leaves the others whole: nothing is ever half there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from mailqueue_core.errors import LeaseLost, StoreError, StoreUnavailable
from mailqueue_core.store import Claim, Record
from mailqueue_stores.memcached.buckets import place
from mailqueue_stores.memcached.client import MemcachedClient, Versioned
from mailqueue_stores.memcached.dead_letters import DeadLetterBook
from mailqueue_stores.memcached.headers import (
    DeadHeader,
    Header,
    QueuedHeader,
    Tombstone,
    new_gen,
    new_token,
)
from mailqueue_stores.memcached.indexing import INDEX_TRIES, index_again, passed_over
from mailqueue_stores.memcached.journal import Journal
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.losses import LossLedger, LossReport
from mailqueue_stores.memcached.rings import PASSED, Rings
from mailqueue_stores.memcached.scanner import Entry, Scanner, claim_order

DATA_GONE = "its data was evicted from memcached before it was delivered"
#: A message an enqueue added: its record, slot, data generation and bucket.
Added = tuple[Record, str, str, int]


@dataclasses.dataclass(frozen=True)
class Taken:
    """A claim taken by ``cas`` whose data is not read yet."""

    entry: Entry[QueuedHeader]
    header: QueuedHeader
    token: str


def _lease_lost(mid: str) -> LeaseLost:
    return LeaseLost(f"message {mid} is no longer held by this claim")


def _gone(header: QueuedHeader) -> str:
    """Why a message whose data cannot be found is lost."""
    if header.damage is None:
        return DATA_GONE
    return f"{header.damage}, and its data cannot be found"


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

    def lost(self, mid: str, known: Header | None, reason: str, now: float) -> None:
        journal = None if known is None else known.journal
        if self.journal is not None:
            self.journal.drop([(mid, journal)])
        if self.reports.report(LossReport.of(mid, known, reason, now)):
            self.counted(-1)

    def forget(self, mid: str, journal: str | None) -> None:
        if self.journal is not None and journal is not None:
            self.journal.drop([(mid, journal)])

    def counted(self, delta: int) -> None:
        if not self.counting or delta == 0:
            return
        if delta > 0:
            self.last_live = self.client.counter(self.keys.live, delta)
        else:
            self.last_live = self.client.decrement(self.keys.live, -delta) or 0

    def rejournal(self, now: float) -> None:
        """Name every message this server holds in a journal that was lost or is new.

        The witness was emptied (or is new to the namespace, when there is
        nothing to name): without this, emptying this server next would lose
        the messages it holds now without a word.
        """
        assert self.journal is not None
        entries: list[tuple[str, Entry[QueuedHeader] | Entry[DeadHeader]]] = []
        entries += [
            (self.keys.header(e.header.id), e) for e in self.scan.queued(now, advance=False)
        ]
        entries += [(self.keys.dead(e.header.id), e) for e in self.scan.dead(now)]
        entries = [(k, e) for k, e in entries if not e.header.broken]
        if not entries:
            return
        slots = self.journal.write([e.header.id for _, e in entries])
        unused = [
            slot
            for (key, entry), slot in zip(entries, slots, strict=True)
            if not self._name_in_journal(key, entry, slot)
        ]
        self.journal.forget(unused)

    def _name_in_journal(
        self, key: str, entry: Entry[QueuedHeader] | Entry[DeadHeader], slot: str
    ) -> bool:
        """Point a header at its new journal slot; False when it needs none."""
        assert self.journal is not None
        header: Header | None = entry.header
        seen: Versioned | None = entry.seen
        kind = type(entry.header)
        for _ in range(3):  # a flusher may change the header meanwhile: read it again
            if header is None or seen is None or self.journal.current(header.journal):
                return False
            if self.client.cas(key, header.in_journal(slot).encode(), seen):
                return True
            seen = self.client.gets(key)
            header = None if seen is None else kind.whole(seen.value, header.id)
        return False

    # -- enqueue -------------------------------------------------------------------

    def enqueue(self, records: Sequence[Record], now: float) -> Callable[[], None]:
        """Add the records whose home this is, written at ``now``; a function to take them out."""
        dead = self.client.get_many([self.keys.dead(r.id) for r in records])
        fresh = [r for r in records if self.keys.dead(r.id) not in dead]
        if not fresh:
            return lambda: None
        journal = self._name_first(fresh)
        by_bucket: dict[int, list[tuple[Record, str | None]]] = {}
        for record, slot in zip(fresh, journal, strict=True):
            by_bucket.setdefault(place(record.due, max(now, record.created)), []).append(
                (record, slot)
            )
        added: list[Added] = []
        duplicates: list[str | None] = []
        try:
            for bucket, group in by_bucket.items():
                for (record, jslot), slot in zip(
                    group, self.rings.allocate(bucket, len(group)), strict=True
                ):
                    gen = new_gen()
                    header = QueuedHeader.new(Header.of_record(record, gen, jslot), slot, bucket)
                    if self._claim_id(header):
                        added.append((record, slot, gen, bucket))
                    else:
                        duplicates.append(jslot)
            self.client.set_many({self.keys.data(r.id, g): r.data for r, _, g, _ in added})
            self._write_slots(added)
            for bucket in by_bucket:
                self.rings.raise_top(bucket)
            if self.journal is not None:
                self.journal.forget(duplicates)
        except StoreError:
            self._undo(added, journal)
            raise
        self.counted(len(added))
        return lambda: self._undo(added, journal)

    def _write_slots(self, added: list[Added]) -> None:
        """Write the new messages' slots; index again each one a walk passed meanwhile."""
        for bucket in {b for *_, b in added}:
            mine = {slot: r.id.encode() for r, slot, _, b in added if b == bucket}
            passed = self.rings.fill(bucket, mine)
            for i, (record, slot, gen, _) in enumerate(added):
                if slot in passed:
                    placed = (slot, bucket)
                    ids = (record.id, gen)
                    slot, moved_to = index_again(
                        self.client, self.keys, self.rings, ids, placed, passed[slot]
                    )
                    added[i] = (record, slot, gen, moved_to)

    def _name_first(self, records: Sequence[Record]) -> Sequence[str | None]:
        """Journal slots naming ``records`` (None each with one server).

        The journal names a message before it exists, so no moment passes
        where this server holds a message its witness does not know of.
        """
        if self.journal is None:
            return [None] * len(records)
        return self.journal.write([r.id for r in records])

    def _claim_id(self, header: QueuedHeader) -> bool:
        """Take the id for a new message; False when it is already queued.

        A header left by an enqueue that failed before writing its slot is taken
        over, so retrying that enqueue is not mistaken for a duplicate.
        """
        key = self.keys.header(header.id)
        if self.client.add(key, header.encode()):
            return True
        seen = self.client.gets(key)
        if seen is None:
            return self.client.add(key, header.encode())
        if Tombstone.read(seen.value) is not None:
            return False
        old = QueuedHeader.whole(seen.value, header.id)
        if old is None or self.client.get(old.ptr) not in (None, PASSED):
            return False  # queued (a damaged record too: the next claim buries it)
        if not self.client.cas(key, header.encode(), seen):
            return False
        self.forget(header.id, old.journal)
        return True

    def _undo(self, added: list[Added], journal: Sequence[str | None]) -> None:
        try:
            self.client.delete_many([slot for _, slot, _, _ in added])
            self.client.delete_many([self.keys.data(r.id, g) for r, _, g, _ in added])
            self.client.delete_many([self.keys.header(r.id) for r, _, _, _ in added])
            if self.journal is not None:
                self.journal.forget(journal)
        except StoreError:
            pass  # the server is gone too: what it holds is unreachable anyway

    # -- claims --------------------------------------------------------------------

    def take(self, entry: Entry[QueuedHeader], now: float, lease: float) -> Taken | None:
        """Claim one entry by ``cas``: the entry and its new header, or None if another won."""
        token = new_token()
        header = entry.header.claimed(token, now + lease)
        if self.client.cas(self.keys.header(header.id), header.encode(), entry.seen):
            return Taken(entry, header, token)
        return None

    def with_data(
        self, taken: list[Taken], now: float
    ) -> list[tuple[tuple[float, int | str, int], Claim]]:
        """Claims for what was taken, with their data; what has none is reported lost."""
        data = self.client.get_many([t.header.data_key(self.keys) for t in taken])
        claims = []
        for t in taken:
            header = t.header
            raw = data.get(header.data_key(self.keys))
            if raw is None:
                self._lose(header, now, _gone(header))
                continue
            damage = header.damage
            problem = header.data_problem(raw)
            if problem is not None:
                damage = problem if damage is None else f"{damage}; {problem}"
                raw = b""
            record = header.record(raw, damage)
            claims.append((claim_order(t.entry), Claim(record, t.token, header.expires)))
        return claims

    def _lose(self, header: QueuedHeader, now: float, reason: str) -> None:
        key = self.keys.header(header.id)
        seen = self.client.gets(key)
        held = None if seen is None else QueuedHeader.whole(seen.value, header.id)
        if seen is None or held is None or held.token != header.token:
            return
        done = held.tombstone(keep_data=False)
        if self.client.cas(key, done.encode(), seen):
            self.lost(held.id, held, reason, now)
            self.scan.finish(held.id, done)

    def lose_unread(self, entry: Entry[QueuedHeader], now: float) -> bool:
        """Report an entry lost when its data is gone (for counts); True if it was."""
        h = entry.header
        if h.gen and self.client.exists(h.data_key(self.keys)):
            return False
        done = h.tombstone(keep_data=False)
        if self.client.cas(self.keys.header(h.id), done.encode(), entry.seen):
            self.lost(h.id, h, _gone(h), now)
            self.scan.finish(h.id, done)
        return True

    def release_taken(self, taken: list[Taken]) -> None:
        """Give back claims taken by a fetch that then failed (best effort)."""
        for t in taken:
            try:
                key, held, seen = self._held(t.header.id, t.token)
                self.client.cas(key, held.released().encode(), seen)
            except StoreError:
                pass

    def _held(self, mid: str, token: str) -> tuple[str, QueuedHeader, Versioned]:
        key = self.keys.header(mid)
        seen = self.client.gets(key)
        header = None if seen is None else QueuedHeader.whole(seen.value, mid)
        if seen is None or header is None or header.token != token:
            raise _lease_lost(mid)
        return key, header, seen

    def _leave(self, claim: Claim, *, keep_data: bool) -> Tombstone:
        """Turn a held message's header into a tombstone; the tombstone."""
        key, header, seen = self._held(claim.id, claim.token)
        done = header.tombstone(keep_data=keep_data)
        if not self.client.cas(key, done.encode(), seen):
            raise _lease_lost(claim.id)
        return done

    def ack(self, claim: Claim) -> None:
        try:
            self.scan.finish(claim.id, self._leave(claim, keep_data=False))
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
        key, header, seen = self._held(claim.id, claim.token)
        if not self.client.cas(key, header.released().encode(), seen):
            raise _lease_lost(claim.id)

    def requeue(self, claim: Claim, due: float, error: str | None, now: float) -> None:
        """Back at ``due`` after another attempt, indexed as a write at ``now`` is."""
        key, header, seen = self._held(claim.id, claim.token)
        bucket = place(due, now)
        if bucket == header.ring:
            if not self.client.cas(key, header.retried(due, error).encode(), seen):
                raise _lease_lost(claim.id)
            return
        # Moving to another bucket: announce the new slot in the header first
        # ("pending"), so no slot ever names the message without the header naming it.
        if header.old:
            self.client.delete(header.old)
        slot = self._announce(claim, bucket, key, header, seen)
        self.rings.raise_top(bucket)
        try:
            key, header, seen = self._held(claim.id, claim.token)
        except LeaseLost:
            self.client.delete(slot)
            raise
        moved = header.retried(due, error).moved(slot, bucket)
        if header.pending != slot or not self.client.cas(key, moved.encode(), seen):
            self.client.delete(slot)
            raise _lease_lost(claim.id)
        self.client.delete(header.ptr)

    def _announce(
        self, claim: Claim, bucket: int, key: str, header: QueuedHeader, seen: Versioned
    ) -> str:
        """Name a new slot in the header as pending, then write it; the slot.

        A slot a walk passed before it was written is never read again: its
        pending mark is taken back by the next try's (a slot naming a message
        that no longer names it is dropped by the walk that reads it).
        """
        for _ in range(INDEX_TRIES):
            (slot,) = self.rings.allocate(bucket, 1)
            if not self.client.cas(key, header.moving_to(slot).encode(), seen):
                raise _lease_lost(claim.id)
            passed = self.rings.fill(bucket, {slot: claim.id.encode()})
            if not passed:
                return slot
            if passed[slot]:
                self.client.delete(slot)
            key, header, seen = self._held(claim.id, claim.token)
        raise passed_over(claim.id, "requeued (it is due again when its lease ends)")

    def bury(self, claim: Claim, error: str, now: float) -> None:
        _, header, _ = self._held(claim.id, claim.token)
        (slot,) = self.dead.write([(header.last_attempt(error), None)], now)
        try:
            done = self._leave(claim, keep_data=True)
        except LeaseLost:
            self.client.delete(slot)
            raise
        self.scan.finish(claim.id, done)
        self.counted(-1)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        journal = self._name_first(records)
        self.dead.write(
            [
                (Header.of_record(r, new_gen(), slot), r.data)
                for r, slot in zip(records, journal, strict=True)
            ],
            now,
        )
