"""The SQLite store's ``stats()``: counts and times read from indexes, never from the table.

SQLite keeps no count of a range, so a count steps through its index entries;
what matters at depth is that it steps through small index entries in file
order instead of reading every row of the queue (which took seconds for a
million messages). So the deep counts use the narrowest index there is, the
claim's ``(namespace, due)``, which holds waiting and claimed rows alike:

- rows due by ``now`` (with the rows whose ``due`` is not a number, which
  count as due, as a claim takes them), and rows due later;
- less the claimed rows of each, counted in the small index of claimed rows
  (``due`` is their lease expiry): stuck and in flight.

So ready is due less stuck, and scheduled is later less in flight, all read
in one statement, from one snapshot. Dead letters are counted in their
``(namespace, buried, id)`` index. The earliest due time of a scheduled row is
one seek in the index of the waiting rows. The oldest ready row, when some
row is ready, is found by walking the waiting rows in ``created`` order (an
index of its own that holds ``due`` too) to the first one that is due: one
step when the oldest waiting row is ready, as many as there are older rows
waiting for a later try or send time otherwise (a backlog in backoff while new
mail is ready; when none is, as in most of an outage, there is no walk).

SQLite's order puts NULL before numbers and texts and blobs after them, so a
``due`` that is not a number is three ranges (``IS NULL``, ``<= now``,
``>= ''``), and ``< ''`` bounds the numbers from above.
"""

from __future__ import annotations

import sqlite3

from mailqueue_core.store import Stats
from mailqueue_stores.sqlite.schema import CREATED_INDEX, HELD_INDEX, WAITING_INDEX

__all__ = ["COUNTS", "OLDEST", "read_stats"]

_DUE_INDEX = "mailqueue_queue_due"
_DUE = ("due IS NULL", "due <= :now", "due >= ''")
_LATER = "due > :now AND due < ''"


def _count(index: str, rows: str, where: str) -> str:
    return (
        f"(SELECT COUNT(*) FROM mailqueue_queue INDEXED BY {index}"  # noqa: S608 - ours
        f" WHERE namespace = :namespace{rows} AND {where})"
    )


def _sum(index: str, rows: str) -> str:
    return " + ".join(_count(index, rows, where) for where in _DUE)


_HELD = " AND token IS NOT NULL"
_WAITING = " AND token IS NULL"

#: Parameters ``namespace`` and ``now``; one row: ``due, later, stuck,
#: in_flight, dead, next_due``. Public, as :data:`OLDEST` is, so that a test
#: can show that each part reads an index and nothing else.
COUNTS = (
    f"SELECT {_sum(_DUE_INDEX, '')}, {_count(_DUE_INDEX, '', _LATER)},"  # noqa: S608 - ours
    f" {_sum(HELD_INDEX, _HELD)}, {_count(HELD_INDEX, _HELD, _LATER)},"
    " (SELECT COUNT(*) FROM mailqueue_dead INDEXED BY mailqueue_dead_buried"
    " WHERE namespace = :namespace),"
    f" (SELECT due FROM mailqueue_queue INDEXED BY {WAITING_INDEX}"
    f" WHERE namespace = :namespace{_WAITING} AND {_LATER} ORDER BY due LIMIT 1)"
)
#: The created time of the oldest ready row (a number), if any; the same parameters.
OLDEST = (
    f"SELECT created FROM mailqueue_queue INDEXED BY {CREATED_INDEX}"  # noqa: S608 - ours
    f" WHERE namespace = :namespace{_WAITING} AND created < ''"
    f" AND ({' OR '.join(_DUE)}) ORDER BY created LIMIT 1"
)


def read_stats(conn: sqlite3.Connection, namespace: str, now: float) -> Stats:
    """The stats of ``namespace`` at ``now``; ``conn`` is in a read transaction."""
    params = {"namespace": namespace, "now": now}
    due, later, stuck, in_flight, dead, next_due = conn.execute(COUNTS, params).fetchone()
    ready = due - stuck
    oldest = None
    if ready:
        found = conn.execute(OLDEST, params).fetchone()
        oldest = None if found is None else found[0]
    return Stats.counted(
        now,
        ready=ready,
        scheduled=later - in_flight,
        in_flight=in_flight,
        dead=dead,
        oldest_created=oldest,
        stuck=stuck,
        next_due=next_due,
    )
