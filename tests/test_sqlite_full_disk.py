"""A full disk still drains: the SQLite store on a real, small tmpfs.

Each test mounts a tmpfs of its own (root can, here) and fills it with the
queue until ``enqueue`` is refused; claims, acks, requeues, releases and
burials must then go on, using the reserve beside the queue file. A test that
cannot mount its tmpfs fails, saying why: it never skips.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
LEASE = 300.0
RESERVE = 512 * 1024
RECORD = 16 * 1024


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted on a fresh directory."""
    where = Path(tempfile.mkdtemp(prefix="mq-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.fail(
            f"cannot mount a {size} tmpfs for the full-disk test (it needs root or "
            f"CAP_SYS_ADMIN): {done.stderr.strip()}"
        )
    try:
        yield where
    finally:
        # Lazy: a failed test may leave a store with the files open.
        subprocess.run(["umount", "--lazy", str(where)], check=True)
        where.rmdir()


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(store: SQLiteStore, size: int = RECORD) -> int:
    """Enqueue ``size``-byte records until the disk refuses one; returns how many went in."""
    queued = 0
    while True:
        try:
            store.enqueue([make_record(NOW - 1, data=os.urandom(size))])
        except StoreUnavailable as exc:
            assert "full" in str(exc), exc
            return queued
        queued += 1


@pytest.fixture
def disk():
    # Room for the default 8 MiB reserve and 24 MiB of queue.
    with small_tmpfs("32m") as where:
        yield where


def test_enqueue_is_refused_but_every_drain_call_goes_on(disk):
    url = f"sqlite:///{disk}/queue.db"
    site = SQLiteStore(url)
    queued = fill(site)
    assert queued > 1000
    assert (disk / "queue.db-reserve").stat().st_size == 8 << 20
    site.close()  # every process lets go: the next flusher starts from scratch
    flusher = SQLiteStore(url)
    first = flusher.fetch_due(NOW, 3, LEASE)
    assert len(first) == 3
    assert not (disk / "queue.db-reserve").exists()  # given up to let the claim through
    flusher.requeue(first[0], NOW + 60, "451 try later")
    flusher.release(first[1])
    flusher.bury(first[2], "550 no such user", NOW)
    drained = 1
    while claims := flusher.fetch_due(NOW + 120, 50, LEASE):
        for claim in claims:
            flusher.ack(claim)
            drained += 1
    assert drained == queued
    stats = flusher.stats(NOW + 120)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck, stats.dead) == (
        0,
        0,
        0,
        0,
        1,
    )
    # The drained pages and the truncated -wal are room again: the reserve is
    # back, and new mail is taken.
    assert (disk / "queue.db-reserve").stat().st_size == 8 << 20
    site.enqueue([make_record(NOW)])
    assert site.stats(NOW).ready == 1
    site.close()
    flusher.close()


def test_a_full_disk_with_the_wal_in_use_drains(disk):
    """The site keeps its connection (the -wal stays) while a flusher drains."""
    url = f"sqlite:///{disk}/queue.db"
    site = SQLiteStore(url)
    queued = fill(site)
    flusher = SQLiteStore(url)
    drained = 0
    while claims := flusher.fetch_due(NOW, 100, LEASE):
        for claim in claims:
            flusher.ack(claim)
            drained += 1
    assert drained == queued
    assert flusher.stats(NOW).ready == 0
    # Space the drain freed takes new mail again.
    assert fill(site) > 0.5 * queued
    site.close()
    flusher.close()


def test_no_reserve_when_there_is_no_room_for_it(disk, caplog):
    filler = disk / "filler"
    with filler.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, free_bytes(disk) - 256 * 1024)
    store = SQLiteStore(f"sqlite:///{disk}/queue.db?reserve={RESERVE}")
    with caplog.at_level("WARNING", logger="mailqueue.stores.sqlite"):
        store.enqueue([make_record(NOW)])
    assert not (disk / "queue.db-reserve").exists()
    assert "no room for the 524288-byte reserve" in caplog.text
    filler.unlink()
    (claim,) = store.fetch_due(NOW, 10, LEASE)  # a claim tries again
    assert (disk / "queue.db-reserve").stat().st_size == RESERVE
    store.ack(claim)
    store.close()


def test_reserve_zero_keeps_none(tmp_path):
    store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", reserve=0)
    store.enqueue([make_record(NOW)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "queue.db",
        "queue.db-shm",
        "queue.db-wal",
    ]
    assert store.options["reserve"] == 0
    store.close()


def test_the_default_reserve_is_8_mib(tmp_path):
    store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db")
    store.stats(NOW)
    assert (tmp_path / "queue.db-reserve").stat().st_size == 8 << 20
    assert "reserve" not in store.options
    store.close()


def test_an_error_that_is_not_a_full_disk_keeps_the_reserve(tmp_path):
    path = tmp_path / "junk.db"
    store = SQLiteStore(f"sqlite:///{path}?reserve=4096")
    store.stats(NOW)
    store.close()
    for name in ("junk.db", "junk.db-wal", "junk.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    path.write_bytes(b"this is no database\n" * 400)
    with pytest.raises(StoreUnavailable, match="not a database"):
        store.fetch_due(NOW, 10, LEASE)
    assert (tmp_path / "junk.db-reserve").exists()
    store.close()


@pytest.mark.parametrize("value", [-1, "big", 1.5, True, None])
def test_bad_reserve_is_refused(tmp_path, value):
    from mailqueue_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="reserve"):
        SQLiteStore(f"sqlite:///{tmp_path}/q.db", reserve=value)


def test_without_a_reserve_a_full_disk_stops_the_drain():
    """Why the reserve exists: what every claim did on a full disk before it."""
    with small_tmpfs("4m") as where:
        url = f"sqlite:///{where}/queue.db?reserve=0"
        site = SQLiteStore(url)
        queued = fill(site, size=3000)
        site.close()
        flusher = SQLiteStore(url)
        with pytest.raises(StoreUnavailable, match="full"):
            flusher.fetch_due(NOW, 10, LEASE)
        flusher.close()
    assert queued > 0


def _reserve_over_the_file_size_limit(path: str) -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    store = SQLiteStore(f"sqlite:///{path}?reserve={4 << 20}")
    store.enqueue([make_record(NOW)])
    assert store.stats(NOW).ready == 1
    store.close()


def test_a_reserve_that_cannot_be_made_is_reported_and_the_store_works(tmp_path):
    """A real process whose file size limit (ulimit -f) is below the reserve."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_reserve_over_the_file_size_limit, args=(str(tmp_path / "q.db"),))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert not (tmp_path / "q.db-reserve").exists()


def test_out_of_space_errors():
    import errno

    from mailqueue_stores.sqlite.space import out_of_space

    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not out_of_space(ValueError("full"))
    assert not out_of_space(None)


def test_a_reserve_already_given_up_by_another_process(tmp_path):
    from mailqueue_stores.sqlite.space import Reserve

    one, other = (
        Reserve(str(tmp_path / "q.db"), 4096, 0o600),
        Reserve(str(tmp_path / "q.db"), 4096, 0o600),
    )
    assert one.ensure() and other.ensure()
    assert one.give_up()
    assert not other.give_up()
    assert other.short
    assert other.ensure() and not other.short


def test_no_inode_left_for_the_reserve(caplog):
    """Out of inodes, not of blocks: the queue's three files fit, the reserve does not."""
    with small_tmpfs("4m,nr_inodes=4") as where:
        with caplog.at_level("WARNING", logger="mailqueue.stores.sqlite"):
            store = SQLiteStore(f"sqlite:///{where}/queue.db?reserve=4096")
            store.enqueue([make_record(NOW)])
        assert "No space left on device" in caplog.text
        assert sorted(p.name for p in where.iterdir()) == [
            "queue.db",
            "queue.db-shm",
            "queue.db-wal",
        ]
        store.close()


def test_a_reserve_in_a_directory_that_is_gone(tmp_path):
    from mailqueue_stores.sqlite.space import Reserve

    reserve = Reserve(str(tmp_path / "gone" / "q.db"), 4096, 0o600)
    assert not reserve.ensure()
    assert reserve.short


def test_a_reserve_made_by_another_process_meanwhile(tmp_path):
    from mailqueue_stores.sqlite.space import Reserve

    # A dangling link stands for a reserve another process made between the
    # look and the create: the exclusive create finds something there.
    (tmp_path / "q.db-reserve").symlink_to(tmp_path / "elsewhere")
    reserve = Reserve(str(tmp_path / "q.db"), 4096, 0o600)
    assert reserve.ensure()
    assert not reserve.short


def test_give_back_shrinks_the_file_and_never_waits(tmp_path):
    import contextlib
    import sqlite3

    from mailqueue_stores.sqlite.space import give_back

    store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", reserve=0)
    store.enqueue([make_record(NOW, data=os.urandom(RECORD)) for _ in range(200)])
    while claims := store.fetch_due(NOW, 100, LEASE):
        for claim in claims:
            store.ack(claim)
    store.close()
    path = tmp_path / "queue.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        full = path.stat().st_size
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        give_back(conn, 1 << 30)  # busy: leaves it as it is, at once
        assert path.stat().st_size >= full
        blocker.execute("ROLLBACK")
        blocker.close()
        give_back(conn, 1 << 30)
        assert path.stat().st_size < full / 10
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)


def test_a_file_from_an_older_release_drains_too(disk):
    """auto_vacuum NONE (as older releases made files): drained, its pages kept."""
    import contextlib
    import sqlite3

    path = disk / "queue.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE site_notes (x)")  # not empty: auto_vacuum stays NONE
    site = SQLiteStore(f"sqlite:///{path}")
    queued = fill(site)
    site.close()
    flusher = SQLiteStore(f"sqlite:///{path}")
    drained = 0
    while claims := flusher.fetch_due(NOW, 100, LEASE):
        for claim in claims:
            flusher.ack(claim)
            drained += 1
    assert drained == queued > 1000
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    flusher.close()


def test_new_files_give_pages_back(tmp_path):
    import contextlib
    import sqlite3

    SQLiteStore(f"sqlite:///{tmp_path}/queue.db").stats(NOW)
    with contextlib.closing(sqlite3.connect(tmp_path / "queue.db")) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
