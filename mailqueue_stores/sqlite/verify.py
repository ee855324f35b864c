"""``SQLiteStore.verify``: can this process use the queue file as the store is configured?

Asked by ``manage.py check`` and by every flusher when it starts and every
minute, so that a queue that cannot be opened is reported before the first
``send_mail()`` fails, with the command that fixes it. Nothing is created: a
few ``stat`` and ``access`` calls and, for an existing file, one short SQLite
connection that reads its table names (0.25 ms measured while the store has
the file open, 0.5 ms when the read is the file's last connection and so
folds the ``-wal`` back in as it closes). The file is never opened other than
through SQLite: closing a plain descriptor on it would drop the locks this
process's connections hold.

Each problem is a :class:`~mailqueue_core.errors.ConfigurationError` whose text
ends in ``Fix: <what to run>``, which the system check shows as its hint.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import sqlite3
import stat
from typing import NamedTuple
from urllib.parse import quote

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_stores.sqlite import schema
from mailqueue_stores.sqlite.files import create_lock, directory_lock, log
from mailqueue_stores.sqlite.options import WHAT, FileLocation

__all__ = ["diagnose", "no_queue", "uri", "verify_queue"]

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_noted: set[tuple[int, str]] = set()


def verify_queue(
    where: FileLocation, *, mode: int, timeout: float, site_database: str | None, create: bool
) -> None:
    """Raise ConfigurationError (with its fix) or StoreUnavailable, as ``Store.verify`` says."""
    problem = diagnose(where, mode)
    if problem is None:
        found = _read(where, timeout)
        problem = _content_problem(where, found, site_database)
        if problem is None and not create and not (found and found.version):
            raise no_queue(where, "no such file" if found is None else "no queue tables in it")
    if problem is not None:
        raise ConfigurationError(f"{WHAT}: {problem}")
    _note_relative(where)


def no_queue(where: FileLocation, why: str) -> StoreUnavailable:
    """The error of a store told not to create its queue (``create=false``) that finds none."""
    return StoreUnavailable(
        f"{WHAT}: there is no queue at {where.shown} ({why}); nothing was created, as this "
        "use opens an existing queue only: check the path"
    )


def diagnose(where: FileLocation, mode: int) -> str | None:
    """What in the file system stops this process from using the queue, with the fix, if any."""
    return _directory_problem(where, mode) or _file_problem(where)


def uri(path: str, *, create: bool) -> str:
    """A SQLite URI that opens ``path`` for reading and writing, creating it only if asked."""
    return f"file:{quote(path)}?mode={'rwc' if create else 'rw'}"


# -- what to run ----------------------------------------------------------------------


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _owner(mode: int) -> str:
    """``user``, or ``user:group`` when the queue is shared with a group."""
    if not mode & 0o070:
        return _user()
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return f"{_user()}:{group}"


def _chown(mode: int, *paths: str) -> str:
    command = f"chown {_owner(mode)} {' '.join(shlex.quote(p) for p in paths)}"
    return command + (f" && chmod 2770 {shlex.quote(paths[0])}" if mode & 0o070 else "")


def _as_whom() -> str:
    return f"(this process runs as {_user()}: name the user of the site and its flushers)"


def _may(path: str, how: int) -> bool:
    return os.access(path, how, effective_ids=os.access in os.supports_effective_ids)


# -- the checks -------------------------------------------------------------------------


def _directory_problem(where: FileLocation, mode: int) -> str | None:
    directory = os.path.dirname(where.path)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return (
            f"the directory {directory} of the queue {where.shown} does not exist. Fix: "
            f"mkdir -p {shlex.quote(directory)} && {_chown(mode, directory)} {_as_whom()}"
        )
    except OSError as exc:  # a directory above it this user cannot search, or a file
        return (
            f"this process ({_user()}) cannot reach the directory {directory} of the queue "
            f"{where.shown}: {exc.strerror}. Fix: let {_user()} search every directory on "
            "that path (chmod o+x or a group), or choose a path it can reach"
        )
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory. Fix: choose another path for the queue"
    if not _may(directory, os.W_OK | os.X_OK):
        return (
            f"this process ({_user()}) cannot create files in {directory}, the directory of "
            f"the queue {where.shown}: SQLite creates the queue's -wal and -shm there. "
            f"Fix: {_chown(mode, directory)} {_as_whom()}"
        )
    return None


def _file_problem(where: FileLocation) -> str | None:
    if os.path.exists(where.path) and not os.path.isfile(where.path):
        return f"{where.path} is not a file. Fix: choose another path for the queue"
    unusable = [
        name
        for name in (where.path, where.path + "-wal", where.path + "-shm")
        if os.path.exists(name) and not _may(name, os.R_OK | os.W_OK)
    ]
    if not unusable:
        return None
    return (
        f"this process ({_user()}) cannot read and write {', '.join(unusable)}, the queue "
        f"{where.shown}. Fix: chown {_user()} {' '.join(map(shlex.quote, unusable))} "
        f"{_as_whom()}"
    )


class Found(NamedTuple):
    version: int
    """The queue's schema version; 0: no queue in the file."""
    tables: list[str]


def _read(where: FileLocation, timeout: float) -> Found | None:
    """What the file holds; None when there is no file.

    A file that is not a SQLite database is a ConfigurationError; a lock or an
    I/O error is StoreUnavailable.
    """
    try:
        size = os.path.getsize(where.path)
    except FileNotFoundError:
        return None
    # An empty file was made by a store that had not written it yet.
    return _inspect(where, timeout) if size else Found(0, [])


def _inspect(where: FileLocation, timeout: float) -> Found:
    try:
        with directory_lock(where.path, exclusive=False):
            with create_lock:
                conn = sqlite3.connect(
                    uri(where.path, create=False), uri=True, timeout=timeout, isolation_level=None
                )
            with contextlib.closing(conn):
                tables = [name for (name,) in conn.execute(schema.TABLES)]
                return Found(schema.schema_version(conn), tables)
    except (sqlite3.Error, OSError) as exc:
        if _not_a_database(exc):
            raise ConfigurationError(
                f"{WHAT}: {where.shown} is not a SQLite queue ({exc}). Fix: point the store "
                "at a path of its own, or move this file away"
            ) from exc
        raise StoreUnavailable(f"{WHAT} {where.path}: {exc}") from exc


def _not_a_database(exc: Exception) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or "not a database" in str(exc)


def _content_problem(where: FileLocation, found: Found | None, site: str | None) -> str | None:
    if found is None:
        return None
    if found.version > schema.SCHEMA_VERSION:
        return (
            f"{where.shown} has schema version {found.version}, newer than this mailqueue "
            f"understands ({schema.SCHEMA_VERSION}). Fix: upgrade mailqueue on this machine"
        )
    if not found.version and found.tables and site is None:
        shown = ", ".join(found.tables[:3]) + (", ..." if len(found.tables) > 3 else "")
        return (
            f"{where.shown} is a SQLite database with no mailqueue queue in it (tables: "
            f"{shown}): another program's? Fix: give the queue a path of its own; if it is "
            "the site's own database, set the store option django_database to its alias"
        )
    return None


def _note_relative(where: FileLocation) -> None:
    """Say once per process which file a relative URL path names here."""
    key = (os.getpid(), where.path)
    if where.relative is None or key in _noted:
        return
    _noted.add(key)
    log.warning(
        "sqlite store: the URL gives the relative path %r, so the queue is %s for a process "
        "started in this directory; one started elsewhere (cron, a service) uses another "
        "file. Use sqlite:///%s (four slashes: an absolute path)",
        where.relative,
        where.path,
        where.path,
    )
