"""Room to drain a full disk: the reserve file beside the queue, and checkpoints that free space.

Delivering mail frees space, but on a full disk SQLite cannot even claim: a
claim or an ack writes its pages to the ``-wal`` file first, and that file may
have to grow; a checkpoint may have to grow the database to copy recent pages
into it. So the store keeps ``<queue>-reserve``, a file of ``reserve`` bytes
that nothing writes to. When a call that drains the queue (claim, ack,
requeue, release, bury) fails for want of space, the store deletes the
reserve, truncates the ``-wal`` (a ``TRUNCATE`` checkpoint copies it into the
database and gives its space back), and tries once more. ``enqueue`` never
touches the reserve: on a full disk it raises ``StoreUnavailable``, so the
site's ``FALLBACK_STORE`` takes new mail while the flushers drain. After each
claim, a process that gave the reserve up gives space back to the file
system (:func:`give_back`) and makes the reserve anew once there is room for
it: twice its size free, so that making it never takes the room that was just
given up.

Delivered mail frees pages inside the database; only a database in
``auto_vacuum = INCREMENTAL`` mode (every file this store creates) can hand
them back to the file system, a chunk at a time, without stopping anyone. A
file created by an older release keeps its size (its free pages still take new
mail) until it is converted once with ``VACUUM``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator

from mailqueue_core.text import get_logger

__all__ = ["Reserve", "give_back", "out_of_space", "truncate_wal"]

log = get_logger("mailqueue.stores.sqlite")

_CHUNK = 1 << 16
_SQLITE_IOERR, _SQLITE_FULL = 10, 13  # primary result codes; extended ones add high bits
_INCREMENTAL = 2  # PRAGMA auto_vacuum


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` may come from a full disk (SQLITE_FULL, an I/O error, ENOSPC)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # pragma: no cover - Python < 3.11
            return "full" in str(exc) or "I/O" in str(exc)
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _allocate(fd: int, size: int) -> None:
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
        return
    zeros = bytes(_CHUNK)  # pragma: no cover - platforms without posix_fallocate
    for offset in range(0, size, _CHUNK):  # pragma: no cover
        os.write(fd, zeros[: min(_CHUNK, size - offset)])
    os.fsync(fd)  # pragma: no cover


class Reserve:
    """``size`` bytes of disk held in ``<path>-reserve`` for the calls that drain the queue."""

    def __init__(self, path: str, size: int, mode: int) -> None:
        self.db_path = path
        self.path = path + "-reserve"
        self.size = size
        self.mode = mode
        self.short = False
        """This process found the reserve missing or gave it up: make it again when it can."""

    def ensure(self) -> bool:
        """Make the reserve if it is missing; False when there is no room for it yet."""
        if self.size == 0 or os.path.exists(self.path):
            self.short = False
            return True
        try:
            st = os.statvfs(os.path.dirname(self.path))
        except OSError:  # the directory went away: the next connect says so
            self.short = True
            return False
        if st.f_bavail * st.f_frsize < 2 * self.size:
            self._no_room("less than twice its size is free")
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.mode)
        except FileExistsError:  # another process made it
            self.short = False
            return True
        except OSError as exc:  # not ours to write, no inode left
            self._no_room(os.strerror(exc.errno or 0))
            return False
        try:
            os.fchmod(fd, self.mode)
            _allocate(fd, self.size)
        except OSError as exc:
            os.unlink(self.path)
            self._no_room(os.strerror(exc.errno or 0))
            return False
        finally:
            os.close(fd)
        if self.short:
            log.warning("sqlite store: the reserve %s is made again", self.path)
        self.short = False
        return True

    def _no_room(self, why: str) -> None:
        if not self.short:
            log.warning(
                "sqlite store: no room for the %d-byte reserve %s (%s); a full disk may "
                "stop the flushers until space is freed",
                self.size,
                self.path,
                why,
            )
        self.short = True

    def give_up(self) -> bool:
        """Delete the reserve to make room for a drain; True if there was one to delete."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            self.short = True
            return False
        self.short = True
        log.warning(
            "sqlite store: the disk of %s is full; gave up the %d-byte reserve so that the "
            "flushers can drain the queue (new mail is refused until there is room)",
            self.db_path,
            self.size,
        )
        return True


def truncate_wal(conn: sqlite3.Connection) -> bool:
    """Copy the ``-wal`` into the database and cut it to nothing, without waiting.

    Gives the ``-wal``'s space back to the file system. True when it was done;
    False when another connection was reading or writing (``busy``) or the
    database could not grow to take the pages.
    """
    with _not_waiting(conn):
        try:
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
    return busy == 0


def give_back(conn: sqlite3.Connection, most: int) -> None:
    """Hand up to ``most`` bytes of the database's free pages back to the file system.

    The ``-wal`` is truncated first (its space is the room the page moves
    need), then free pages are cut from the end of the database (moving live
    pages down as needed), then the ``-wal`` is truncated again, which also
    cuts the database file to its new size. Best effort: a busy or full
    database is left as it is.
    """
    truncate_wal(conn)
    (auto_vacuum,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    if auto_vacuum != _INCREMENTAL:
        return
    with _not_waiting(conn), contextlib.suppress(sqlite3.Error):
        # executescript steps the pragma to the end; execute frees one page.
        conn.executescript(f"PRAGMA incremental_vacuum({max(1, most // page_size)})")
    truncate_wal(conn)


@contextlib.contextmanager
def _not_waiting(conn: sqlite3.Connection) -> Iterator[None]:
    """No busy timeout for the block: housekeeping never holds up a flusher."""
    (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
