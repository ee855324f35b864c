"""Reading what the Redis store's scripts return into records, dead letters and loss reports.

The scripts hand back fields as stored, without judging them: Redis cannot
tell a float that Python will not read. Here every field is read strictly;
one that is missing or malformed is replaced by what the indexes knew (the
``created`` and ``due`` scores) or a neutral value, and named in
``Record.damage``, so that a bad record is buried with the reason instead of
stopping the queue.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

from mailqueue_core.store import Claim, DeadLetter, Record

__all__ = [
    "claim_from_row",
    "dead_letter_from_row",
    "lost_letter_from_row",
    "queued_record",
    "stranger_record",
]

_WHOLE = re.compile(rb"[0-9]+")
_SHOWN = 40  # bytes of a malformed value quoted in the damage report


class _Reader:
    """Reads fields, collecting what is wrong with them."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def time(self, raw: bytes | None, name: str, fallback: bytes | None) -> float:
        value = _finite(raw)
        if value is None:
            self._wrong(raw, name, "a time")
            value = _finite(fallback)
        return 0.0 if value is None else value

    def count(self, raw: bytes | None, name: str) -> int:
        if raw is not None and _WHOLE.fullmatch(raw):
            return int(raw)
        self._wrong(raw, name, "a whole number")
        return 0

    def data(self, raw: bytes | None) -> bytes:
        if raw is None:
            self.problems.append("data is missing")
            return b""
        return raw

    @property
    def damage(self) -> str | None:
        return "; ".join(self.problems) or None

    def _wrong(self, raw: bytes | None, name: str, kind: str) -> None:
        if raw is None:
            self.problems.append(f"{name} is missing")
        else:
            shown = raw[:_SHOWN].decode("utf-8", "replace")
            self.problems.append(f"{name} is {shown!r}, not {kind}")


def claim_from_row(row: Sequence[Any], expires: float) -> Claim:
    """A claim from one row of the claim script (see ``CLAIM`` in :mod:`.scripts`)."""
    return Claim(queued_record([row[0], *row[2:]]), row[1].decode(), expires)


def queued_record(values: Sequence[Any]) -> Record:
    """A queued record from ``[id, data, created, due, attempts, last_error, created
    score, due score]`` (fields as stored, scores the indexes' fallbacks)."""
    # The usual record, whole, read without the bookkeeping of a damaged one.
    data, created, due, attempts = values[1], values[2], values[3], values[4]
    if data is not None and created and due and attempts and attempts.isdigit():
        try:
            created_at, due_at = float(created), float(due)
        except ValueError:
            pass
        else:
            if math.isfinite(created_at) and math.isfinite(due_at):
                return Record(
                    values[0].decode(), data, created_at, due_at, int(attempts), _text(values[5])
                )
    return _damaged_record(values)


def _damaged_record(values: Sequence[Any]) -> Record:
    """What the fast path refused: every such row has a field missing or malformed."""
    mid = bytes(values[0])
    data, created, due, attempts, last_error, created_score, due_score = _stored(values[1:])
    read = _Reader()
    record = Record(
        id=mid.decode(),
        data=read.data(data),
        created=read.time(created, "created", created_score or due_score),
        due=read.time(due, "due", due_score),
        attempts=read.count(attempts, "attempts"),
        last_error=_text(last_error),
    )
    return dataclasses.replace(record, damage=f"damaged record: {read.damage}")


def stranger_record(mid: bytes, kind: bytes, created_score: Any, due_score: Any) -> Record:
    """What is known of a queued id whose key is not a hash (``kind`` is its ``TYPE``):
    the indexes' times, and the damage. A claim would report it lost or bury it."""
    created, due = (_finite(raw) for raw in _stored([created_score, due_score]))
    problem = (
        "its record is gone (deleted or evicted)"
        if kind == b"none"
        else f"its key holds a {kind.decode()}, not a hash"
    )
    return Record(
        id=mid.decode(),
        data=b"",
        created=created if created is not None else (due or 0.0),
        due=due or 0.0,
        damage=f"damaged record: {problem}",
    )


def dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """A dead letter from a row of ``READ_LETTERS`` (fields: ``DEAD_FIELDS`` of the client)."""
    mid, buried = bytes(row[0]), bytes(row[1])
    data, created, due, attempts, last_error, reason = _stored(row[2:])
    read = _Reader()
    record = Record(
        id=mid.decode(),
        data=read.data(data),
        created=read.time(created, "created", buried),
        due=read.time(due, "due", buried),
        attempts=read.count(attempts, "attempts"),
        last_error=_text(last_error),
    )
    why = _text(reason) or ""
    if read.damage is not None:
        why = f"{why} (dead letter damaged: {read.damage})" if why else read.damage
        record = dataclasses.replace(record, damage=f"damaged dead letter: {read.damage}")
    return DeadLetter(record, why, float(buried))


def lost_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    """A loss report from a row of ``READ_LETTERS`` (``LOST_FIELDS``): listed, marked lost."""
    mid, found = bytes(row[0]), bytes(row[1])
    created, due, reason = _stored(row[2:])
    read = _Reader()
    record = Record(
        id=mid.decode(),
        data=b"",
        created=read.time(created, "created", found),
        due=read.time(due, "due", found),
    )
    return DeadLetter(record, _text(reason) or "lost", float(found), lost=True)


def _stored(values: Sequence[Any]) -> list[bytes | None]:
    """Fields as the scripts return them: bytes, or False (Lua's nil) for absent."""
    return [None if value is False or value is None else bytes(value) for value in values]


def _finite(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
