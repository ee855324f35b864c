"""The SQLite store's stats(): every count and time read from an index, never from the
table, and the same answers as a count of every row."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from mailqueue_core.store import Stats
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore
from mailqueue_stores.sqlite.counting import COUNTS, OLDEST
from mailqueue_stores.sqlite.schema import CREATED_INDEX, HELD_INDEX, WAITING_INDEX
from tests.test_sqlite_damage import allow_nulls, damage_row

NOW = 1_700_000_000.0
LEASE = 300.0

#: What stats() read before it read indexes only: every row of the namespace.
RECOUNT = (
    "SELECT COALESCE(SUM(NOT held AND NOT later), 0), COALESCE(SUM(NOT held AND later), 0),"
    " COALESCE(SUM(held AND later), 0), COALESCE(SUM(held AND NOT later), 0),"
    " MIN(CASE WHEN NOT held AND NOT later AND typeof(created) IN ('integer', 'real')"
    " THEN created END),"
    " MIN(CASE WHEN NOT held AND later THEN due END),"
    " (SELECT COUNT(*) FROM mailqueue_dead WHERE namespace = :namespace)"
    " FROM (SELECT token IS NOT NULL AS held, created, due,"
    " typeof(due) IN ('integer', 'real') AND due > :now AS later"
    " FROM mailqueue_queue WHERE namespace = :namespace)"
)


def recount(path: str, namespace: str, now: float) -> Stats:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(RECOUNT, {"namespace": namespace, "now": now}).fetchone()
    ready, scheduled, in_flight, stuck, oldest, next_due, dead = row
    return Stats.counted(
        now,
        ready=ready,
        scheduled=scheduled,
        in_flight=in_flight,
        dead=dead,
        oldest_created=oldest,
        stuck=stuck,
        next_due=next_due,
    )


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", namespace="test")
    yield s
    s.close()


def populate(store: SQLiteStore) -> None:
    """Every state, rows created long before they are due, rows damaged by hand,
    and another namespace."""
    store.enqueue([make_record(NOW - 50 + i, id=f"d{i}") for i in range(5)])
    for claim in store.fetch_due(NOW, 5, LEASE):
        store.bury(claim, "550", NOW)
    # Retries and send times: created long before, due around now.
    store.enqueue(
        [
            make_record(NOW - 300 + 20 * i, id=f"w{i:02d}", created=NOW - 5_000 + i)
            for i in range(30)
        ]
    )
    store.enqueue([make_record(NOW - 400 + i, id=f"f{i}") for i in range(4)])
    assert len(store.fetch_due(NOW - 390, 4, 1_000.0)) == 4  # in flight until NOW + 600
    store.enqueue([make_record(NOW - 900 + i, id=f"k{i}") for i in range(3)])
    assert len(store.fetch_due(NOW - 890, 3, 10.0)) == 3  # stuck since NOW - 880
    store.enqueue([make_record(NOW - 10, id=f"x{i}") for i in range(6)])
    allow_nulls(store.path)
    damage_row(store.path, "test", "x0", "due = NULL")
    damage_row(store.path, "test", "x1", "due = 'whenever'")
    damage_row(store.path, "test", "x2", "due = x'00ff'")
    damage_row(store.path, "test", "x3", "created = 'yesterday'")
    damage_row(store.path, "test", "x4", "created = NULL, due = NULL")
    damage_row(store.path, "test", "k1", "due = 'never'")  # a claimed row: stuck
    damage_row(store.path, "test", "w29", "created = x'01'")
    with SQLiteStore(store.location, namespace="other") as other:
        other.enqueue([make_record(NOW - 6_000, id="o0"), make_record(NOW + 1, id="o1")])


@pytest.mark.parametrize("now", [NOW - 10_000, NOW - 320, NOW - 100, NOW, NOW + 300, NOW + 700])
def test_stats_read_from_the_indexes_are_what_a_count_of_every_row_says(store, now):
    populate(store)
    assert store.stats(now) == recount(store.path, "test", now)


def test_the_oldest_ready_message_is_found_past_older_ones_waiting_for_later(store):
    store.enqueue(
        [make_record(NOW + 3_600, id=f"later{i}", created=NOW - 9_000 + i) for i in range(50)]
    )
    store.enqueue([make_record(NOW - 5, id="ready", created=NOW - 60)])
    stats = store.stats(NOW)
    assert (stats.ready, stats.scheduled, stats.oldest_ready_age) == (1, 50, 60.0)
    assert stats.next_due == NOW + 3_600
    empty = store.stats(NOW - 10)  # nothing ready yet
    assert (empty.ready, empty.oldest_ready_age, empty.next_due) == (0, None, NOW - 5)
    damage_row(store.path, "test", "ready", "created = 'yesterday'")  # no time to tell
    damaged = store.stats(NOW)
    assert (damaged.ready, damaged.oldest_ready_age) == (1, None)


# -- what stats() reads ------------------------------------------------------------------


def _plan(path: str, statement: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + statement, {"namespace": "test", "now": NOW})
        return [row[3] for row in rows if "mailqueue_" in row[3]]


def _table_reads(path: str, statement: str) -> list[tuple[str, str]]:
    """The opcodes of ``statement`` that read a table's row (not an index entry)."""
    params = {"namespace": "test", "now": NOW}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = dict(conn.execute("SELECT rootpage, name FROM sqlite_master"))
        program = conn.execute("EXPLAIN " + statement, params).fetchall()
    tables = {
        cursor: names[root]
        for _, opcode, cursor, root, *_ in program
        if opcode == "OpenRead" and names[root] in ("mailqueue_queue", "mailqueue_dead")
    }
    # A DeferredSeek only notes the row: the table is read when a column of it is.
    reads = ("Column", "Rowid", "SeekRowid", "NotExists", "NotFound", "Found")
    return [
        (op, tables[cursor]) for _, op, cursor, *_ in program if op in reads and cursor in tables
    ]


@pytest.mark.parametrize("analyzed", [False, True])
@pytest.mark.parametrize("damaged", [False, True])
def test_each_count_and_time_is_read_from_an_index_and_no_row_of_the_table(
    store, analyzed, damaged
):
    """Damaged: NOT NULL removed from the schema, so the NULL ranges are searched too."""
    if damaged:
        populate(store)
    else:
        store.enqueue([make_record(NOW + i) for i in range(-50, 50)])
        store.fetch_due(NOW, 10, LEASE)
    if analyzed:
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            conn.execute("ANALYZE")
    plan = _plan(store.path, COUNTS) + _plan(store.path, OLDEST)
    indexes = ["mailqueue_queue_due"] * 4 + [HELD_INDEX] * 4
    indexes += ["mailqueue_dead_buried", WAITING_INDEX, CREATED_INDEX]
    assert len(plan) == len(indexes), plan
    for line, index in zip(plan, indexes, strict=True):
        assert line.startswith("SEARCH mailqueue_"), plan
        assert f" INDEX {index} (namespace=?" in line, plan
    # The deep counts name their index covering; the others read none of the
    # table's rows all the same (SQLite does not count the column of a partial
    # index's WHERE as covered, but never reads it): the program shows it.
    for line in plan[:4] + plan[8:9]:
        assert " USING COVERING INDEX " in line, plan
    assert _table_reads(store.path, COUNTS) == _table_reads(store.path, OLDEST) == []
