"""Rows of a real SQLite queue file damaged by hand never stop the queue.

SQLite is dynamically typed: an operator's ``UPDATE`` can leave a text in a
``REAL`` column (``created = 'yesterday'``), ``attempts = '1.5'`` is stored as
the real 1.5, bytes that are not UTF-8 in a text column, and a schema whose
``NOT NULL`` was removed (SQLite's documented ``writable_schema`` procedure,
or a file made by another tool) lets columns be NULL. Each damage is done with
a raw ``sqlite3`` connection on the file, as an operator would.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time

import pytest

from mailqueue_core.errors import LeaseLost
from mailqueue_core.testing import Damage, make_record
from mailqueue_stores.sqlite import SQLiteStore
from tests.drills import flusher_command, queue_numbered, tally

NOW = 1_700_000_000.0
LEASE = 300.0

#: What each ``Damage`` sets on a row (SQL assignments).
DAMAGES = {
    # Nothing of the record is left but its key and its place in the due index.
    Damage.MISSING: "record_due = NULL, created = NULL, attempts = NULL, last_error = NULL,"
    " data = NULL",
    Damage.PARTIAL: "created = NULL, data = NULL",
    Damage.MALFORMED: "attempts = '1.5', created = 'yesterday', data = 'not a blob'",
}


def allow_nulls(
    path: str, tables: tuple[str, ...] = ("mailqueue_queue", "mailqueue_dead")
) -> None:
    """Remove the NOT NULL constraints of ``tables`` (SQLite's ALTER TABLE page, "other
    changes")."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("PRAGMA writable_schema = ON")
        for table in tables:
            conn.execute(
                "UPDATE sqlite_master SET sql = replace(sql, ' NOT NULL', '') WHERE name = ?",
                (table,),
            )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
        conn.execute("PRAGMA writable_schema = OFF")
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def damage_row(path: str, namespace: str, record_id: str, assignments: str) -> None:
    """Run ``UPDATE mailqueue_queue SET <assignments>`` on one row, by hand."""
    if "NULL" in assignments:
        allow_nulls(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        cursor = conn.execute(
            f"UPDATE mailqueue_queue SET {assignments} WHERE namespace = ? AND id = ?",  # noqa: S608
            (namespace, record_id),
        )
        assert cursor.rowcount == 1


def damage(store: SQLiteStore, record_id: str, how: Damage) -> None:
    """``StoreContract.damage`` for the SQLite store: a raw connection on its file."""
    damage_row(store.path, store.namespace, record_id, DAMAGES[how])


def row_counts(path: str) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (live,) = conn.execute("SELECT COUNT(*) FROM mailqueue_queue").fetchone()
        (dead,) = conn.execute("SELECT COUNT(*) FROM mailqueue_dead").fetchone()
    return live, dead


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", namespace="test")
    yield s
    s.close()


# (assignments, what the damage must say, or None when the record stays whole)
CASES = {
    "attempts-real": ("attempts = '1.5'", "attempts is float 1.5"),
    "attempts-text": ("attempts = 'many'", "attempts is the text 'many'"),
    "attempts-null": ("attempts = NULL", "attempts is NULL"),
    "created-null": ("created = NULL", "created is NULL"),
    "created-text": ("created = 'yesterday'", "created is the text 'yesterday'"),
    "created-blob": ("created = x'00ff'", "created is a blob of 2 bytes"),
    "record-due-text": ("record_due = 'soon'", "due is the text 'soon'"),
    "data-text": ("data = 'not a blob'", "data is text"),
    "data-null": ("data = NULL", "data is NULL"),
    "data-number": ("data = 42", "data is int 42"),
    "data-bad-utf8": ("data = CAST(x'ff00' AS TEXT)", "data is text"),
    "everything": (DAMAGES[Damage.MISSING], "created is NULL"),
    # Not damage: the record can still be read whole and sent.
    "last-error-blob": ("last_error = x'ff'", None),
    "last-error-number": ("last_error = 451", None),
    "last-error-bad-utf8": ("last_error = CAST(x'ff41' AS TEXT)", None),
    "due-text": ("due = 'whenever'", None),
    "due-blob": ("due = x'01'", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_row_is_claimed_for_burial_and_the_batch_goes_on(store, case):
    assignments, said = CASES[case]
    records = [make_record(NOW - 3 + i, attempts=2) for i in range(3)]
    store.enqueue(records)
    damage_row(store.path, "test", records[1].id, assignments)
    before = row_counts(store.path)
    claims = {c.id: c for c in store.fetch_due(NOW, 10, LEASE)}
    assert row_counts(store.path) == before  # claiming created nothing
    assert set(claims) == {r.id for r in records}
    for good in (records[0], records[2]):
        assert claims[good.id].record == good
        store.ack(claims[good.id])
    bad = claims[records[1].id]
    if said is None:
        assert bad.record.damage is None
        assert bad.record.data == records[1].data
        store.ack(bad)
        assert row_counts(store.path) == (0, 0)
        return
    assert bad.record.damage is not None
    assert said in bad.record.damage
    store.bury(bad, f"damaged record: {bad.record.damage}", NOW + 1)
    stats = store.stats(NOW + 10 * LEASE)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck, stats.dead) == (
        0,
        0,
        0,
        0,
        1,
    )
    (letter,) = store.dead_letters()
    assert letter.record.id == records[1].id
    assert letter.reason.startswith("damaged record: ")
    assert letter.buried == NOW + 1
    attempts_readable = "attempts" not in said and case != "everything"
    assert letter.record.attempts == (3 if attempts_readable else 1)


def test_a_row_with_an_unusable_id_is_renamed_and_sent(store):
    good, bad = make_record(NOW - 1), make_record(NOW)
    store.enqueue([good, bad])
    damage_row(store.path, "test", bad.id, "id = CAST(x'ff6964' AS TEXT)")
    before = row_counts(store.path)
    claims = store.fetch_due(NOW, 10, LEASE)
    assert row_counts(store.path) == before
    assert [c.record.data for c in claims] == [good.data, bad.data]
    renamed = claims[1]
    assert renamed.id not in (good.id, bad.id)
    assert renamed.record.damage is None
    for claim in claims:
        store.ack(claim)
    assert row_counts(store.path) == (0, 0)


def test_a_row_with_a_blob_id_is_renamed_and_sent(store):
    store.enqueue([record := make_record(NOW)])
    damage_row(store.path, "test", record.id, "id = x'0102'")
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    assert claim.record.data == record.data
    store.bury(claim, "550 no", NOW)
    assert [d.record.id for d in store.dead_letters()] == [claim.id]


def test_a_damaged_row_released_or_expired_is_found_again(store):
    store.enqueue([record := make_record(NOW)])
    damage_row(store.path, "test", record.id, "due = 'later', record_due = 'later'")
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    assert "due is the text 'later'" in (claim.record.damage or "")
    store.release(claim)  # back to its unreadable due: still claimable
    (again,) = store.fetch_due(NOW, 10, LEASE)
    assert store.stats(NOW + LEASE + 1).stuck == 1
    (third,) = store.fetch_due(NOW + LEASE + 1, 10, LEASE)  # its lease expired
    with pytest.raises(LeaseLost):
        store.bury(again, "x", NOW)
    store.bury(third, third.record.damage or "", NOW)
    assert store.stats(NOW).dead == 1


def test_stats_count_a_row_with_an_unreadable_due_as_ready(store):
    store.enqueue([a := make_record(NOW), make_record(NOW + 60)])
    damage_row(store.path, "test", a.id, "due = 'whenever', created = 'yesterday'")
    stats = store.stats(NOW)
    assert (stats.ready, stats.scheduled) == (1, 1)
    assert stats.oldest_ready_age is None  # its created time cannot be read


def test_damaged_dead_letters_are_listed(store):
    store.enqueue([record := make_record(NOW)])
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    store.bury(claim, "550 no", NOW)
    allow_nulls(store.path)
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        conn.execute(
            "UPDATE mailqueue_dead SET buried = 'then', reason = x'ff', attempts = NULL,"
            " data = NULL, id = CAST(x'ff41' AS TEXT)"
        )
    (letter,) = store.dead_letters()
    assert letter.record.id == "\ufffdA"
    assert letter.buried == 0.0
    assert letter.reason == "b'\\xff'"
    assert letter.record.damage and "data is NULL" in letter.record.damage
    assert record.id != letter.record.id


def _status(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailqueue_core.cli", "status", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_flush_buries_damaged_mail_and_delivers_the_rest(tmp_path, smtp):
    """Through the real backend, the standalone flusher and an SMTP server."""
    url = f"sqlite:///{tmp_path}/queue.db"
    queue_numbered(url, 20)
    path = str(tmp_path / "queue.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        ids = [mid for (mid,) in conn.execute("SELECT id FROM mailqueue_queue ORDER BY rowid")]
    damage_row(path, "default", ids[3], "attempts = '1.5'")
    damage_row(path, "default", ids[7], "created = NULL, data = NULL")
    done = subprocess.run(
        flusher_command(url, smtp.port), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "damaged record" in done.stderr  # problems go to stderr
    label = "sqlite, 2 of 20 rows damaged by hand (the 2 not delivered are buried)"
    lost, duplicates = tally(label, 20, smtp.messages)
    assert (lost, duplicates) == (2, 0)
    with SQLiteStore(url) as store:
        stats = store.stats(time.time())
        letters = store.dead_letters()
    assert (stats.ready, stats.in_flight, stats.stuck, stats.dead) == (0, 0, 0, 2)
    assert sorted(d.record.id for d in letters) == sorted([ids[3], ids[7]])
    assert all(d.reason.startswith("damaged record: ") for d in letters)
    assert _status(url).returncode == 0


def test_rows_with_unreadable_due_times_can_fill_a_batch(store):
    records = [make_record(NOW - i) for i in range(3)]
    store.enqueue(records)
    for record in records[:2]:
        damage_row(store.path, "test", record.id, "due = 'whenever'")
    first = store.fetch_due(NOW, 2, LEASE)
    assert sorted(c.id for c in first) == sorted(r.id for r in records[:2])
    (last,) = store.fetch_due(NOW, 2, LEASE)
    assert last.id == records[2].id
