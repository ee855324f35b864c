"""The SQLite store's wake-ups: a counter per namespace, watched by a waiting flusher.

Every call that can make mail due now (``enqueue``, ``requeue``, ``release``,
``revive``, ``send_now``) adds one to its namespace's row of ``mailqueue_wakes``
in its own transaction: the count changes when that mail is committed, and
never for a transaction that rolls back (an enqueue made in the site's
transaction wakes the flushers at the site's commit). A claim reads the count
in its transaction; :meth:`~SQLiteWakeUps.wait_for_mail` reads it every
:data:`POLL` seconds and returns True as soon as it differs from the count
this store object saw last, so a commit made between a claim and the wait
that follows is not missed, and each change is answered once.

SQLite tells no one of a commit, so a waiting flusher polls, on its own
connection (never the site's, with ``django_database``): every :data:`POLL`
seconds it reads ``PRAGMA data_version``, which changes when another
connection committed, and reads the count only then. The count keeps the
wake-ups precise: acks, heartbeats, the sent log and other namespaces commit
too, and wake no one. The version misses the commits of its own connection,
so the count is also read when a wait takes its connection. A wait holds
its connection for :data:`HOLD` seconds at most, then takes it again: that is
when the files are compared (a replaced file is noticed, as by any call: see
:mod:`~mailqueue_stores.sqlite.connections`), and what a fork in another
thread waits for at most. Per poll: 3 microseconds of CPU when the process is
busy, about 80 after a sleep on the loaded test machine (cold caches), where
taking the connection and reading the count each time cost twice that.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["HOLD", "POLL", "WAKE", "SQLiteWakeUps", "read_wakes", "wake"]

#: Seconds between two polls of a waiting flusher: the most a wake-up waits to
#: be seen. 200 polls a second cost 2.6% of a core on the loaded test machine,
#: half of it the cost of waking a sleeping thread there at all; every 2 ms
#: cost 3.5% for no latency its noise could tell apart.
POLL = 0.005

#: The longest a wait holds its connection (see the module's docstring).
HOLD = 0.05

#: Parameters ``(namespace, namespace)``. A count starts at a random number,
#: so that a waiting flusher whose queue file was replaced by a new one (whose
#: count would otherwise start again at 1) does not take the new file's count
#: for the one it saw last. Portable to SQLite before 3.24 (no upsert); the
#: table has no trigger or reference that a replace would fire.
WAKE = (
    "INSERT OR REPLACE INTO mailqueue_wakes (namespace, wakes) VALUES (?,"
    " COALESCE((SELECT wakes FROM mailqueue_wakes WHERE namespace = ?), random() / 2) + 1)"
)
_COUNT = "SELECT wakes FROM mailqueue_wakes WHERE namespace = ?"


def wake(conn: sqlite3.Connection, namespace: str) -> None:
    """Wake the flushers of ``namespace`` when the transaction of ``conn`` commits."""
    conn.execute(WAKE, (namespace, namespace))


def read_wakes(conn: sqlite3.Connection, namespace: str) -> Any:
    """The namespace's count of wake-ups (compared, never computed with: a value
    changed by hand into a text is as good as a number)."""
    row = conn.execute(_COUNT, (namespace,)).fetchone()
    return 0 if row is None else row[0]


class _Store(Protocol):
    namespace: str
    _seen_wakes: Any

    def _connection(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SQLiteWakeUps:
    """Mixed into :class:`~mailqueue_stores.sqlite.SQLiteStore`."""

    def wait_for_mail(self: _Store, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._connection() as conn:
                woken = _watch(self, conn, min(deadline, time.monotonic() + HOLD))
            if woken or time.monotonic() >= deadline:
                return woken


def _watch(store: _Store, conn: sqlite3.Connection, until: float) -> bool:
    """Whether the count changed before ``until`` (monotonic), polling ``conn``."""
    # Starts unknown: the commits of this connection (made before the wait
    # began, by this thread) do not change the version it reads.
    version = None
    while True:
        (now,) = conn.execute("PRAGMA data_version").fetchone()
        if now != version:
            version = now
            count = read_wakes(conn, store.namespace)
            if store._seen_wakes is None:
                store._seen_wakes = count  # no claim yet: what comes from now on wakes
            elif count != store._seen_wakes:
                store._seen_wakes = count  # answered once
                return True
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL, left))
