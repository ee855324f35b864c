"""The SQLite store's console: pages read their index only, at any depth; damaged
rows are listed where they count; the console indexes reach existing files;
both connection modes work (the contract itself runs in test_store_sqlite)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from mailqueue_core.errors import LeaseLost
from mailqueue_core.store import State
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore
from mailqueue_stores.sqlite.browsing import Position, statements
from mailqueue_stores.sqlite.schema import HELD_INDEX, SCHEMA_VERSION, WAITING_INDEX
from tests.test_sqlite_damage import allow_nulls, damage_row

NOW = 1_700_000_000.0
LEASE = 300.0
JOIN_TIMEOUT = 120  # a guard against a hung child, not a measurement

INDEX_OF = {
    State.READY: WAITING_INDEX,
    State.SCHEDULED: WAITING_INDEX,
    State.IN_FLIGHT: HELD_INDEX,
    State.STUCK: HELD_INDEX,
    State.DEAD: "mailqueue_dead_buried",
}


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", namespace="test")
    yield s
    s.close()


def walk(store: SQLiteStore, state: State, now: float, limit: int, **kw: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = store.browse(state, now, limit=limit, cursor=cursor, **kw)  # type: ignore[arg-type]
        ids += [e.id for e in page.entries]
        if (cursor := page.cursor) is None:
            return ids
    raise AssertionError("browse() kept returning a cursor")


def fill(store: SQLiteStore, depth: int) -> None:
    """``depth`` records in each state, and some of another namespace. Each batch
    is claimed when nothing else is due, so that it takes only its own records."""
    store.enqueue([make_record(NOW - 20_000 - i, id=f"d{i:06d}") for i in range(depth)])
    for claim in store.fetch_due(NOW - 20_000, depth, LEASE):
        store.bury(claim, "550", NOW - 5_000 + int(claim.id[1:]))
    store.enqueue([make_record(NOW - 30_000 - i, id=f"f{i:06d}") for i in range(depth)])
    assert len(store.fetch_due(NOW - 30_000, depth, 33_000.0)) == depth  # in flight at NOW
    store.enqueue([make_record(NOW - 10_000 - i, id=f"k{i:06d}") for i in range(depth)])
    assert len(store.fetch_due(NOW - 10_000, depth, 100.0)) == depth  # stuck at NOW
    store.enqueue([make_record(NOW - 1 - i, id=f"r{i:06d}") for i in range(depth)])
    store.enqueue([make_record(NOW + 60 + i, id=f"s{i:06d}") for i in range(depth)])
    with SQLiteStore(store.location, namespace="other") as other:
        other.enqueue([make_record(NOW - 1, id=f"o{i}") for i in range(depth)])
    stats = store.stats(NOW)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck, stats.dead) == (
        (depth,) * 5
    )


def cursors(store: SQLiteStore, state: State, now: float) -> list[Position | None]:
    """No cursor, and the cursor after the first listed entry of ``state``, each way."""
    found: list[Position | None] = [None]
    for newest_first in (False, True):
        page = store.browse(state, now, limit=1, newest_first=newest_first)
        assert page.cursor is not None
        found.append(Position.decode(page.cursor, state))
    return found


def plan(path: str, sql: str, params: list[object]) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (*params, 50))]


def steps(path: str, sql: str, params: list[object]) -> int:
    """Virtual-machine steps SQLite runs for one query: a cost that is not a timing."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # reads the schema
        conn.set_progress_handler(tick, 1)
        conn.execute(sql, (*params, 50)).fetchall()
    return count


# -- what a page costs ------------------------------------------------------------


@pytest.mark.parametrize("analyzed", [False, True])
def test_each_listing_query_searches_its_index(store, analyzed):
    fill(store, 300)
    allow_nulls(store.path)  # so that SQLite plans the NULL ranges too (see below)
    if analyzed:
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            conn.execute("ANALYZE")
    for state in State:
        for after in cursors(store, state, NOW):
            for newest_first in (False, True):
                listing = statements("test", state, NOW, after=after, newest_first=newest_first)
                assert listing, (state, after, newest_first)
                for sql, params in listing:
                    found = plan(store.path, sql, params)
                    assert len(found) == 1, (sql, found)
                    assert found[0].startswith("SEARCH mailqueue_") and (
                        f" USING INDEX {INDEX_OF[state]} (namespace=? AND " in found[0]
                    ), (sql, found)


def test_the_null_ranges_cost_nothing_where_the_schema_forbids_nulls(store):
    """With NOT NULL, SQLite knows ``due IS NULL`` is false and reads no row (its
    plan still names a sort it never runs)."""
    fill(store, 300)
    for state in (State.READY, State.STUCK, State.DEAD):
        for newest_first in (False, True):
            listing = statements("test", state, NOW, newest_first=newest_first)
            nulls = [(sql, ps) for sql, ps in listing if re.search(r"(due|buried) IS NULL", sql)]
            assert len(nulls) == 1
            assert steps(store.path, *nulls[0]) < 20


def page_steps(path: str, state: State, after: Position | None, newest_first: bool) -> int:
    listing = statements("test", state, NOW, after=after, newest_first=newest_first)
    return sum(steps(path, sql, params) for sql, params in listing)


@pytest.mark.drill
def test_a_page_costs_the_same_at_any_depth(tmp_path):
    """The same work for a page at the start and from the middle, either way, over
    200 or 10,000 records a state: no count or scan of what comes before the
    cursor, and in-flight and stuck pages never walk the waiting rows."""
    costs: dict[int, list[int]] = {}
    for depth in (200, 10_000):
        with SQLiteStore(f"sqlite:///{tmp_path}/d{depth}.db", namespace="test") as s:
            fill(s, depth)
            costs[depth] = []
            for state in State:
                cursor = None
                for _ in range(depth // 100):  # to the middle of the state, 50 at a time
                    cursor = s.browse(state, NOW, cursor=cursor).cursor
                after = None if cursor is None else Position.decode(cursor, state)
                for start in (None, after):
                    for newest_first in (False, True):
                        costs[depth].append(page_steps(s.path, state, start, newest_first))
    assert costs[200] == costs[10_000]


# -- rows damaged by hand -------------------------------------------------------------


def test_rows_whose_due_is_not_a_number_are_listed_as_due(store):
    store.enqueue([make_record(NOW - 5 + i, id=f"r{i}") for i in range(5)])
    store.enqueue([make_record(NOW + 60, id="later")])
    allow_nulls(store.path)
    damage_row(store.path, "test", "r1", "due = 'whenever'")
    damage_row(store.path, "test", "r2", "due = x'00ff'")
    damage_row(store.path, "test", "r3", "due = NULL")
    damage_row(store.path, "test", "r4", "due = NULL")
    expected = ["r3", "r4", "r0", "r1", "r2"]  # SQLite's order: NULL, numbers, texts, blobs
    for limit in (1, 2, 10):
        assert walk(store, State.READY, NOW, limit) == expected
        assert walk(store, State.READY, NOW, limit, newest_first=True) == expected[::-1]
    assert walk(store, State.SCHEDULED, NOW, 1) == ["later"]
    assert store.stats(NOW).ready == len(expected)
    entries = {e.id: e for e in store.browse(State.READY, NOW).entries}
    assert entries["r1"].record.due == NOW - 4  # the due time the claim reports
    assert all(store.get(mid, NOW).state is State.READY for mid in expected)  # type: ignore[union-attr]
    assert store.send_now(expected, NOW) == 0  # due already
    assert store.delete(["r1", "r3"], NOW) == 2
    assert walk(store, State.READY, NOW, 1) == ["r4", "r0", "r2"]


def test_claimed_rows_whose_lease_is_not_a_number_are_stuck(store):
    store.enqueue([make_record(NOW - 3 + i, id=f"k{i}") for i in range(3)])
    claims = store.fetch_due(NOW, 3, LEASE)
    allow_nulls(store.path)
    damage_row(store.path, "test", "k1", "due = 'never'")
    damage_row(store.path, "test", "k2", "due = NULL")
    assert walk(store, State.IN_FLIGHT, NOW, 1) == ["k0"]
    assert walk(store, State.STUCK, NOW, 1) == ["k2", "k1"]
    assert walk(store, State.STUCK, NOW, 1, newest_first=True) == ["k1", "k2"]
    stuck = store.get("k1", NOW)
    assert stuck is not None and stuck.state is State.STUCK and stuck.expires is None
    assert store.stats(NOW).stuck == 2
    assert store.delete(["k0", "k1", "k2"], NOW) == 2  # k0's lease is live
    with pytest.raises(LeaseLost):
        store.ack(claims[1])


def test_pages_go_past_ids_that_are_not_clean_text(store):
    store.enqueue([make_record(NOW - 1, id=f"m{i}") for i in range(5)])
    damage_row(store.path, "test", "m1", "id = CAST(x'6dff31' AS TEXT)")  # not UTF-8
    damage_row(store.path, "test", "m3", "id = x'6d33'")  # a blob
    # SQLite's order: texts by their bytes (0xff after "4"), then blobs.
    expected = ["m0", "m2", "m4", "m\ufffd1", "b'm3'"]
    for limit in (1, 2):
        assert walk(store, State.READY, NOW, limit) == expected
        assert walk(store, State.READY, NOW, limit, newest_first=True) == expected[::-1]


def test_null_ids_and_burial_times_are_listed(store):
    store.enqueue([make_record(NOW - 2 + i, id=f"d{i}") for i in range(3)])
    for claim in store.fetch_due(NOW, 3, LEASE):
        store.bury(claim, "550", NOW + int(claim.id[1:]))
    allow_nulls(store.path)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute("UPDATE mailqueue_dead SET buried = NULL WHERE id = 'd2'")
        conn.execute("UPDATE mailqueue_dead SET id = NULL WHERE id = 'd0'")
    for limit in (1, 5):
        assert walk(store, State.DEAD, NOW, limit) == ["d2", "None", "d1"]
        assert walk(store, State.DEAD, NOW, limit, newest_first=True) == ["d1", "None", "d2"]
    entry = store.get("d2", NOW)
    assert entry is not None and entry.buried == 0.0 and entry.reason == "550"


def test_a_damaged_dead_letter_is_listed_with_its_damage(store):
    store.enqueue([make_record(NOW, id="x")])
    (claim,) = store.fetch_due(NOW, 1, LEASE)
    store.bury(claim, "550", NOW)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute("UPDATE mailqueue_dead SET created = 'then', reason = x'ff'")
    (entry,) = store.browse(State.DEAD, NOW).entries
    assert entry.record.damage == "created is the text 'then'"
    assert entry.reason == "b'\\xff'"


# -- cursors and arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        '["ready", NaN, "m0"]',
        '["ready", true, "m0"]',
        '["ready", 1.0, 2]',
        '["ready", {"blob": "zz"}, "m0"]',
        '["ready", {"text": "x"}, "m0"]',
        '["ready", [1], "m0"]',
        '["ready", 1.0]',
        '["lost", 1.0, "m0"]',
        '"ready"',
    ],
)
def test_a_cursor_that_does_not_parse_is_refused_saying_so(store, junk):
    store.enqueue([make_record(NOW - 1, id="m0")])
    with pytest.raises(ValueError, match="is not a cursor of browse"):
        store.browse(State.READY, NOW, cursor=junk)


def test_a_cursor_of_another_state_is_refused(store):
    store.enqueue([make_record(NOW + 1 + i) for i in range(3)])
    cursor = store.browse(State.SCHEDULED, NOW, limit=1).cursor
    assert cursor is not None
    with pytest.raises(ValueError, match="for the scheduled records, not the ready ones"):
        store.browse(State.READY, NOW, cursor=cursor)
    assert len(store.browse("scheduled", NOW, cursor=cursor).entries) == 2  # type: ignore[arg-type]


def test_a_page_holds_at_least_one_record(store):
    with pytest.raises(ValueError, match="at least one record"):
        store.browse(State.READY, NOW, limit=0)


def test_a_cursor_keeps_its_place_when_time_moves_on(store):
    store.enqueue([make_record(NOW + 10 * i, id=f"s{i}") for i in range(1, 6)])
    first = store.browse(State.SCHEDULED, NOW, limit=2)
    assert [e.id for e in first.entries] == ["s1", "s2"]
    # s1..s3 are due by now: the next page is what is still scheduled past s2.
    later = store.browse(State.SCHEDULED, NOW + 30, limit=2, cursor=first.cursor)
    assert [e.id for e in later.entries] == ["s4", "s5"]
    # At s2's own due time, s2 is ready: the page starts after it all the same.
    at_s2 = store.browse(State.SCHEDULED, NOW + 20, cursor=first.cursor)
    assert [e.id for e in at_s2.entries] == ["s3", "s4", "s5"]
    # Back from the cursor at a time before s2: nothing of the state lies there.
    back = store.browse(State.SCHEDULED, NOW + 25, cursor=first.cursor, newest_first=True)
    assert back.entries == []
    ready = store.browse(State.READY, NOW + 20, limit=1)
    assert [e.id for e in ready.entries] == ["s1"] and ready.cursor is not None
    assert walk(store, State.READY, NOW + 40, 1)[1:] == ["s2", "s3", "s4"]
    # A cursor on the last due time of the state, ``now``, goes on from there.
    assert [e.id for e in store.browse(State.READY, NOW + 10, cursor=ready.cursor).entries] == []
    assert [e.id for e in store.browse(State.READY, NOW + 20, cursor=ready.cursor).entries] == [
        "s2"
    ]
    assert store.browse(State.READY, NOW, cursor=ready.cursor).entries == []


# -- single records and the pause flag ------------------------------------------------------


def test_an_id_both_queued_and_dead_is_shown_queued_and_deleted_whole(store):
    store.enqueue([make_record(NOW, id="x")])
    store.add_dead([make_record(NOW, id="x", last_error="550 refused part")], NOW)
    entry = store.get("x", NOW)
    assert entry is not None and entry.state is State.READY
    assert store.delete(["x", "x"], NOW) == 1
    assert store.get("x", NOW) is None


def test_send_now_keeps_the_record_and_counts_each_id_once(store):
    store.enqueue([make_record(NOW + 60, id="s", attempts=2, created=NOW - 5)])
    assert store.send_now(["s", "s"], NOW) == 1
    entry = store.get("s", NOW)
    assert entry is not None and entry.state is State.READY
    assert (entry.record.due, entry.record.attempts, entry.record.created) == (NOW, 2, NOW - 5)
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    assert claim.record.due == NOW


def test_the_pause_flag_lasts_and_is_seen_by_a_twin_that_creates_nothing(store):
    store.set_paused(True)
    store.close()
    reader = store.without_creating()
    assert reader.paused()
    reader.set_paused(False)
    assert not store.paused()
    reader.close()


# -- the console indexes reach existing files ---------------------------------------------


def _indexes(path: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


def _browse_at_once(location: str, start: Barrier) -> None:
    store = SQLiteStore(location, namespace="test")
    start.wait()
    page = store.browse(State.READY, NOW, limit=10)
    assert len(page.entries) == 10
    store.enqueue([make_record(NOW)])
    store.close()


@pytest.mark.drill
def test_a_file_without_the_console_indexes_is_upgraded_by_racing_processes(tmp_path):
    """A file written before the console: its processes add the indexes once,
    taking turns under the write lock, and the schema version stays what older
    releases read (an index added does not make them refuse the file)."""
    path = tmp_path / "old.db"
    location = f"sqlite:///{path}"
    with SQLiteStore(location, namespace="test") as first:
        first.enqueue([make_record(NOW - i) for i in range(200)])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"DROP INDEX {WAITING_INDEX}")
        conn.execute(f"DROP INDEX {HELD_INDEX}")
        conn.commit()
    assert {WAITING_INDEX, HELD_INDEX}.isdisjoint(_indexes(str(path)))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_browse_at_once, args=(location, start)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert {WAITING_INDEX, HELD_INDEX} <= _indexes(str(path))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (version,) = conn.execute(
            "SELECT value FROM mailqueue_meta WHERE key = 'schema_version'"
        ).fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert version == str(SCHEMA_VERSION) == "2"
    with SQLiteStore(location, namespace="test") as store:
        assert store.stats(NOW).ready == 204


# -- the site's own connection (django_database) -----------------------------------------------

SITE = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    path = sys.argv[1]
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}}
    )
    django.setup()
    from django.db import transaction
    from mailqueue_core.store import State
    from mailqueue_core.testing import make_record
    from mailqueue_stores.sqlite import SQLiteStore

    NOW = 1_700_000_000.0
    store = SQLiteStore(f"sqlite:///{path}", django_database="default")
    assert not store.paused()  # the store's own connection opens the file first
    with transaction.atomic():
        store.enqueue([make_record(NOW - 1, id="r"), make_record(NOW + 60, id="s")])
        assert store.browse(State.READY, NOW).entries == []  # not committed yet
    assert [e.id for e in store.browse(State.READY, NOW).entries] == ["r"]
    assert store.get("s", NOW).state is State.SCHEDULED
    assert store.send_now(["s"], NOW) == 1
    assert [e.id for e in store.browse(State.READY, NOW).entries] == ["r", "s"]
    store.set_paused(True)
    """
)


def test_the_console_works_when_enqueues_use_the_site_connection(tmp_path):
    script = tmp_path / "site.py"
    script.write_text(SITE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "site.db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with SQLiteStore(f"sqlite:///{tmp_path}/site.db") as store:
        assert store.paused()
        assert store.delete(["r", "s"], NOW) == 2
        assert Path(store.path).stat().st_size > 0
