"""The SQLite store's sent log and heartbeats: pages seek their index at any depth,
rows changed by hand never make a call raise, and existing files get the new tables
(the contract itself runs in test_store_sqlite)."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from mailqueue_core.cursors import encode_cursor
from mailqueue_core.store import SentRecord
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore
from mailqueue_stores.sqlite.schema import ADDED, CREATED_INDEX, SCHEMA_VERSION, SENT_INDEX
from mailqueue_stores.sqlite.sent_log import COUNT, statements
from tests.test_sqlite_damage import allow_nulls

NOW = 1_700_000_000.0
DAY = 86_400.0


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", namespace="test")
    yield s
    s.close()


def sent(i: int, at: float | None = None, **fields: object) -> SentRecord:
    return SentRecord(
        id=f"m{i:05d}",
        sent=NOW - 100_000 + i if at is None else at,
        recipients=(f"to{i}@example.com",),
        subject=f"Receipt {i}",
        **fields,  # type: ignore[arg-type]
    )


def walk(store: SQLiteStore, limit: int, **kw: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = store.sent_log(NOW, limit=limit, cursor=cursor, **kw)  # type: ignore[arg-type]
        ids += [r.id for r in page.entries]
        if (cursor := page.cursor) is None:
            return ids
    raise AssertionError("sent_log() kept returning a cursor")


def run(path: str, sql: str, params: list[object], explain: str = "") -> tuple[list[str], int]:
    """The rows of ``sql`` (or of its query plan), and the virtual-machine steps it took."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # reads the schema
        conn.set_progress_handler(tick, 1)
        rows = conn.execute(explain + sql, params).fetchall()
    return [row[3] if explain else row[0] for row in rows], count


# -- pages -------------------------------------------------------------------------------


def test_records_sent_at_the_same_time_are_paged_by_id_both_ways(store):
    store.log_sent([sent(i, at=NOW - 10) for i in range(5)], NOW + DAY)
    store.log_sent([sent(9, at=NOW - 20), sent(8, at=NOW)], NOW + DAY)
    expected = ["m00009", "m00000", "m00001", "m00002", "m00003", "m00004", "m00008"]
    for limit in (1, 2, 50):
        assert walk(store, limit, newest_first=False) == expected
        assert walk(store, limit) == expected[::-1]


def test_a_page_of_the_log_seeks_its_index_and_costs_the_same_at_any_depth(tmp_path):
    costs: dict[int, list[int]] = {}
    for depth in (200, 10_000):
        with SQLiteStore(f"sqlite:///{tmp_path}/d{depth}.db", namespace="test") as s:
            s.log_sent([sent(i) for i in range(depth)], NOW + DAY)
            with SQLiteStore(s.location, namespace="other") as other:
                other.log_sent([sent(i) for i in range(depth)], NOW + DAY)
            middle = sent(depth // 2)
            costs[depth] = []
            for after in (None, (middle.sent, middle.id)):
                for newest_first in (False, True):
                    sql, params = statements("test", after, newest_first)
                    found, _ = run(s.path, sql, [*params, 50], explain="EXPLAIN QUERY PLAN ")
                    assert len(found) == 1, found  # no sort of its own
                    assert found[0].startswith(
                        f"SEARCH mailqueue_sent USING INDEX {SENT_INDEX} (namespace=? AND "
                    ), found
                    rows, steps = run(s.path, sql, [*params, 50])
                    assert len(rows) == 50
                    costs[depth].append(steps)
            (plan,), _ = run(s.path, COUNT, ["test", NOW], explain="EXPLAIN QUERY PLAN ")
            assert plan.startswith(f"SEARCH mailqueue_sent USING COVERING INDEX {SENT_INDEX}")
    assert costs[200] == costs[10_000]


def test_a_page_holds_at_least_one_record_and_takes_only_its_own_cursors(store):
    store.log_sent([sent(i) for i in range(3)], NOW + DAY)
    with pytest.raises(ValueError, match="at least one record"):
        store.sent_log(NOW, limit=0)
    for junk in ('["x", "m1"]', "[1.0]", "{}", "not json"):
        with pytest.raises(ValueError, match="not a cursor"):
            store.sent_log(NOW, cursor=junk)


def test_the_log_keeps_what_the_flusher_logged_and_prunes_by_send_time(store):
    record = sent(1, message_id="<1@x>", transport="smtp relay:25", provider_id="p-1")
    record = SentRecord(**{**record.__dict__, "attempts": 3, "created": NOW - 5, "data": b"{}"})
    store.log_sent([record], NOW + DAY)
    store.log_sent([], NOW + DAY)  # an empty batch writes nothing
    assert store.sent_log(NOW).entries == [record]
    assert store.count_sent(record.sent) == 1 and store.count_sent(record.sent + 1) == 0
    assert store.prune_sent(record.sent) == 0
    assert store.prune_sent(record.sent + 1) == 1
    assert store.sent_log(NOW).entries == []


# -- rows changed by hand ------------------------------------------------------------------


def test_rows_changed_by_hand_are_read_as_they_can_be_and_never_raise(store):
    store.log_sent([sent(i, at=NOW - 10 + i) for i in range(8)], NOW + DAY)
    allow_nulls(store.path, ("mailqueue_sent",))
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:

        def change(record_id: str, assignments: str) -> None:
            conn.execute(f"UPDATE mailqueue_sent SET {assignments} WHERE id = ?", (record_id,))  # noqa: S608

        change("m00000", "sent = 'yesterday'")  # no cursor could follow it: left out
        change("m00001", "id = x'6d31'")  # a blob id: left out
        change("m00002", "id = CAST(x'6dff32' AS TEXT)")  # not UTF-8: shown, paged past
        change("m00003", "recipients = 'not json', subject = NULL, transport = x'ff'")
        change("m00004", "recipients = x'00', message_id = 7, attempts = 'many'")
        change("m00005", "created = 'then', data = 'text', provider_id = NULL")
        change("m00006", "recipients = NULL")
    expected = ["m00007", "m00006", "m00005", "m00004", "m00003", "m\ufffd2"]
    for limit in (1, 2, 50):
        assert walk(store, limit) == expected
        assert walk(store, limit, newest_first=False) == expected[::-1]
    assert store.count_sent(0) == len(expected) + 1  # the blob id is counted
    records = {r.id: r for r in store.sent_log(NOW).entries}
    assert records["m00003"].recipients == ("not json",)
    assert (records["m00003"].subject, records["m00003"].transport) == ("", "\ufffd")
    assert records["m00004"].recipients == ("\x00",)
    assert (records["m00004"].message_id, records["m00004"].attempts) == ("7", 0)
    assert (records["m00005"].created, records["m00005"].data) == (0.0, b"")
    assert records["m00006"].recipients == ()
    # A cursor from before the change still finds its place.
    page = store.sent_log(NOW, cursor=encode_cursor(NOW - 3, "m00007"), limit=1)
    assert [r.id for r in page.entries] == ["m00006"]


# -- heartbeats ------------------------------------------------------------------------


def _beat_rows(path: str) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT namespace, flusher FROM mailqueue_beats ORDER BY 1, 2"
        ).fetchall()


def test_a_beat_forgets_the_notes_that_expired_and_a_changed_time_is_left_out(store):
    with SQLiteStore(store.location, namespace="other") as other:
        other.beat("old:1", NOW - 100, NOW - 50)
        store.beat("cron:1", NOW - 100, NOW - 50)
        store.beat("cron:2", NOW - 100, NOW + 60)
        assert _beat_rows(store.path) == [
            ("other", "old:1"),
            ("test", "cron:1"),
            ("test", "cron:2"),
        ]
        store.beat("cron:3", NOW, NOW + 60)
        # Only this namespace's expired note went.
        assert _beat_rows(store.path) == [
            ("other", "old:1"),
            ("test", "cron:2"),
            ("test", "cron:3"),
        ]
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute("UPDATE mailqueue_beats SET seen = 'now' WHERE flusher = 'cron:2'")
    assert store.beats(NOW) == {"cron:3": NOW}


# -- existing files ----------------------------------------------------------------------


def test_a_file_without_the_new_tables_and_index_gets_them_and_keeps_its_version(tmp_path):
    location = f"sqlite:///{tmp_path}/old.db"
    with SQLiteStore(location, namespace="test") as first:
        first.enqueue([make_record(NOW - 60 - i, created=NOW - 60 - i) for i in range(50)])
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db", isolation_level=None)) as conn:
        conn.execute(f"DROP INDEX {CREATED_INDEX}")
        conn.execute("DROP TABLE mailqueue_sent")  # its index goes with it
        conn.execute("DROP TABLE mailqueue_beats")
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert names.isdisjoint({CREATED_INDEX, SENT_INDEX, "mailqueue_sent", "mailqueue_beats"})
    with SQLiteStore(location, namespace="test") as store:
        stats = store.stats(NOW)
        assert (stats.ready, stats.oldest_ready_age) == (50, 109.0)
        store.log_sent([sent(1)], NOW + DAY)
        store.beat("host:1", NOW, NOW + 60)
        assert store.count_sent(0) == 1 and store.beats(NOW) == {"host:1": NOW}
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute(
            "SELECT value FROM mailqueue_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert set(ADDED) <= names
    assert version == str(SCHEMA_VERSION) == "2"
