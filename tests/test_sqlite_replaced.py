"""A queue file deleted or replaced while processes have it open.

Before, a web process kept its connection to the deleted inode and queued into
it (``send_mail`` returned 1, the mail was gone), and a loop flusher kept
watching the old file. Each store now compares the file at the path with the
one it has open before every call, and reopens.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from django.core.mail import send_mail
from django.test import override_settings

from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore
from tests.drills import start_flushers

NOW = 1_700_000_000.0
LEASE = 300.0
JOIN_TIMEOUT = 120  # a guard against a hung child, not a measurement


def ids_in_file(path: Path) -> list[str]:
    """What a fresh reader of the file at ``path`` finds queued."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [mid for (mid,) in conn.execute("SELECT id FROM mailqueue_queue ORDER BY rowid")]


def other_queue(path: Path, record_id: str) -> None:
    """A whole other queue file (a restored backup), closed cleanly: no -wal of its own."""
    store = SQLiteStore(f"sqlite:///{path}", namespace="test")
    store.enqueue([make_record(NOW - 10, id=record_id)])
    store.close()
    assert not Path(f"{path}-wal").exists()


@pytest.fixture
def queue(tmp_path):
    return tmp_path / "queue.db"


@pytest.fixture
def site(queue):
    s = SQLiteStore(f"sqlite:///{queue}", namespace="test")
    yield s
    s.close()


@pytest.fixture
def flusher(queue):
    s = SQLiteStore(f"sqlite:///{queue}", namespace="test")
    yield s
    s.close()


def _delete_db(queue: Path) -> None:
    queue.unlink()


def _delete_all(queue: Path) -> None:
    for name in ("", "-wal", "-shm"):
        Path(f"{queue}{name}").unlink()


@pytest.mark.parametrize("delete", [_delete_db, _delete_all], ids=["db-only", "with-companions"])
def test_a_deleted_queue_file_is_noticed_before_the_next_call(queue, site, flusher, delete):
    site.enqueue([make_record(NOW, id="before")])
    assert [c.id for c in flusher.fetch_due(NOW, 10, LEASE)] == ["before"]
    delete(queue)
    site.enqueue([make_record(NOW, id="after")])
    assert ids_in_file(queue) == ["after"]
    assert [c.id for c in flusher.fetch_due(NOW, 10, LEASE)] == ["after"]
    assert ids_in_file(queue) == ["after"]


def test_a_file_moved_over_the_queue_is_used_with_its_own_mail(tmp_path, queue, site, flusher):
    site.enqueue([make_record(NOW, id="before")])
    flusher.stats(NOW)  # both have the file open, and its -wal holds "before"
    other_queue(tmp_path / "restored.db", "restored")
    os.rename(tmp_path / "restored.db", queue)
    site.enqueue([make_record(NOW, id="after")])
    # Without removing the old -wal, a reader of the new file would see the old
    # file's pages through it ("before", and a damaged index).
    assert ids_in_file(queue) == ["restored", "after"]
    claims = flusher.fetch_due(NOW, 10, LEASE)
    assert [c.id for c in claims] == ["restored", "after"]
    for claim in claims:
        flusher.ack(claim)
    assert ids_in_file(queue) == []


def test_the_replacement_is_logged_with_what_was_removed(tmp_path, queue, site, caplog):
    site.enqueue([make_record(NOW)])
    other_queue(tmp_path / "restored.db", "restored")
    os.rename(tmp_path / "restored.db", queue)
    with caplog.at_level(logging.WARNING, logger="mailqueue.stores.sqlite"):
        assert site.stats(NOW).ready == 1
    (line,) = [r.getMessage() for r in caplog.records if "replaced" in r.getMessage()]
    assert f"removed the old file's {queue}-wal, {queue}-shm" in line


def _late_process(path: str, opened: Event, go: Event) -> None:
    late = SQLiteStore(f"sqlite:///{path}", namespace="test")
    late.stats(NOW)  # opens the new file with the old file's -wal: the documented window
    opened.set()
    assert go.wait(JOIN_TIMEOUT)
    late.enqueue([make_record(NOW, id="late")])  # notices its -wal is gone, reopens
    late.close()


def test_a_process_that_opened_the_new_file_late_follows_the_cleanup(tmp_path, queue, site):
    """A process that connects after the replacement, before anyone noticed it."""
    site.enqueue([make_record(NOW, id="before")])
    other_queue(tmp_path / "restored.db", "restored")
    os.rename(tmp_path / "restored.db", queue)
    ctx = multiprocessing.get_context("spawn")
    opened, go = ctx.Event(), ctx.Event()
    late = ctx.Process(target=_late_process, args=(str(queue), opened, go))
    late.start()
    assert opened.wait(JOIN_TIMEOUT)
    site.stats(NOW)  # the old file's holder notices and removes the old -wal and -shm
    go.set()
    late.join(JOIN_TIMEOUT)
    assert late.exitcode == 0
    assert ids_in_file(queue) == ["restored", "late"]


def test_threads_of_one_store_each_reopen(queue, site):
    import threading

    site.enqueue([make_record(NOW, id="main")])
    ready, go, done = threading.Event(), threading.Event(), []

    def worker() -> None:
        site.stats(NOW)  # this thread's own connection
        ready.set()
        go.wait()
        site.enqueue([make_record(NOW, id="thread")])
        done.append(True)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    queue.unlink()
    site.enqueue([make_record(NOW, id="main-after")])
    go.set()
    thread.join()
    assert done == [True]
    assert sorted(ids_in_file(queue)) == ["main-after", "thread"]


def test_a_queue_file_in_a_directory_that_is_gone_is_unavailable(tmp_path):
    from mailqueue_core.errors import StoreUnavailable

    spool = tmp_path / "spool"
    spool.mkdir()
    store = SQLiteStore(f"sqlite:///{spool}/queue.db")
    store.enqueue([make_record(NOW)])
    for name in os.listdir(spool):
        os.unlink(spool / name)
    spool.rmdir()
    with pytest.raises(StoreUnavailable):
        store.enqueue([make_record(NOW)])
    spool.mkdir()
    store.enqueue([make_record(NOW, id="back")])
    assert ids_in_file(spool / "queue.db") == ["back"]
    store.close()


def test_a_loop_flusher_and_a_site_follow_a_replaced_file(tmp_path, queue, smtp):
    """Real processes: a ``flush --loop`` service and ``send_mail`` in this process."""
    url = f"sqlite:///{queue}"
    settings = {"STORE": url}
    with override_settings(MAILQUEUE=settings):
        assert send_mail("drill 0", "body", "site@example.com", ["a@example.com"]) == 1
        (service,) = start_flushers(url, smtp.port, 1, "--loop", "--interval", "0.05")
        try:
            smtp.wait_for(1, timeout=30)  # the service has the file open
            other = tmp_path / "restored.db"
            store = SQLiteStore(f"sqlite:///{other}")
            store.enqueue([make_record(time.time() - 10, id="not-a-drill-mail", data=b"{}")])
            store.close()
            os.rename(other, queue)
            assert send_mail("drill 1", "body", "site@example.com", ["b@example.com"]) == 1
            received = smtp.wait_for(2, timeout=30)
        finally:
            service.send_signal(signal.SIGTERM)
            _, err = service.communicate(timeout=30)
    assert service.returncode == 0, err.decode()
    assert [m.rcpt_tos for m in received] == [["a@example.com"], ["b@example.com"]]
    # The restored file's own record could not be decoded: buried, not lost.
    with SQLiteStore(url) as store:
        stats = store.stats(time.time())
        assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 1)
    assert "replaced" in err.decode()


def test_processes_see_the_same_file_after_a_replacement(tmp_path, queue, site):
    """A second process (the standalone status command) reads the file at the path."""
    site.enqueue([make_record(NOW, id="before")])
    queue.unlink()
    site.enqueue([make_record(NOW, id="after")])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailqueue_core.cli",
            "status",
            "--store",
            f"sqlite:///{queue}?namespace=test",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"ready": 1' in done.stdout


def test_a_queue_path_under_a_regular_file_is_unavailable(tmp_path):
    from mailqueue_core.errors import StoreUnavailable

    (tmp_path / "spool").write_text("not a directory")
    store = SQLiteStore(f"sqlite:///{tmp_path}/spool/queue.db")
    with pytest.raises(StoreUnavailable):
        store.enqueue([make_record(NOW)])
