"""A message's headers in memcached: typed values that own their encoding and their rules.

A queued message's header (``m:<id>``, :class:`QueuedHeader`) and a dead
letter's (``z:<id>``, :class:`DeadHeader`) hold everything but the message's
data: its facts (:class:`Header`), where it is indexed, and for a queued one
the claim that holds it. Every change of state is a ``cas`` on the header, so
of two clients acting on one message exactly one wins; the methods here say
what each change makes of a header, and the store only writes the result.

A header is written only by this store, but memcached is shared: an operator,
another program or a bug can delete, cut short or overwrite it. The claim path
must not stop on that, so :meth:`Header.read` never raises: a header that
cannot be read whole comes back ``broken``, with what could be read,
placeholders for the rest and ``damage`` saying what is wrong, so that the
claim path hands it out for burial or reports it lost. :meth:`Header.whole`
is for the paths that act on a header only when it is whole.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
import zlib
from typing import Any, ClassVar, TypeVar

from mailqueue_core.store import Record
from mailqueue_stores.memcached.buckets import start_of
from mailqueue_stores.memcached.codec import (
    Parsed,
    Stored,
    count,
    count_or_none,
    decode_or_none,
    dumps,
    number,
    ring_name,
    shown,
    stored,
    text,
    text_or_none,
)
from mailqueue_stores.memcached.keys import Keys, Ring
from mailqueue_stores.memcached.rings import Slot

H = TypeVar("H", bound="Header")


def new_token() -> str:
    """A fresh claim token: a later claim on the same message never has the same one."""
    return secrets.token_hex(16)


def new_gen() -> str:
    """A fresh generation: the data item of each incarnation of a message is apart."""
    return secrets.token_hex(6)


def checksum(data: bytes) -> int:
    return zlib.crc32(data)


class State(enum.Enum):
    """Where a queued message stands at ``now`` (see :class:`mailqueue_core.store.Stats`)."""

    READY = "ready"
    SCHEDULED = "scheduled"
    IN_FLIGHT = "in_flight"
    STUCK = "stuck"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Header(Stored):
    """What the store knows of a message beside its data: the facts both headers share."""

    called: ClassVar[str] = "its header"

    id: str = stored("id", text)
    created: float = stored("created", number)
    due: float = stored("due", number)
    attempts: int = stored("attempts", count)
    error: str | None = stored("err", text_or_none)
    size: int | None = stored("size", count_or_none)
    """The data's length; None when not known (read from a damaged header)."""
    checksum: int | None = stored("sum", count_or_none, required=False)
    gen: str = stored("gen", text)
    """Names the data item (``d:<id>:<gen>``); ``""`` when it could not be read."""
    journal: str | None = stored("j", text_or_none, required=False)
    """Its slot in its server's journal on the witness (several servers only)."""
    damage: str | None = stored("damage", text_or_none, required=False)
    """What is wrong with the record: kept in a claimed damaged header, so it
    stays the same when the claim runs out and the record is handed out again."""
    broken: bool = dataclasses.field(default=False, compare=False)
    """Read from an item that is not whole: the fields it lacked are placeholders,
    and nothing it says about its claim can be trusted. Never stored."""

    @classmethod
    def of_record(cls, record: Record, gen: str, journal: str | None) -> Header:
        return Header(
            id=record.id,
            created=record.created,
            due=record.due,
            attempts=record.attempts,
            error=record.last_error,
            size=len(record.data),
            checksum=checksum(record.data),
            gen=gen,
            journal=journal,
        )

    def facts(self) -> dict[str, Any]:
        """The shared facts, to build another kind of header from."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(Header)
            if f.name not in ("damage", "broken")
        }

    def in_journal(self: H, slot: str) -> H:
        return dataclasses.replace(self, journal=slot)

    # -- reading -------------------------------------------------------------------

    @classmethod
    def _parse_of(cls, raw: bytes, mid: str) -> Parsed:
        parsed = cls.parse(raw)
        named = parsed.fields.get("id")
        if named is not None and named != mid:
            parsed.problems.append(f"its header names another message ({shown(named)})")
        parsed.fields["id"] = mid
        return parsed

    @classmethod
    def whole(cls: type[H], raw: bytes, mid: str) -> H | None:
        """The header of ``mid`` stored as ``raw`` when it is whole; None otherwise."""
        parsed = cls._parse_of(raw, mid)
        return None if parsed.problems else cls(**parsed.fields)

    @classmethod
    def read(cls: type[H], raw: bytes, mid: str, slot: Slot, now: float) -> H:
        """The header of ``mid`` found through ``slot``, whole or ``broken``; never raises."""
        parsed = cls._parse_of(raw, mid)
        if not parsed.problems:
            return cls(**parsed.fields)
        when = start_of(slot.ring) if isinstance(slot.ring, int) else now
        stand_in: dict[str, Any] = {
            "created": when,
            "due": when,
            "attempts": 0,
            "error": None,
            "size": None,
            "gen": "",
            "pending": None,
            "token": None,
            "expires": 0.0,
            "buried": now,
        }
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stand_in.items() if k in names}
        values.update(parsed.fields)
        # Nothing it says about where it is indexed can be trusted: the slot it
        # was found by is where it is.
        values.update({k: v for k, v in (("ptr", slot.key), ("ring", slot.ring)) if k in names})
        values["damage"] = parsed.fields.get("damage") or "; ".join(parsed.problems)
        return cls(**values, broken=True)

    # -- the data ------------------------------------------------------------------

    def data_key(self, keys: Keys) -> str:
        return keys.data(self.id, self.gen)

    def data_problem(self, data: bytes) -> str | None:
        """What is wrong with the message's data item, judged by this header; None if nothing."""
        if self.size is not None and len(data) != self.size:
            return f"its data is {len(data)} bytes; {self.size} were written"
        if self.checksum is not None and checksum(data) != self.checksum:
            return "its data does not match the checksum written with it"
        return None

    def record(self, data: bytes, damage: str | None = None) -> Record:
        return Record(
            id=self.id,
            data=data,
            created=self.created,
            due=self.due,
            attempts=self.attempts,
            last_error=self.error,
            damage=damage or self.damage,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueuedHeader(Header):
    """The header of a queued message (``m:<id>``)."""

    ptr: str = stored("ptr", text)
    """The one slot that indexes this message."""
    pending: str | None = stored("pend", text_or_none)
    """A slot being written by a requeue in progress (announced before it is written)."""
    token: str | None = stored("tok", text_or_none)
    """The token of the claim that holds it, if any."""
    expires: float = stored("exp", number)
    """When that claim's lease runs out (the caller's clock)."""
    ring: int | str = stored("ring", ring_name)
    """The bucket ``ptr`` is in."""
    old: str | None = stored("old", text_or_none, required=False)
    """The slot a requeue moved it from, if that requeue died before dropping it."""

    @classmethod
    def new(cls, facts: Header, ptr: str, ring: Ring) -> QueuedHeader:
        return cls(**facts.facts(), ptr=ptr, pending=None, token=None, expires=0.0, ring=ring)

    # -- the claim -------------------------------------------------------------------

    def held(self, now: float) -> bool:
        """Held by a claim whose lease has not run out at ``now``."""
        return self.token is not None and self.expires > now

    def claimable(self, now: float) -> bool:
        if self.broken:
            return True  # nothing it says about its claim can be trusted: bury it now
        return self.due <= now and not self.held(now)

    def waiting(self, now: float) -> bool:
        """Claimable and not a claim whose lease ran out.

        Walks stop once they found enough of these: a message whose lease ran
        out sorts by its expiry, which can be later than messages in later buckets.
        """
        return self.claimable(now) and (self.broken or self.token is None)

    @property
    def due_again(self) -> float:
        """When it is due: a message whose lease ran out is due again from its expiry."""
        return self.due if self.token is None else max(self.due, self.expires)

    def state(self, now: float) -> State:
        if self.broken:
            return State.READY  # claimable at once, for burial
        if self.token is not None:
            return State.IN_FLIGHT if self.expires > now else State.STUCK
        return State.SCHEDULED if self.due > now else State.READY

    # -- changes, each written by one cas ---------------------------------------------

    def claimed(self, token: str, expires: float) -> QueuedHeader:
        return dataclasses.replace(self, token=token, expires=expires)

    def released(self) -> QueuedHeader:
        return dataclasses.replace(self, token=None, expires=0.0)

    def retried(self, due: float, error: str | None) -> QueuedHeader:
        """Released for another attempt at ``due`` (a requeue)."""
        return dataclasses.replace(
            self.released(), due=due, attempts=self.attempts + 1, error=error
        )

    def moving_to(self, slot: str) -> QueuedHeader:
        """A requeue's first step: the new slot is named before it is written."""
        return dataclasses.replace(self, pending=slot, old=None)

    def moved(self, slot: str, ring: Ring) -> QueuedHeader:
        """A requeue's last step: indexed by ``slot``; the old slot is dropped next."""
        return dataclasses.replace(self, ptr=slot, ring=ring, pending=None, old=self.ptr)

    def indexed_at(self, slot: str, ring: Ring) -> QueuedHeader:
        """Indexed by ``slot`` instead: a walk passed its slot before it was written."""
        return dataclasses.replace(self, ptr=slot, ring=ring)

    def move_abandoned(self) -> QueuedHeader:
        """A requeue that died before its last step: its new slot is dropped."""
        return dataclasses.replace(self, pending=None)

    def slots(self) -> list[str]:
        """Every slot that may name this message."""
        return [s for s in (self.ptr, self.pending, self.old) if s]

    def tombstone(self, *, keep_data: bool) -> Tombstone:
        """What this header becomes when the message leaves the queue.

        ``keep_data``: it moves to the dead letters, which keep its data and its
        journal slot. Otherwise it leaves the store (ack, loss) and both go.
        """
        return Tombstone(
            slots=tuple(self.slots()),
            data=not keep_data,
            gen=self.gen,
            journal=None if keep_data else self.journal,
        )

    def last_attempt(self, error: str) -> QueuedHeader:
        """The facts of the dead letter it becomes: the attempt that buried it counts."""
        return dataclasses.replace(self, error=error, attempts=self.attempts + 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadHeader(Header):
    """The header of a dead letter (``z:<id>``); its data item is kept."""

    ptr: str = stored("ptr", text)
    """Its slot in the dead ring."""
    buried: float = stored("buried", number)

    @classmethod
    def of(cls, facts: Header, ptr: str, buried: float) -> DeadHeader:
        return cls(**facts.facts(), ptr=ptr, buried=buried)

    def revived(self, now: float, ptr: str, ring: Ring) -> QueuedHeader:
        """Queued again, due at ``now`` with a fresh ``MAX_AGE`` (created ``now``, no attempts)."""
        facts = dataclasses.replace(self, created=now, due=now, attempts=0)
        return QueuedHeader.new(facts, ptr, ring)


@dataclasses.dataclass(frozen=True)
class Tombstone:
    """What a header becomes when its message leaves the queue: what is left to delete.

    Written by ``cas`` over the header (so a newer claim wins); then the items
    it names are deleted, the tombstone last. A client that dies half-way
    leaves it for the next walk to finish.
    """

    slots: tuple[str, ...]
    data: bool
    """The data item goes too (ack, loss); a burial keeps it for the dead letter."""
    gen: str | None
    journal: str | None
    """The journal slot to drop first; None when the message stays named (dead)."""

    def encode(self) -> bytes:
        value = {
            "done": True,
            "slots": list(self.slots),
            "data": self.data,
            "gen": self.gen,
            "j": self.journal,
        }
        return dumps(value)

    @classmethod
    def read(cls, raw: bytes) -> Tombstone | None:
        """The tombstone ``raw`` holds, or None when it holds something else (a header)."""
        value = decode_or_none(raw)
        if not isinstance(value, dict) or value.get("done") is not True:
            return None
        slots = value.get("slots")
        gen, journal = value.get("gen"), value.get("j")
        return cls(
            slots=tuple(s for s in slots if isinstance(s, str) and s)
            if isinstance(slots, list)
            else (),
            data=bool(value.get("data")),
            gen=gen if isinstance(gen, str) else None,
            journal=journal if isinstance(journal, str) else None,
        )

    def items(self, keys: Keys, mid: str) -> list[str]:
        """The keys left to delete before the tombstone itself."""
        found = list(self.slots)
        if self.data and self.gen is not None:
            found.append(keys.data(mid, self.gen))
        return found
