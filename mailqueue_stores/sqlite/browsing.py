"""Pages of the SQLite store's records by state, for the console's ``browse``.

Each state is one or more ranges of one index, walked in the index's order
from the cursor on, so a page reads its own entries and a few index pages
above them, however deep the queue: ready and scheduled rows in the
``(namespace, due, id)`` index of the waiting rows, in-flight and stuck rows
in the one of the claimed rows (``due`` is then the lease expiry), dead
letters in ``(namespace, buried, id)``. Every statement names its index
(``INDEXED BY``), so a planner's change of mind fails loudly instead of
scanning the table.

SQLite orders NULL before numbers, numbers before texts and texts before
blobs. A row damaged by hand may hold any of them where the time should be:
such a row counts as due (as :meth:`~mailqueue_stores.sqlite.SQLiteStore.stats`
and the claim count it), so ready and stuck are three ranges each (NULLs,
numbers up to ``now``, texts and blobs), walked in that order. A cursor is the
last listed row's ``(time, id)`` as SQLite holds them, types kept, written as
JSON with the state it belongs to (:class:`Position`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from collections.abc import Sequence

from mailqueue_core.store import Entry, Page, State
from mailqueue_stores.sqlite.rows import Row, read_dead, read_record, readable, shown_id
from mailqueue_stores.sqlite.schema import HELD_INDEX, WAITING_INDEX

__all__ = ["Position", "bind", "live_state", "read_entry", "read_page", "statements"]

_LIVE = "id, due, record_due, created, attempts, last_error, data"
_DEAD = "id, buried, reason, created, due, attempts, last_error, data"
#: A text's bytes: a text that is not UTF-8 (read with surrogateescape) cannot
#: be bound as a ``str``, so it is bound as a blob and cast back.
_AS_TEXT = "CAST(? AS TEXT)"


@dataclasses.dataclass(frozen=True)
class _Index:
    """Where a group of states is kept: a table, its index, the column it sorts by."""

    table: str
    index: str
    key: str
    columns: str
    rows: str | None
    """The rows of the table the index holds (a partial index's WHERE)."""


_WAITING = _Index("mailqueue_queue", WAITING_INDEX, "due", _LIVE, "token IS NULL")
_HELD = _Index("mailqueue_queue", HELD_INDEX, "due", _LIVE, "token IS NOT NULL")
_BURIED = _Index("mailqueue_dead", "mailqueue_dead_buried", "buried", _DEAD, None)


@dataclasses.dataclass(frozen=True)
class _Bound:
    value: float | str
    inclusive: bool


@dataclasses.dataclass(frozen=True)
class _Range:
    """Values of the sort column, in SQLite's order: the NULLs, or those between the bounds."""

    nulls: bool = False
    lower: _Bound | None = None
    upper: _Bound | None = None


def _ranges(state: State, now: float) -> tuple[_Index, list[_Range]]:
    """The ranges that hold ``state``, in ascending order."""
    due_or_damaged = [
        _Range(nulls=True),
        _Range(upper=_Bound(now, True)),
        _Range(lower=_Bound("", True)),  # the texts, then the blobs
    ]
    later = [_Range(lower=_Bound(now, False), upper=_Bound("", False))]
    if state is State.READY:
        return _WAITING, due_or_damaged
    if state is State.SCHEDULED:
        return _WAITING, later
    if state is State.IN_FLIGHT:
        return _HELD, later
    if state is State.STUCK:
        return _HELD, due_or_damaged
    return _BURIED, [_Range(nulls=True), _Range(lower=_Bound(-math.inf, True))]


def _order(value: float | str | bytes) -> tuple[int, float | bytes]:
    """Where a non-NULL ``value`` sorts in SQLite, as a Python key."""
    if isinstance(value, (int, float)):
        return (1, float(value))
    if isinstance(value, str):
        return (2, value.encode("utf-8", "surrogateescape"))
    return (3, value)


def bind(value: object) -> tuple[str, object]:
    """The placeholder and the parameter that stand for ``value`` in a statement
    (a text read with surrogateescape goes in as its bytes, see ``_AS_TEXT``)."""
    if isinstance(value, str) and readable(value) != value:
        return _AS_TEXT, value.encode("utf-8", "surrogateescape")
    return "?", value


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's sort value and id, as SQLite holds them."""

    state: State
    key: float | str | bytes | None
    id: str | bytes | None

    def encode(self) -> str:
        return json.dumps([self.state.value, _to_json(self.key), _to_json(self.id)])

    @classmethod
    def decode(cls, cursor: str, state: State) -> Position:
        """The position ``cursor`` names; ValueError when this store did not make it
        for ``state``."""
        try:
            name, key, rid = json.loads(cursor)
            position = cls(State(name), _from_json(key), _id_from_json(rid))
        except (ValueError, TypeError) as exc:
            shown = str(cursor)[:80]
            raise ValueError(
                f"sqlite store: {shown!r} is not a cursor of browse(): pass the cursor "
                "of the previous page as it was given"
            ) from exc
        if position.state is not state:
            raise ValueError(
                f"sqlite store: this cursor is for the {position.state.value} records, "
                f"not the {state.value} ones"
            )
        return position


def _to_json(value: object) -> object:
    return {"blob": value.hex()} if isinstance(value, bytes) else value


def _from_json(value: object) -> float | str | bytes | None:
    if isinstance(value, dict) and value.keys() == {"blob"} and isinstance(value["blob"], str):
        return bytes.fromhex(value["blob"])
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return value
    raise ValueError(f"not a value a cursor holds: {value!r}")


def _id_from_json(value: object) -> str | bytes | None:
    found = _from_json(value)
    if isinstance(found, (int, float)):
        raise ValueError(f"not an id: {value!r}")
    return found


def _statement(
    at: _Index, span: _Range, after: Position | None, newest_first: bool
) -> tuple[str, list[object]] | None:
    """The query for ``span`` from ``after`` on (its LIMIT is the last parameter), or
    None when the walk is past all of it."""
    back = " DESC" if newest_first else ""
    if span.nulls:
        found = _among_nulls(at.key, after, newest_first)
        order = f"id{back}"
    else:
        found = _in_range(at.key, span, after, newest_first)
        order = f"{at.key}{back}, id{back}"
    if found is None:
        return None
    conditions, params = found
    where = " AND ".join(["namespace = ?", *([at.rows] if at.rows else []), *conditions])
    sql = (
        f"SELECT {at.columns} FROM {at.table} INDEXED BY {at.index}"  # noqa: S608 - names are ours
        f" WHERE {where} ORDER BY {order} LIMIT ?"
    )
    return sql, params


def _among_nulls(
    key: str, after: Position | None, newest_first: bool
) -> tuple[list[str], list[object]] | None:
    conditions = [f"{key} IS NULL"]
    if after is None:
        return conditions, []
    if after.key is not None:
        # The NULLs come first: passed going up, all still ahead going down.
        return (conditions, []) if newest_first else None
    mark, value = bind(_id(after.id))
    conditions.append(f"id {'<' if newest_first else '>'} {mark}")
    return conditions, [value]


def _in_range(
    key: str, span: _Range, after: Position | None, newest_first: bool
) -> tuple[list[str], list[object]] | None:
    conditions: list[str] = []
    params: list[object] = []
    lower, upper = span.lower, span.upper
    at = None if after is None else after.key
    if after is not None and at is None and newest_first:
        return None  # the cursor is among the NULLs, which come last going down
    if after is not None and at is not None:
        near, far = (upper, lower) if newest_first else (lower, upper)
        if _beyond(at, far, newest_first):
            return None
        if not _beyond(at, near, not newest_first):
            # Inside the range, the cursor replaces the bound on the side the
            # walk comes from: SQLite seeks on one bound a side.
            key_mark, key_value = bind(at)
            id_mark, id_value = bind(_id(after.id))
            conditions.append(
                f"({key}, id) {'<' if newest_first else '>'} ({key_mark}, {id_mark})"
            )
            params += [key_value, id_value]
            lower, upper = (lower, None) if newest_first else (None, upper)
    if lower is not None:
        conditions.append(f"{key} {'>=' if lower.inclusive else '>'} ?")
        params.append(lower.value)
    if upper is not None:
        conditions.append(f"{key} {'<=' if upper.inclusive else '<'} ?")
        params.append(upper.value)
    return conditions, params


def _id(value: str | bytes | None) -> str | bytes:
    # A NULL id (possible only where the schema lost its NOT NULL) has no
    # value to seek past; the smallest text stands in for it.
    return "" if value is None else value


def _beyond(key: float | str | bytes, edge: _Bound | None, downward: bool) -> bool:
    """Whether ``key`` lies past ``edge``: above it (below it when ``downward``),
    or on it when the bound leaves its own value out."""
    if edge is None:
        return False
    mine, theirs = _order(key), _order(edge.value)
    if mine == theirs:
        return not edge.inclusive
    return mine < theirs if downward else mine > theirs


def statements(
    namespace: str,
    state: State,
    now: float,
    *,
    after: Position | None = None,
    newest_first: bool = False,
) -> list[tuple[str, list[object]]]:
    """The queries that list ``state`` from ``after`` on, in the order of the walk,
    each with its parameters but the LIMIT (the last one). Public so that a test
    can show that each reads its index and nothing else."""
    at, ranges = _ranges(state, now)
    found = []
    for span in reversed(ranges) if newest_first else ranges:
        statement = _statement(at, span, after, newest_first)
        if statement is not None:
            sql, params = statement
            found.append((sql, [namespace, *params]))
    return found


def live_state(held: bool, due: object, now: float) -> State:
    """The state of a queued row at ``now``; a ``due`` that is not a number is due."""
    later = isinstance(due, (int, float)) and due > now
    if held:
        return State.IN_FLIGHT if later else State.STUCK
    return State.SCHEDULED if later else State.READY


def read_entry(state: State, columns: Sequence[object], now: float) -> Entry:
    """An entry from a row's columns: ``_LIVE``'s for a queued row, ``_DEAD``'s for a dead one."""
    if state is State.DEAD:
        record, reason, buried = read_dead(columns, now)
        return Entry(record, state, buried=buried, reason=reason)
    raw_id, due, record_due, created, attempts, last_error, data = columns
    record = read_record(
        Row(shown_id(raw_id), record_due, created, attempts, last_error, data), now
    )
    held = state in (State.IN_FLIGHT, State.STUCK)
    expires = float(due) if held and isinstance(due, (int, float)) else None
    return Entry(record, state, expires=expires)


def read_page(
    conn: sqlite3.Connection,
    namespace: str,
    state: State,
    now: float,
    *,
    limit: int,
    after: Position | None,
    newest_first: bool,
) -> Page:
    """Up to ``limit`` entries of ``state`` from ``after`` on, and the next cursor.

    One row more than the page is read, so that the last page says it is the last.
    """
    rows: list[Sequence[object]] = []
    for sql, params in statements(namespace, state, now, after=after, newest_first=newest_first):
        rows += conn.execute(sql, (*params, limit + 1 - len(rows))).fetchall()
        if len(rows) > limit:
            break
    entries = [read_entry(state, row, now) for row in rows[:limit]]
    if len(rows) <= limit:
        return Page(entries)
    raw_id, key = rows[limit - 1][:2]
    last = Position(
        state,
        key if isinstance(key, (int, float, str, bytes)) else None,
        raw_id if isinstance(raw_id, (str, bytes)) else None,
    )
    return Page(entries, last.encode())
