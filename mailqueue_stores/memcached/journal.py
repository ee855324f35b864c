"""How a memcached store spread over several servers tells exactly what a wiped server held.

Every message lives whole on its home server, so a server that restarts empty
takes its messages with it and leaves the others untouched. To say which
messages it took, each server ``S`` has a *witness*, the next server in the
sorted list, which keeps ``S``'s *journal*: a ring of slots naming every
message ``S`` holds (queued or dead), one ring per epoch of ``S`` (the token of
``S``'s epoch marker, which changes when ``S`` is emptied). A message's
journal slot is written before the message and deleted when the message
leaves the store for good (ack, purge, a loss report), before its header.

When a client finds an epoch of ``S`` listed on the witness that is not ``S``'s
current one, ``S`` was emptied since that epoch: every message still named in
that epoch's ring and not on ``S`` now is reported lost by id, except one that
was delivered while ``S`` could not be told (``s:<id>``, written by an ack that
found ``S`` unreachable). A process started after the wipe finds it as well as
one that was running. Each id is reported once: the client whose ``delete`` of
the journal slot succeeds reports it.

What this cannot see: a wipe of ``S`` and of its witness before the queue has
been walked (two servers lost at once).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.codec import decode_or_none, dumps
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.losses import LossLedger, LossReport
from mailqueue_stores.memcached.rings import Rings, Slot


def emptied(server: str) -> str:
    return (
        f"memcached {server} was emptied (a restart, flush_all or the eviction of its"
        " namespace marker) while it held this message"
    )


def _epochs(raw: bytes | None) -> list[str] | None:
    value = decode_or_none(raw)
    if isinstance(value, list) and all(isinstance(e, str) for e in value):
        return value
    return None


class Journal:
    """The journal of one server (the subject), kept on its witness."""

    def __init__(
        self,
        subject: str,
        witness: MemcachedClient,
        keys: Keys,
        rings: Rings,
        ledger: LossLedger,
    ) -> None:
        self.subject = subject
        self._client = witness
        self._keys = keys
        self._rings = rings
        self._ledger = ledger
        self._list_key = keys.journals(subject)
        #: The subject's epoch, as last read and already listed on the witness:
        #: the ring new messages are named in.
        self.epoch: str | None = None
        self._audited: tuple[str, ...] | None = None

    # -- the messages of the current epoch ----------------------------------------

    def write(self, ids: list[str]) -> list[str]:
        """Name ``ids`` in the current epoch's ring; their journal slots."""
        assert self.epoch is not None, "sync() first"
        ring = self._keys.journal_ring(self.subject, self.epoch)
        slots = self._rings.allocate(ring, len(ids))
        self._client.set_many({s: mid.encode() for s, mid in zip(slots, ids, strict=True)})
        return slots

    def drop(self, entries: Iterable[tuple[str, str | None]]) -> None:
        """Forget messages that left the store: ``(id, journal slot)`` pairs."""
        keys: list[str | None] = []
        for mid, slot in entries:
            keys += [slot, self._keys.sent(mid)]
        self._client.delete_many(keys)

    def forget(self, slots: Iterable[str | None]) -> None:
        """Drop journal slots written for messages that were not added after all."""
        self._client.delete_many(slots)

    def delivered(self, mid: str) -> None:
        """Note that ``mid`` was delivered though its server could not be told."""
        self._client.set_many({self._keys.sent(mid): b"1"})

    # -- epochs ---------------------------------------------------------------------

    def sync(self, epoch: str, listed_raw: bytes | None) -> list[str] | None:
        """List the subject's current ``epoch`` on the witness; the older epochs listed.

        None when the witness had no list: it is new to the namespace, or it was
        emptied and took the journal with it (see :meth:`current`).
        """
        listed = _epochs(listed_raw)
        while listed is None or epoch not in listed:
            # Each failed cas means another client changed the list: no livelock.
            seen = self._client.gets(self._list_key)
            if seen is None:
                if self._client.add(self._list_key, dumps([epoch])):
                    self.epoch = epoch
                    return None
                continue
            # A damaged list is started again: the epochs it named are unknown.
            listed = _epochs(seen.value) or []
            if epoch not in listed and self._client.cas(
                self._list_key, dumps([*listed, epoch]), seen
            ):
                break
        # Set only once listed: other threads may be writing to the journal.
        self.epoch = epoch
        return [e for e in listed if e != epoch]

    def current(self, slot: object) -> bool:
        """Whether a message's journal slot is in the current epoch's ring."""
        assert self.epoch is not None, "sync() first"
        ring = self._keys.journal_ring(self.subject, self.epoch)
        return isinstance(slot, str) and slot.startswith(self._keys.slot(ring, 0)[:-1])

    def audit(self, old: list[str], subject: MemcachedClient, now: float, *, again: bool) -> None:
        """Report what the subject lost in each of its ``old`` epochs.

        Skipped when this client already audited the same epochs, unless ``again``.
        """
        if not old or (not again and self._audited == (self.epoch, *old)):
            return
        for epoch in old:
            if self._walk(epoch, subject, now):
                self._unlist(epoch)
        self._audited = (self.epoch or "", *old)

    def _walk(self, epoch: str, subject: MemcachedClient, now: float) -> bool:
        """Report the lost messages of one old epoch; True when none is left in its ring."""
        ring = self._keys.journal_ring(self.subject, epoch)
        bounds = self._rings.bounds([ring]).get(ring)
        if bounds is None:
            return True
        keys = self._keys

        def finished(chunk: list[Slot]) -> list[bool]:
            ids = [s.mid for s in chunk if s.value is not None]
            there = subject.get_many([keys.header(m) for m in ids] + [keys.dead(m) for m in ids])
            sent = self._client.get_many([keys.sent(m) for m in ids])
            over = []
            for slot in chunk:
                mid = slot.mid
                # One written to the subject after it came back is not lost.
                live = slot.value is not None and (
                    keys.header(mid) in there or keys.dead(mid) in there
                )
                if slot.value is not None and not live and self._client.delete(slot.key):
                    if keys.sent(mid) in sent:
                        self._client.delete(keys.sent(mid))
                    else:
                        self._ledger.report(LossReport.of(mid, None, emptied(self.subject), now))
                over.append(not live)
            return over

        if not self._rings.sweep(ring, bounds, finished):
            return False
        self._client.delete_many([keys.tail(ring), keys.head(ring)])
        return True

    def _unlist(self, epoch: str) -> None:
        """Drop a fully reported epoch from the list.

        A lost race leaves it listed; the next audit finds its ring gone and
        drops it then.
        """
        seen = self._client.gets(self._list_key)
        listed = None if seen is None else _epochs(seen.value)
        if seen is not None and listed is not None:
            rest = [e for e in listed if e != epoch]
            self._client.cas(self._list_key, dumps(rest), seen)
