"""Per-thread, per-process SQLite connections that survive ``os.fork``.

SQLite forbids carrying an open connection across ``fork()``: besides the
connection, SQLite keeps per-process lock bookkeeping that the child inherits,
so even a *new* connection in the child could believe it holds a lock it does
not, and another process could then checkpoint and delete the WAL under it.
Two guards keep that from happening:

- before any ``os.fork`` (``multiprocessing``, gunicorn, a flusher's workers),
  every idle connection in the process is closed, waiting for busy ones to
  finish their call; parent and child both reopen on next use;
- every use checks ``os.getpid()``: a connection opened by another process
  (a fork that bypassed Python's fork hooks) is abandoned, never used and
  never closed, since closing it could release what the parent still needs.

Every use also compares the database and ``-wal`` files at the path with the
ones the connection opened (:class:`~mailqueue_stores.sqlite.files.FileSet`,
two ``stat`` calls): if the queue file was deleted or replaced, the
connection is closed and a new one opened on the file now at the path, so no
write lands in a file that no one will read again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator

from mailqueue_stores.sqlite.files import (
    FileSet,
    create_lock,
    directory_lock,
    log,
    remove_stale_companions,
)

__all__ = ["ConnectionPool"]

_all_handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
_registry_lock = threading.Lock()
_held_over_fork: list[_Handle] = []
_abandoned: list[sqlite3.Connection] = []


class _Handle:
    """One thread's connection and the lock that guards it against the fork hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None
        self.files: FileSet | None = None
        self.pid = os.getpid()

    def drop(self) -> None:
        conn, self.conn, self.files = self.conn, None, None
        if conn is None:
            return
        if self.pid == os.getpid():
            conn.close()
        else:
            _abandoned.append(conn)

    def __del__(self) -> None:
        self.drop()


def _before_fork() -> None:
    _registry_lock.acquire()
    for handle in list(_all_handles):
        handle.lock.acquire()
        _held_over_fork.append(handle)
        handle.drop()
    create_lock.acquire()  # a child must not inherit it held by a thread it lacks


def _after_fork() -> None:
    create_lock.release()
    while _held_over_fork:
        _held_over_fork.pop().lock.release()
    _registry_lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


class ConnectionPool:
    """One connection per thread and per process to ``path``, opened by ``connect``."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], path: str) -> None:
        self._connect = connect
        self._path = path
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, held exclusively for the ``with`` block.

        A :class:`sqlite3.Error` raised in the block closes the connection, so
        that the next call starts from a fresh one (the file may have been
        replaced, its directory created, a lock timed out mid-way).
        """
        handle = self._handle()
        with handle.lock:
            pid = os.getpid()
            if handle.pid != pid:
                handle.drop()
                handle.pid = pid
            if handle.conn is not None and FileSet.at(self._path) != handle.files:
                self._reopen(handle)
            if handle.conn is None:
                with directory_lock(self._path, exclusive=False):
                    self._open(handle)
            assert handle.conn is not None
            try:
                yield handle.conn
            except sqlite3.Error:
                handle.drop()
                raise

    def _open(self, handle: _Handle) -> None:
        handle.conn = self._connect()
        handle.files = FileSet.at(self._path)

    def _reopen(self, handle: _Handle) -> None:
        opened = handle.files
        assert opened is not None
        with directory_lock(self._path, exclusive=True):
            # Closed, never left open: SQLite shares one -shm mapping among a
            # process's connections to a file, so a new connection would share
            # the old one's. (Closing a connection to a moved file never
            # checkpoints it; see the docs of the store on replacing the file.)
            handle.drop()
            removed = remove_stale_companions(self._path, opened)
            log.warning(
                "sqlite store: %s was deleted or replaced while this process had it open; "
                "now using the file at that path%s. Mail written to the old file before "
                "is not moved: replace or delete the queue only with its -wal and -shm, "
                "and with the flushers and the site stopped",
                self._path,
                f" (removed the old file's {', '.join(removed)})" if removed else "",
            )
            self._open(handle)

    def close(self) -> None:
        """Close every connection this pool opened in this process."""
        with _registry_lock:
            handles = list(self._handles)
        for handle in handles:
            with handle.lock:
                handle.drop()

    def _handle(self) -> _Handle:
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = _Handle()
            with _registry_lock:
                _all_handles.add(handle)
                self._handles.add(handle)
            self._local.handle = handle
        return handle
