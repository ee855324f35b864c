"""The SQLite store's wake-ups: a count per namespace that a waiting flusher polls.

The contract's own tests (in ``TestSQLiteStore``) cover the promise; these cover
what is SQLite's: other processes, the commits that must wake no one, the
store's own connection, the site's transaction, a replaced file, old files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.store import Capability, SentRecord, State
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore
from mailqueue_stores.sqlite.wake_ups import HOLD

NOW = 1_700_000_000.0
LEASE = 300.0
JOIN_TIMEOUT = 120  # a guard against a hung child, not a measurement
WOKEN_WITHIN = 10.0  # a wait that ends this early was woken, not timed out


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def open_store(queue: Path) -> Iterator[Callable[..., SQLiteStore]]:
    opened: list[SQLiteStore] = []

    def make(namespace: str = "test", **options: object) -> SQLiteStore:
        store = SQLiteStore(f"sqlite:///{queue}", namespace=namespace, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def waited(store: SQLiteStore, timeout: float) -> tuple[bool, float]:
    started = time.monotonic()
    return store.wait_for_mail(timeout), time.monotonic() - started


def wait_in_thread(store: SQLiteStore, timeout: float) -> tuple[threading.Thread, list]:
    answers: list[tuple[bool, float]] = []
    thread = threading.Thread(target=lambda: answers.append(waited(store, timeout)))
    thread.start()
    return thread, answers


def test_the_store_declares_wake_ups(open_store):
    assert Capability.WAKE in open_store().capabilities
    assert Capability.WAKE in open_store(django_database="default").capabilities


def test_an_enqueue_in_another_process_wakes_a_waiting_flusher(queue, open_store):
    flusher = open_store()
    assert flusher.fetch_due(NOW, 10, LEASE) == []
    thread, answers = wait_in_thread(flusher, 2 * WOKEN_WITHIN)
    script = (
        "import sys\n"
        "from mailqueue_core.testing import make_record\n"
        "from mailqueue_stores.sqlite import SQLiteStore\n"
        "SQLiteStore(f'sqlite:///{sys.argv[1]}', namespace='test').enqueue(\n"
        "    [make_record(1_700_000_000.0, id='from-the-site')])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(queue)],
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=JOIN_TIMEOUT,
    )
    thread.join(JOIN_TIMEOUT)
    ((woken, seconds),) = answers
    assert woken and seconds < WOKEN_WITHIN
    assert [c.id for c in flusher.fetch_due(NOW, 10, LEASE)] == ["from-the-site"]


def test_commits_that_make_no_mail_due_wake_no_one(open_store):
    site, flusher, neighbour = open_store(), open_store(), open_store("shop")
    site.enqueue([make_record(NOW - 1, id="a")])
    (claim,) = flusher.fetch_due(NOW, 10, LEASE)
    # Another thread's connection commits all of these, as the flusher's acker does.
    site.ack(claim)
    site.beat("host:1", NOW, NOW + 60)
    site.log_sent([SentRecord("a", NOW, ("r@example.com",), transport="smtp")], NOW + 60)
    site.set_paused(True)
    site.delete(["nothing"], NOW)
    assert site.send_now(["nothing"], NOW) == 0
    assert site.revive(["nothing"], NOW) == 0
    neighbour.enqueue([make_record(NOW, id="elsewhere")])
    assert flusher.wait_for_mail(0.2) is False


def test_revive_and_send_now_wake(open_store):
    site, flusher = open_store(), open_store()
    site.enqueue([make_record(NOW - 1, id="dead"), make_record(NOW + 3600, id="later")])
    (claim,) = flusher.fetch_due(NOW, 10, LEASE)
    site.bury(claim, "550 no", NOW)
    assert flusher.wait_for_mail(0.05) is False  # a burial wakes no one
    assert site.revive(["dead"], NOW) == 1
    assert flusher.wait_for_mail(5.0) is True
    assert site.send_now(["later"], NOW) == 1
    assert flusher.wait_for_mail(5.0) is True
    assert {e.record.id for e in flusher.browse(State.READY, NOW).entries} == {"dead", "later"}


def test_the_stores_own_commits_wake_it_too(open_store):
    # SQLite's data_version does not change for a connection's own commits:
    # the count is read when a wait begins.
    store = open_store()
    assert store.fetch_due(NOW, 10, LEASE) == []
    store.enqueue([make_record(NOW)])
    woken, seconds = waited(store, 2 * WOKEN_WITHIN)
    assert woken and seconds < WOKEN_WITHIN


def test_a_first_wait_without_a_claim_waits_for_what_comes_next(open_store):
    site, flusher = open_store(), open_store()
    site.enqueue([make_record(NOW)])  # before this client ever looked
    assert flusher.wait_for_mail(0.1) is False
    thread, answers = wait_in_thread(flusher, 2 * WOKEN_WITHIN)
    site.enqueue([make_record(NOW)])
    thread.join(JOIN_TIMEOUT)
    ((woken, seconds),) = answers
    assert woken and seconds < WOKEN_WITHIN


def test_a_wait_longer_than_a_hold_times_out_and_a_late_wake_is_seen(open_store):
    site, flusher = open_store(), open_store()
    flusher.fetch_due(NOW, 10, LEASE)
    woken, seconds = waited(flusher, 3 * HOLD)
    assert not woken and seconds >= 3 * HOLD
    thread, answers = wait_in_thread(flusher, 2 * WOKEN_WITHIN)
    time.sleep(3 * HOLD)  # the wait is into a later hold of its connection
    site.enqueue([make_record(NOW)])
    thread.join(JOIN_TIMEOUT)
    ((woken, seconds),) = answers
    assert woken and seconds < WOKEN_WITHIN


def test_a_zero_timeout_looks_once(open_store):
    site, flusher = open_store(), open_store()
    flusher.fetch_due(NOW, 10, LEASE)
    assert flusher.wait_for_mail(0) is False
    site.enqueue([make_record(NOW)])
    assert flusher.wait_for_mail(-1) is True


def test_a_waiting_flusher_moves_to_a_replaced_file(queue, open_store, caplog):
    site, flusher = open_store(), open_store()
    site.enqueue([make_record(NOW - 1)])
    site.close()
    claimed = threading.Event()
    answers: list[tuple[bool, float]] = []

    def serve() -> None:
        flusher.fetch_due(NOW, 10, LEASE)  # this thread's connection opens the first file
        claimed.set()
        answers.append(waited(flusher, 2 * WOKEN_WITHIN))

    with caplog.at_level(logging.WARNING, logger="mailqueue.stores.sqlite"):
        thread = threading.Thread(target=serve)
        thread.start()
        assert claimed.wait(JOIN_TIMEOUT)
        for name in ("", "-wal", "-shm"):
            Path(f"{queue}{name}").unlink()
        open_store().enqueue([make_record(NOW, id="new-file")])
        thread.join(JOIN_TIMEOUT)
    ((woken, seconds),) = answers
    assert woken and seconds < WOKEN_WITHIN
    assert any("deleted or replaced" in r.getMessage() for r in caplog.records)
    assert [c.id for c in flusher.fetch_due(NOW, 10, LEASE)] == ["new-file"]


def test_a_count_changed_by_hand_still_wakes(queue, open_store):
    site, flusher = open_store(), open_store()
    site.enqueue([make_record(NOW)])
    flusher.fetch_due(NOW, 10, LEASE)
    with contextlib.closing(sqlite3.connect(queue, isolation_level=None)) as conn:
        conn.execute("UPDATE mailqueue_wakes SET wakes = 'many'")
    assert flusher.wait_for_mail(5.0) is True
    site.enqueue([make_record(NOW)])
    assert flusher.wait_for_mail(5.0) is True
    assert flusher.wait_for_mail(0.05) is False


def test_a_file_without_the_wakes_table_gets_it(queue, open_store):
    open_store().stats(NOW)
    with contextlib.closing(sqlite3.connect(queue, isolation_level=None)) as conn:
        conn.execute("DROP TABLE mailqueue_wakes")
    site, flusher = open_store(), open_store()
    flusher.fetch_due(NOW, 10, LEASE)
    site.enqueue([make_record(NOW)])
    assert flusher.wait_for_mail(5.0) is True


def test_a_wait_on_a_queue_that_cannot_be_opened_is_unavailable(tmp_path, open_store):
    with pytest.raises(StoreUnavailable, match="no such file"):
        open_store(create=False).wait_for_mail(1.0)
    (tmp_path / "queue.db").write_bytes(b"not a database, just bytes" * 200)
    with pytest.raises(StoreUnavailable, match="not a database"):
        open_store().wait_for_mail(1.0)


SITE = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    path = sys.argv[1]
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}},
        MAILQUEUE={
            "STORE": {"NAME": f"sqlite:///{path}", "OPTIONS": {"django_database": "default"}}
        },
        DEFAULT_FROM_EMAIL="site@example.com",
    )
    django.setup()
    import contextlib, sqlite3
    from django.core.mail import EmailMessage
    from django.db import connection, transaction
    from mailqueue_core.backend import EmailBackend
    from mailqueue_stores.sqlite import SQLiteStore

    def send(subject):
        EmailBackend().send_messages([EmailMessage(subject, "b", None, ["r@example.com"])])

    send("made the queue")  # through the site's connection: every table
    flusher = SQLiteStore(f"sqlite:///{path}")  # its own connection, as a service's
    assert [c.record.id for c in flusher.fetch_due(4e9, 10, 60)]
    assert flusher.wait_for_mail(0) is False

    try:
        with transaction.atomic():
            send("rolled back")
            raise RuntimeError("payment failed")
    except RuntimeError:
        pass
    assert flusher.wait_for_mail(0.1) is False
    with transaction.atomic():
        send("committed")
        assert flusher.wait_for_mail(0.1) is False  # not before the commit
    assert flusher.wait_for_mail(5) is True

    # A queue file made before wake-ups, that no store's own connection opened since.
    flusher.close()
    connection.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute("DROP TABLE mailqueue_wakes")
    send("old file")
    flusher = SQLiteStore(f"sqlite:///{path}")
    assert flusher.wait_for_mail(0) is False  # nothing since: the baseline
    send("after the upgrade")
    assert flusher.wait_for_mail(5) is True
    print("ok")
    """
)


def test_the_sites_transaction_wakes_at_its_commit_only(tmp_path):
    script = tmp_path / "site.py"
    script.write_text(SITE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "site.db")],
        capture_output=True,
        text=True,
        env=env,
        timeout=JOIN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
