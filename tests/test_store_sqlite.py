"""The sqlite store: the contract, its URLs and options, and several processes on one file."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import uuid
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.store import Store
from mailqueue_core.testing import Damage, StoreContract, make_record, store_model_test
from mailqueue_stores.sqlite import SQLiteStore
from mailqueue_stores.sqlite.schema import CLAIM, CLAIM_UNTIMED, SCHEMA_VERSION
from tests.test_sqlite_damage import damage

LEASE = 300.0
NOW = 1_700_000_000.0
JOIN_TIMEOUT = 120  # a guard against a hung child, not a measurement


def url(path: Path, query: str = "") -> str:
    # tmp_path is absolute, so this is the four-slash form.
    return f"sqlite:///{path}{query}"


class TestSQLiteStore(StoreContract):
    def damage(self, store: Store, record_id: str, how: Damage) -> None:
        assert isinstance(store, SQLiteStore)
        damage(store, record_id, how)  # a raw sqlite3 connection on store.path

    @pytest.fixture
    def store(self, tmp_path):
        s = SQLiteStore(url(tmp_path / "queue.db"), namespace="test")
        yield s
        s.close()


_model_dir: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def model_dir(tmp_path_factory):
    _model_dir.append(tmp_path_factory.mktemp("model"))
    yield
    _model_dir.clear()


# One file for every generated run, a namespace of its own for each.
TestSQLiteStoreModel = store_model_test(
    lambda: SQLiteStore(url(_model_dir[0] / "model.db"), namespace=uuid.uuid4().hex)
)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(url(tmp_path / "queue.db"), namespace="test")
    yield s
    s.close()


# -- URLs and options ----------------------------------------------------------


def test_four_slashes_is_an_absolute_path(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/abs.db")
    assert s.path == str(tmp_path / "abs.db")
    assert s.namespace == "default"
    assert s.options == {"timeout": 10.0, "synchronous": "FULL"}


def test_three_slashes_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "spool").mkdir()
    monkeypatch.chdir(tmp_path)
    s = SQLiteStore("sqlite:///spool/rel.db")
    assert s.path == str(tmp_path / "spool" / "rel.db")
    s.enqueue([make_record(NOW)])
    s.close()
    assert (tmp_path / "spool" / "rel.db").is_file()


def test_relative_path_is_fixed_when_the_store_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = SQLiteStore("sqlite:///fixed.db")
    monkeypatch.chdir("/")
    s.enqueue([make_record(NOW)])
    s.close()
    assert (tmp_path / "fixed.db").is_file()


def test_percent_encoded_path(tmp_path):
    s = SQLiteStore(f"sqlite:///{tmp_path}/mail%20queue.db")
    assert s.path == str(tmp_path / "mail queue.db")


def test_options_in_the_query_string(tmp_path):
    s = SQLiteStore(url(tmp_path / "q.db", "?namespace=shop&timeout=2.5&synchronous=normal"))
    assert s.namespace == "shop"
    assert s.options == {"timeout": 2.5, "synchronous": "NORMAL"}


def test_keyword_options_win_over_the_query_string(tmp_path):
    s = SQLiteStore(
        url(tmp_path / "q.db", "?namespace=shop&timeout=2"), namespace="blog", timeout=1
    )
    assert (s.namespace, s.options["timeout"]) == ("blog", 1.0)


def test_rebuilt_from_location_and_options(tmp_path):
    first = SQLiteStore(url(tmp_path / "q.db", "?namespace=shop"), synchronous="NORMAL")
    twin = SQLiteStore(first.location, namespace=first.namespace, **first.options)
    first.enqueue([record := make_record(NOW)])
    assert [c.id for c in twin.fetch_due(NOW, 10, LEASE)] == [record.id]
    assert twin.options == first.options
    first.close()
    twin.close()


@pytest.mark.parametrize(
    "location",
    [
        "redis://localhost/0",
        "sqlite3:///q.db",
        "/var/spool/q.db",
        "",
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "sqlite:////var/spool/",
        "sqlite:///:memory:",
        "sqlite:///q.db?namespace=a&namespace=b",
        "sqlite:////var/spool/q#1.db",
    ],
)
def test_bad_urls_are_configuration_errors(location):
    with pytest.raises(ConfigurationError):
        SQLiteStore(location)


@pytest.mark.parametrize(
    ("location", "meant"),
    [
        ("sqlite:/x.db", "x.db"),
        ("sqlite:x.db", "x.db"),
        ("sqlite://x.db", "x.db"),
        ("sqlite://var/spool/q.db?timeout=1", "var/spool/q.db"),
        ("SQLITE:/var/spool/q.db", "var/spool/q.db"),
    ],
)
def test_malformed_urls_are_refused_with_the_two_right_forms(location, meant):
    """Before, ``sqlite:/x.db`` quietly meant x.db in the working directory."""
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore(location)
    message = str(info.value)
    assert f"{location!r} is malformed" in message
    assert f"sqlite:////{meant} (four slashes) for the absolute path /{meant}" in message
    assert f"sqlite:///{meant} (three) for {meant} in the working directory" in message


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("sqlite:///", "sqlite:////path/to/queue.db"),
        ("sqlite:////var/spool/", "sqlite:////var/spool/queue.db"),
        ("sqlite://", "sqlite:////path/to/queue.db"),
    ],
)
def test_a_url_that_names_no_file_shows_one_that_does(location, shown):
    with pytest.raises(ConfigurationError, match=r"(names no file|is malformed)") as info:
        SQLiteStore(location)
    assert shown in str(info.value)


def test_a_host_is_refused_without_showing_its_password():
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore("sqlite://admin:s3cret@host/queue.db")
    assert "s3cret" not in str(info.value)
    assert "sqlite:////path/to/queue.db" in str(info.value)


def test_bad_url_error_names_the_url():
    with pytest.raises(ConfigurationError, match="redis://x"):
        SQLiteStore("redis://x")


def test_unknown_options_are_named_with_the_valid_ones(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore(url(tmp_path / "q.db"), colour="red")
    assert "unknown option 'colour' in the OPTIONS" in str(info.value)
    assert "valid options: create, django_database, mode, namespace, reserve, " in str(info.value)
    with pytest.raises(ConfigurationError, match="'journal' in the URL"):
        SQLiteStore(url(tmp_path / "q.db", "?journal=delete"))
    with pytest.raises(ConfigurationError, match="did you mean 'timeout'"):
        SQLiteStore(url(tmp_path / "q.db"), timeuot=3)


@pytest.mark.parametrize("value", ["OFF", "EXTRA", "", 1, None])
def test_bad_synchronous_is_refused(tmp_path, value):
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteStore(url(tmp_path / "q.db"), synchronous=value)


@pytest.mark.parametrize("value", [-1, "soon", True, None, float("inf"), float("nan")])
def test_bad_timeout_is_refused(tmp_path, value):
    with pytest.raises(ConfigurationError, match="timeout"):
        SQLiteStore(url(tmp_path / "q.db"), timeout=value)


def test_empty_namespace_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="namespace"):
        SQLiteStore(url(tmp_path / "q.db", "?namespace="))


def test_repr_names_path_and_namespace(store):
    assert repr(store) == f"<SQLiteStore path={store.path!r} namespace='test'>"


# -- the file ------------------------------------------------------------------


def test_file_is_in_wal_mode_with_a_schema_version(store):
    store.stats(NOW)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        version = conn.execute(
            "SELECT value FROM mailqueue_meta WHERE key = 'schema_version'"
        ).fetchone()
    conn.close()
    assert version == (str(SCHEMA_VERSION),)


def test_a_version_1_file_is_upgraded(tmp_path):
    location = url(tmp_path / "old.db")
    first = SQLiteStore(location)
    first.enqueue([make_record(NOW)])
    first.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP TABLE mailqueue_buckets")
        conn.execute("DROP TABLE mailqueue_slots")
        conn.execute("UPDATE mailqueue_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    store = SQLiteStore(location)
    assert store.take_token("b", 1.0, 1, NOW) == 0.0
    assert store.stats(NOW).ready == 1
    store.close()


def test_queue_survives_closing_and_reopening(tmp_path):
    location = url(tmp_path / "q.db")
    for synchronous in ("FULL", "NORMAL"):
        first = SQLiteStore(location, synchronous=synchronous)
        first.enqueue([record := make_record(NOW, data=b"kept")])
        first.close()
        second = SQLiteStore(location)
        (claim,) = second.fetch_due(NOW, 10, LEASE)
        assert (claim.id, claim.record.data) == (record.id, b"kept")
        second.ack(claim)
        second.close()


def test_closed_store_can_be_used_again(store):
    store.enqueue([make_record(NOW)])
    store.close()
    assert store.stats(NOW).ready == 1


def test_schema_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mailqueue_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO mailqueue_meta VALUES ('schema_version', '99')")
    conn.close()
    with pytest.raises(ConfigurationError, match="schema version 99"):
        SQLiteStore(url(path)).stats(NOW)


def test_megabyte_binary_record_round_trips(store):
    data = os.urandom(1 << 20)
    store.enqueue([record := make_record(NOW, data=data)])
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    assert claim.record.data == data
    store.bury(claim, "552 too big", NOW)
    (letter,) = store.dead_letters()
    assert letter.record.data == data
    assert store.revive([record.id], NOW) == 1
    (again,) = store.fetch_due(NOW, 10, LEASE)
    assert again.record.data == data


def test_revive_leaves_a_dead_letter_whose_id_is_live_again(store):
    live = make_record(NOW)
    store.enqueue([live])
    store.add_dead([make_record(NOW, id=live.id, data=b"refused part", last_error="550")], NOW)
    assert store.revive(None, NOW) == 0
    (letter,) = store.dead_letters()
    assert letter.record.data == b"refused part"
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    assert claim.record.data == live.data


def test_fetch_with_no_room_claims_nothing(store):
    store.enqueue([make_record(NOW)])
    assert store.fetch_due(NOW, 0, LEASE) == []
    assert store.stats(NOW).ready == 1


def test_threads_sharing_one_store_claim_disjoint_messages(store):
    records = [make_record(NOW) for _ in range(400)]
    store.enqueue(records)
    got: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(got))

    def claim_all(i: int) -> None:
        start.wait()
        while batch := store.fetch_due(NOW, 5, LEASE):
            for claim in batch:
                store.ack(claim)
                got[i].append(claim.id)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(got))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [mid for ids in got for mid in ids]
    assert sorted(every) == sorted(r.id for r in records)
    assert store.stats(NOW + 2 * LEASE).ready == 0


# -- claim cost does not grow with depth ----------------------------------------


def _plan(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM, ("test", NOW, 100))]
    conn.close()
    return plan


def test_claim_query_reads_the_due_index(store):
    store.enqueue([make_record(NOW + i) for i in range(-500, 500)])
    store.fetch_due(NOW, 10, LEASE)
    other = SQLiteStore(store.location, namespace="other")
    other.enqueue([make_record(NOW) for _ in range(500)])
    other.close()
    for analyzed in (False, True):
        if analyzed:
            with sqlite3.connect(store.path) as conn:
                conn.execute("ANALYZE")
            conn.close()
        plan = _plan(store.path)
        assert plan == [
            "SEARCH mailqueue_queue USING INDEX mailqueue_queue_due (namespace=? AND due<?)"
        ], plan


def test_the_look_for_rows_with_unreadable_due_times_reads_the_end_of_the_index(store):
    store.enqueue([make_record(NOW + i) for i in range(100)])
    store.fetch_due(NOW, 10, LEASE)
    with sqlite3.connect(store.path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM_UNTIMED, ("t", 10))]
    conn.close()
    assert plan == [
        "SEARCH mailqueue_queue USING INDEX mailqueue_queue_due (namespace=? AND due>?)"
    ], plan


def _claim_steps(path: str) -> int:
    """Virtual-machine steps SQLite runs for one claim query: a cost that is not a timing."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = sqlite3.connect(path)
    conn.set_progress_handler(count, 1)
    rows = conn.execute(CLAIM, ("test", NOW, 10)).fetchall()
    conn.close()
    assert len(rows) == 10
    return steps


def test_claim_work_is_the_same_at_any_depth(tmp_path):
    costs = []
    for depth in (100, 20_000):
        s = SQLiteStore(url(tmp_path / f"depth{depth}.db"), namespace="test")
        s.enqueue([make_record(NOW - 1) for _ in range(10)])
        s.enqueue([make_record(NOW + 60 + i) for i in range(depth)])
        # Expired leases sit in the same index as due messages.
        s.enqueue([make_record(NOW - 1000) for _ in range(depth)])
        held = s.fetch_due(NOW - 1000, depth, LEASE / 10)
        assert len(held) == depth
        s.close()
        costs.append(_claim_steps(s.path))
    assert costs[0] == costs[1]


# -- StoreUnavailable -----------------------------------------------------------


def test_missing_directory_is_unavailable_until_it_exists(tmp_path):
    s = SQLiteStore(url(tmp_path / "later" / "q.db"))
    with pytest.raises(StoreUnavailable) as info:
        s.enqueue([make_record(NOW)])
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreUnavailable):
        s.stats(NOW)
    (tmp_path / "later").mkdir()
    s.enqueue([make_record(NOW)])
    assert s.stats(NOW).ready == 1
    s.close()


def test_file_that_is_not_a_database_is_unavailable(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is no database\n" * 400)
    s = SQLiteStore(url(path))
    with pytest.raises(StoreUnavailable, match="not a database") as info:
        s.fetch_due(NOW, 10, LEASE)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert path.read_bytes() == b"this is no database\n" * 400
    s.close()


def test_file_locked_by_a_reader_before_wal_is_unavailable(tmp_path):
    path = tmp_path / "plain.db"
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("CREATE TABLE other (x)")
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM other").fetchall()
    s = SQLiteStore(url(path), timeout=0)
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            s.stats(NOW)
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert s.stats(NOW).ready == 0
    s.close()


def test_lock_held_past_the_timeout_is_unavailable_and_changes_nothing(store):
    store.enqueue([make_record(NOW)])
    (claim,) = store.fetch_due(NOW, 10, LEASE)
    impatient = SQLiteStore(store.location, namespace="test", timeout=0)
    impatient.stats(NOW)  # connected before the lock is taken
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for call in (
            lambda: impatient.enqueue([make_record(NOW)]),
            lambda: impatient.fetch_due(NOW + 2 * LEASE, 10, LEASE),
            lambda: impatient.ack(claim),
            lambda: impatient.revive(None, NOW),
            lambda: impatient.purge(NOW),
        ):
            with pytest.raises(StoreUnavailable, match="locked"):
                call()
        # WAL: readers are not blocked by a writer.
        assert impatient.stats(NOW).in_flight == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert impatient.stats(NOW).in_flight == 1
    impatient.ack(claim)
    assert impatient.stats(NOW + 2 * LEASE).ready == 0
    impatient.close()


# -- several processes ----------------------------------------------------------


def _claim_and_ack(location: str, out: str, start: Barrier) -> None:
    store = SQLiteStore(location, namespace="test")
    start.wait()
    got = []
    while batch := store.fetch_due(NOW, 10, LEASE):
        for claim in batch:
            store.ack(claim)
            got.append(claim.id)
    store.close()
    Path(out).write_text(json.dumps(got))


@pytest.mark.drill
def test_processes_claim_each_record_exactly_once(tmp_path, store):
    records = [make_record(NOW - i % 50) for i in range(2000)]
    store.enqueue(records)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    outs = [tmp_path / f"claimed-{i}.json" for i in range(4)]
    procs = [
        ctx.Process(target=_claim_and_ack, args=(store.location, str(out), start)) for out in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    claimed = [mid for out in outs for mid in json.loads(out.read_text())]
    assert len(claimed) == len(set(claimed)) == len(records)
    assert set(claimed) == {r.id for r in records}
    stats = store.stats(NOW + 2 * LEASE)
    assert (stats.ready, stats.scheduled, stats.in_flight) == (0, 0, 0)


def _enqueue_on_a_new_file(location: str, start: Barrier) -> None:
    store = SQLiteStore(location, namespace="test")
    start.wait()
    store.enqueue([make_record(NOW) for _ in range(50)])
    store.close()


@pytest.mark.drill
def test_processes_racing_to_create_the_schema(tmp_path):
    location = url(tmp_path / "fresh.db")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_enqueue_on_a_new_file, args=(location, start)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    s = SQLiteStore(location, namespace="test")
    assert s.stats(NOW).ready == 200
    s.close()


def _child_after_fork(store: SQLiteStore, parent_closed: Event) -> None:
    (claim,) = store.fetch_due(NOW, 1, LEASE)
    store.ack(claim)
    store.enqueue([make_record(NOW, id="from-child-1")])
    assert parent_closed.wait(JOIN_TIMEOUT)
    # The parent closed its connections: the child's writes must still land in
    # the file everyone reads, not in a WAL the parent checkpointed and deleted.
    store.enqueue([make_record(NOW, id="from-child-2")])
    store.close()


def test_store_used_before_fork_works_in_the_child(store):
    store.enqueue([make_record(NOW - 1, id="parent"), make_record(NOW, id="child")])
    (held,) = store.fetch_due(NOW, 1, LEASE)
    assert held.id == "parent"
    ctx = multiprocessing.get_context("fork")
    parent_closed = ctx.Event()
    child = ctx.Process(target=_child_after_fork, args=(store, parent_closed))
    child.start()
    store.ack(held)
    store.close()
    parent_closed.set()
    child.join(JOIN_TIMEOUT)
    assert child.exitcode == 0
    fresh = SQLiteStore(store.location, namespace="test")
    ids = sorted(c.id for c in fresh.fetch_due(NOW, 10, LEASE))
    assert ids == ["from-child-1", "from-child-2"]
    assert store.stats(NOW).in_flight == 2
    fresh.close()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_nothing_to_write_touches_nothing(tmp_path):
    s = SQLiteStore(url(tmp_path / "absent" / "q.db"))
    s.enqueue([])
    s.add_dead([], NOW)
    assert not (tmp_path / "absent").exists()
