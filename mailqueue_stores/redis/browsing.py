"""Browsing the Redis store a page at a time: cursors, what each state walks, and entries.

Each state is a window of one sorted set, ordered by (score, id) as Redis
orders it: ready is ``due`` up to ``now``, scheduled ``due`` after it (both
leaving out the ids in ``held``: a claimed id stays in ``due`` at its lease
expiry), in flight ``held`` after ``now``, stuck ``held`` up to it, and the
dead letters ``dead`` and ``lost`` merged. A page is two calls: the walk
(``WALK`` in :mod:`~mailqueue_stores.redis.console`) reads the next ids from
the cursor on, then ``READ_RECORDS`` reads them; an id that left the state in
between is left out. A cursor is the (score, id) of the last id the walk
passed, so it survives any change: the next page resumes after it by rank.
The walk examines at most :data:`EXAMINE` ids per ``limit`` (plus a few), so
a window crowded with ids of another state (a thousand stuck claims among the
ready mail) gives short pages, each with a cursor, never an unbounded one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

from mailqueue_core.store import Entry, Page, State
from mailqueue_stores.redis.client import RedisClient, Row
from mailqueue_stores.redis.records import (
    dead_letter_from_row,
    lost_letter_from_row,
    queued_record,
    stranger_record,
)

__all__ = ["Position", "browse", "entry_from_row", "get", "unique"]

#: How many ids a walk may examine per id asked for, when it skips claimed ones.
EXAMINE = 4
_LOST = "lost"


@dataclasses.dataclass(frozen=True, order=True)
class Position:
    """Where an id sorts in its state: its score, its id, and for the dead
    letters whether it is a loss report (which sorts after a dead letter of
    the same time and id)."""

    score: float
    id: str
    lost: bool = False

    def encode(self) -> str:
        shown: list[Any] = [self.score, self.id, _LOST] if self.lost else [self.score, self.id]
        return json.dumps(shown, separators=(",", ":"))

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            value = json.loads(cursor)
        except (ValueError, TypeError) as exc:
            raise ValueError(_not_ours(cursor)) from exc
        if not isinstance(value, list) or len(value) not in (2, 3):
            raise ValueError(_not_ours(cursor))
        score, mid, *lost = value
        if (
            not isinstance(score, (int, float))
            or isinstance(score, bool)
            or not math.isfinite(score)
            or not isinstance(mid, str)
            or lost not in ([], [_LOST])
        ):
            raise ValueError(_not_ours(cursor))
        return cls(float(score), mid, bool(lost))


def _not_ours(cursor: object) -> str:
    shown = cursor[:80] if isinstance(cursor, str) else cursor
    return f"not a cursor of this redis store's browse(): {shown!r}"


@dataclasses.dataclass(frozen=True)
class _Window:
    index: str
    bounds: str
    """``le`` (scores up to now), ``gt`` (after now) or ``all``."""
    skip_held: bool


def browse(
    client: RedisClient,
    state: State,
    now: float,
    limit: int,
    cursor: str | None,
    newest_first: bool,
) -> Page[Entry]:
    """One page of ``state`` (see :meth:`mailqueue_core.store.Store.browse`)."""
    if limit < 1:
        raise ValueError(f"browse() needs a limit of at least 1, not {limit}")
    after = None if cursor is None else Position.decode(cursor)
    if after is not None and after.lost and state is not State.DEAD:
        raise ValueError(f"a cursor of the dead letters cannot browse {state.value} mail")
    want = limit + 1  # one more than the page, to know whether a next page exists
    k = client.keys
    if state is State.DEAD:
        windows = [_Window(k.dead, "all", False), _Window(k.lost, "all", False)]
    else:
        windows = [_windows(k.due, k.held)[state]]
    # A tie of a dead letter and a loss report (same time, same id) sorts dead first:
    # the index after the cursor's in the walk's direction still has it to come.
    cursor_index = int(after.lost) if after is not None else 0
    ties = [
        (i < cursor_index) if newest_first else (i > cursor_index) for i in range(len(windows))
    ]
    walked = client.walk(
        [w.index for w in windows],
        windows[0].bounds,
        now,
        reverse=newest_first,
        want=want,
        cap=EXAMINE * want + 100,
        skip_held=windows[0].skip_held,
        after=None if after is None else (after.score, after.id),
        ties_to_come=ties,
    )
    found = sorted(
        (
            Position(float(score), mid.decode(), lost=i == 1)
            for i, (flat, _) in enumerate(walked)
            for mid, score in zip(flat[::2], flat[1::2], strict=True)
        ),
        reverse=newest_first,
    )
    page = found[:limit]
    following: Position | None = None
    if len(found) > limit:
        following = page[-1]
    elif walked[0][1] is not None:  # only a walk that skips claimed ids stops early
        mid, score = walked[0][1]
        following = Position(float(score), mid.decode())
    entries: list[Entry] = []
    if page:
        dead = state is State.DEAD
        wanted = [(p.id, "l" if p.lost else "d" if dead else "q") for p in page]
        rows = client.read_records(wanted)
        entries = [e for e in (entry_from_row(row, now) for row in rows) if e.state is state]
    return Page(entries, None if following is None else following.encode())


def _windows(due: str, held: str) -> dict[State, _Window]:
    return {
        State.READY: _Window(due, "le", True),
        State.SCHEDULED: _Window(due, "gt", True),
        State.IN_FLIGHT: _Window(held, "gt", False),
        State.STUCK: _Window(held, "le", False),
    }


def get(client: RedisClient, record_id: str, now: float) -> Entry | None:
    """The record ``record_id`` with its state (see :meth:`~mailqueue_core.store.Store.get`)."""
    rows = client.read_records([(record_id, "*")])
    return entry_from_row(rows[0], now) if rows else None


def entry_from_row(row: Row, now: float) -> Entry:
    """An entry from a row of ``READ_RECORDS``, its state as of ``now``.

    A claimed record is in flight while its lease runs by ``now`` (the
    caller's clock, as the store contract says) and stuck after that.
    """
    kind = bytes(row[1])
    if kind == b"dead":
        letter = dead_letter_from_row([row[0], *row[2:]])
        return Entry(letter.record, State.DEAD, buried=letter.buried, reason=letter.reason)
    if kind == b"lost":
        letter = lost_letter_from_row([row[0], *row[2:]])
        return Entry(
            letter.record, State.DEAD, buried=letter.buried, reason=letter.reason, lost=True
        )
    mid, due, held, created, key_type, fields = row[0], row[2], row[3], row[4], row[5], row[6:]
    # A claimed id's score in `due` is its lease expiry, no fallback for its due time.
    due_fallback = due if held is None else None
    if key_type == b"hash":
        record = queued_record([mid, *fields, created, due_fallback])
    else:
        record = stranger_record(mid, key_type, created, due_fallback)
    if held is not None:
        expires = float(held)
        return Entry(record, State.IN_FLIGHT if expires > now else State.STUCK, expires=expires)
    return Entry(record, State.SCHEDULED if float(due) > now else State.READY)


def unique(ids: Sequence[str]) -> list[str]:
    """``ids`` without repeats, in their order."""
    return list(dict.fromkeys(ids))
