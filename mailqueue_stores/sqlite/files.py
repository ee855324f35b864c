"""The SQLite store's files on disk: who may read them, and which file a connection has open.

Permissions
    The queue holds password-reset links and the like, so the file is created
    with ``mode`` (0600 unless the store is told otherwise) whatever the
    process's umask: :func:`create_private` makes it empty with ``O_EXCL``
    before SQLite opens it, and SQLite gives the ``-wal`` and ``-shm`` files it
    creates the database's mode. An existing file that others may read or
    write is used, with a WARNING once per process and path
    (:func:`warn_if_open_to_others`).

Which file a connection has open
    A connection keeps the inode it opened. If the queue file is deleted or
    another file is moved over it, a process that keeps its connection writes
    into a file no one will read again. :class:`FileSet` is the (device, inode)
    of the database and its ``-wal`` at the path; the pool compares it before
    each call (two ``stat`` calls) with the set it connected to.

    When SQLite opens a database whose ``-wal`` and ``-shm`` belong to another
    database (the file was replaced, its companions left behind), it reads the
    other database's recent pages as its own. So the first connection that
    notices a replacement removes the companions it had open, if they are
    still at the path (:func:`remove_stale_companions`), under an exclusive
    ``flock`` of the directory; every connect holds the same lock shared, so
    no process opens the companions while they are being removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from typing import NamedTuple

from mailqueue_core.text import get_logger

__all__ = [
    "FileSet",
    "create_private",
    "directory_lock",
    "remove_stale_companions",
    "warn_if_open_to_others",
]

log = get_logger("mailqueue.stores.sqlite")

Identity = tuple[int, int]
OTHERS = stat.S_IROTH | stat.S_IWOTH

_warned: set[tuple[int, str]] = set()
# Held while a file is created with a raw descriptor and while SQLite opens
# one: closing a descriptor drops every POSIX lock this process holds on that
# file, so no connection of this process may open it in between.
create_lock = threading.Lock()


def _identity(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class FileSet(NamedTuple):
    """Which database and ``-wal`` file are at ``path`` (None: none is).

    A tuple, as it is made and compared before every call.
    """

    db: Identity | None
    wal: Identity | None

    @classmethod
    def at(cls, path: str) -> FileSet:
        return cls(_identity(path), _identity(path + "-wal"))


def create_private(path: str, mode: int) -> bool:
    """Create ``path`` empty with exactly ``mode`` unless it exists; True if it was made."""
    with create_lock:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            return False
        except FileNotFoundError:  # no directory: SQLite reports it when it opens the file
            return False
        try:
            os.fchmod(fd, mode)  # the umask narrowed the mode given to open()
        finally:
            os.close(fd)
    return True


def warn_if_open_to_others(path: str) -> None:
    """Log a WARNING, once per process and path, if others may read or write the queue."""
    key = (os.getpid(), path)
    if key in _warned:
        return
    lax = []
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(name).st_mode
            if mode & OTHERS:
                lax.append(f"{name} ({stat.filemode(mode)})")
    if lax:
        _warned.add(key)  # two threads may both warn once: harmless
        log.warning(
            "sqlite store: %s can be read or written by other users of this machine; "
            "queued mail holds password-reset links and the like: chmod o-rw them "
            "(the store creates new files with its 'mode' option, 0600 by default)",
            ", ".join(lax),
        )


@contextlib.contextmanager
def directory_lock(path: str, exclusive: bool) -> Iterator[None]:
    """An ``flock`` of the directory of ``path``; shared to connect, exclusive to clean up.

    A directory this process cannot open (no read permission) is not locked:
    the guard is then only what SQLite itself gives.
    """
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        # No such directory: SQLite says so when it opens the file.
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOENT):
            raise
        fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the flock


def remove_stale_companions(path: str, opened: FileSet) -> list[str]:
    """Remove the ``-wal`` and ``-shm`` at ``path`` if they are the ones ``opened`` had.

    Call with the directory lock held exclusively, after closing the
    connection that had them open. They belong to the database that is gone
    from the path; left there, the next connection would read them as part of
    the new file. Returns the names removed.
    """
    removed = []
    if opened.wal is not None and _identity(path + "-wal") == opened.wal:
        # The -shm indexes that -wal: it goes with it.
        for name in (path + "-wal", path + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
                removed.append(name)
    return removed
