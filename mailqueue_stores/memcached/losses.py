"""The loss reports a memcached server keeps: the lost ring.

A message is reported lost when the store finds that memcached no longer has
it: its header or data was evicted or deleted (found by a walk, a claim or a
count), or the server that held it was emptied (found through its journal, see
:mod:`mailqueue_stores.memcached.journal`). A report (:class:`LossReport`)
names the message by id with whatever else is known of it; a guard item
(``l:<id>``) makes sure that an id is reported once, whichever client notices
first and however it noticed. With a single server, a restart is reported by
count instead (the ids went with the server).

Every report is logged at ERROR and kept in the lost ring, where ``stats()``
counts it and ``dead_letters()`` lists it with ``lost=True`` until purged.
"""

from __future__ import annotations

import dataclasses

from mailqueue_core.store import DeadLetter, Record
from mailqueue_core.text import get_logger
from mailqueue_stores.memcached import codec
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.codec import (
    Stored,
    count_or_none,
    number,
    stored,
    text,
    text_or_none,
)
from mailqueue_stores.memcached.headers import Header
from mailqueue_stores.memcached.keys import LOST_RING, Keys
from mailqueue_stores.memcached.rings import Rings, Slot

log = get_logger("mailqueue.stores.memcached")


def _number_or_none(v: object) -> bool:
    return v is None or number(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossReport(Stored):
    """A message (or, with ``count`` > 1, several) known to have existed and gone."""

    id: str = stored("id", text)
    created: float | None = stored("created", _number_or_none, required=False)
    due: float | None = stored("due", _number_or_none, required=False)
    attempts: int | None = stored("attempts", count_or_none, required=False)
    error: str | None = stored("err", text_or_none, required=False)
    size: int | None = stored("size", count_or_none, required=False)
    reason: str = stored("reason", text)
    detected: float = stored("detected", number)
    count: int = stored("count", codec.count)
    """How many messages it stands for: more than one for a lone server's restart."""

    @classmethod
    def of(cls, mid: str, known: Header | None, reason: str, detected: float) -> LossReport:
        """The report of one message, with what is known of it beside its data."""
        if known is None:
            return cls(id=mid, reason=reason, detected=detected, count=1)
        return cls(
            id=mid,
            created=known.created,
            due=known.due,
            attempts=known.attempts,
            error=known.error,
            size=known.size,
            reason=reason,
            detected=detected,
            count=1,
        )

    @classmethod
    def read(cls, raw: bytes | None) -> LossReport:
        """A report as written, or a stand-in for one that was damaged (it still counts)."""
        parsed = cls.parse(raw or b"")
        if all(name in parsed.fields for name in ("id", "reason", "detected", "count")):
            return cls(**parsed.fields)
        return cls(
            id="unknown", reason="a loss report that is itself damaged", detected=0.0, count=1
        )

    def letter(self) -> DeadLetter:
        record = Record(
            id=self.id,
            data=b"",
            created=self.created or self.detected,
            due=self.due or self.detected,
            attempts=self.attempts or 0,
            last_error=self.error,
        )
        return DeadLetter(record, self.reason, self.detected, lost=True)


class LossLedger:
    def __init__(self, client: MemcachedClient, keys: Keys, rings: Rings, namespace: str) -> None:
        self._client = client
        self._keys = keys
        self._rings = rings
        self._namespace = namespace

    def report(self, report: LossReport) -> bool:
        """Report the message ``report.id`` lost; False when it was reported already."""
        if not self._client.add(self._keys.reported(report.id), b"1"):
            return False
        self._file(report)
        log.error(
            "memcached store (namespace %r) lost message %s: %s",
            self._namespace,
            report.id,
            report.reason,
        )
        return True

    def report_count(self, name: str, count: int, reason: str, now: float) -> None:
        """Report ``count`` messages lost whose ids are not known (a wipe of a lone server)."""
        self._file(
            LossReport(id=name, created=now, due=now, reason=reason, detected=now, count=count)
        )
        log.error("memcached store (namespace %r): %s", self._namespace, reason)

    def _file(self, report: LossReport) -> None:
        (slot,) = self._rings.allocate(LOST_RING, 1)
        self._client.set_many({slot: report.encode()})

    # -- the lost ring -----------------------------------------------------------

    def entries(self) -> list[tuple[str, LossReport]]:
        """``(slot key, report)`` for every report not yet purged, oldest first."""
        bounds = self._rings.bounds([LOST_RING]).get(LOST_RING)
        if bounds is None:
            return []
        out: list[tuple[str, LossReport]] = []

        def finished(chunk: list[Slot]) -> list[bool]:
            out.extend((s.key, LossReport.read(s.value)) for s in chunk if s.value is not None)
            return [s.value is None for s in chunk]

        self._rings.sweep(LOST_RING, bounds, finished)
        return out

    def total(self) -> int:
        return sum(report.count for _, report in self.entries())

    def purge(self, before: float) -> int:
        purged = 0
        for key, report in self.entries():
            if report.detected < before and self._client.delete(key):
                self._client.delete(self._keys.reported(report.id))
                purged += 1
        return purged
