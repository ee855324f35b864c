"""The console's part of the SQLite store: browse, single-record actions, the pause
flag, the flushers' heartbeats.

Pages come from :mod:`~mailqueue_stores.sqlite.browsing`. Every call uses the
store's own connections, also when ``django_database`` names the site's
connection for enqueues: an operator's action is not part of a request's
transaction. The pause flag of a namespace is a row of ``mailqueue_meta``, in
the same file as the queue, so every flusher of the machine sees it and it
lasts as the queue does. A heartbeat is a row of ``mailqueue_beats`` per
namespace and flusher name; each beat also deletes the namespace's notes that
expired, so the table holds about one row per flusher seen within a note's
lifetime (a day, for the flusher).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from mailqueue_core.store import Entry, Page, State
from mailqueue_stores.sqlite.browsing import Position, live_state, read_entry, read_page
from mailqueue_stores.sqlite.rows import shown_id
from mailqueue_stores.sqlite.wake_ups import wake

__all__ = ["SQLiteConsole"]

T = TypeVar("T")

_LIVE = (
    "SELECT id, due, record_due, created, attempts, last_error, data, token IS NOT NULL"
    " FROM mailqueue_queue WHERE namespace = ? AND id = ?"
)
_DEAD = (
    "SELECT id, buried, reason, created, due, attempts, last_error, data"
    " FROM mailqueue_dead WHERE namespace = ? AND id = ?"
)
# In flight: claimed, and the lease (``due``, a number) runs past ``now``.
_DELETE_LIVE = (
    "DELETE FROM mailqueue_queue WHERE namespace = ? AND id = ? AND NOT (token IS NOT NULL"
    " AND typeof(due) IN ('integer', 'real') AND due > ?)"
)
_DELETE_DEAD = "DELETE FROM mailqueue_dead WHERE namespace = ? AND id = ?"
# Waiting and not yet due; a ``due`` that is not a number counts as due already.
_SEND_NOW = (
    "UPDATE mailqueue_queue SET due = :now, record_due = :now"
    " WHERE namespace = :namespace AND id = :id AND token IS NULL"
    " AND typeof(due) IN ('integer', 'real') AND due > :now"
)
_PAUSED = "SELECT 1 FROM mailqueue_meta WHERE key = ?"
_PAUSE = "INSERT OR REPLACE INTO mailqueue_meta (key, value) VALUES (?, '1')"
_RESUME = "DELETE FROM mailqueue_meta WHERE key = ?"
_BEAT = (
    "INSERT OR REPLACE INTO mailqueue_beats (namespace, flusher, seen, expires)"
    " VALUES (?, ?, ?, ?)"
)
_FORGET = "DELETE FROM mailqueue_beats WHERE namespace = ? AND expires <= ?"
_BEATS = "SELECT flusher, seen FROM mailqueue_beats WHERE namespace = ? AND expires > ?"


class _Store(Protocol):
    namespace: str

    def _transaction(
        self, begin: str = "BEGIN IMMEDIATE"
    ) -> AbstractContextManager[sqlite3.Connection]: ...

    def _drain(self, body: Callable[[sqlite3.Connection], T]) -> T: ...


def _pause_key(namespace: str) -> str:
    return f"paused:{namespace}"


class SQLiteConsole:
    """Mixed into :class:`~mailqueue_stores.sqlite.SQLiteStore`."""

    def browse(
        self: _Store,
        state: State,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page:
        state = State(state)
        if limit < 1:
            raise ValueError(f"sqlite store: a page holds at least one record, not {limit}")
        after = None if cursor is None else Position.decode(cursor, state)
        # One read transaction: the ranges of a page are read from one snapshot.
        with self._transaction("BEGIN") as conn:
            return read_page(
                conn,
                self.namespace,
                state,
                now,
                limit=limit,
                after=after,
                newest_first=newest_first,
            )

    def get(self: _Store, record_id: str, now: float) -> Entry | None:
        with self._transaction("BEGIN") as conn:
            live = conn.execute(_LIVE, (self.namespace, record_id)).fetchone()
            if live is not None:
                *columns, held = live
                return read_entry(live_state(bool(held), columns[1], now), columns, now)
            dead = conn.execute(_DEAD, (self.namespace, record_id)).fetchone()
        return None if dead is None else read_entry(State.DEAD, dead, now)

    def delete(self: _Store, ids: Iterable[str], now: float) -> int:
        wanted = list(dict.fromkeys(ids))

        # A drain: deleting mail is what frees a full disk.
        def body(conn: sqlite3.Connection) -> int:
            deleted = 0
            for mid in wanted:
                live = conn.execute(_DELETE_LIVE, (self.namespace, mid, now)).rowcount
                dead = conn.execute(_DELETE_DEAD, (self.namespace, mid)).rowcount
                deleted += bool(live or dead)
            return deleted

        return self._drain(body)

    def send_now(self: _Store, ids: Iterable[str], now: float) -> int:
        changed = 0
        with self._transaction() as conn:
            for mid in dict.fromkeys(ids):
                params = {"now": now, "namespace": self.namespace, "id": mid}
                changed += conn.execute(_SEND_NOW, params).rowcount
            if changed:
                wake(conn, self.namespace)
        return changed

    def paused(self: _Store) -> bool:
        with self._transaction("BEGIN") as conn:
            return conn.execute(_PAUSED, (_pause_key(self.namespace),)).fetchone() is not None

    def set_paused(self: _Store, paused: bool) -> None:
        with self._transaction() as conn:
            conn.execute(_PAUSE if paused else _RESUME, (_pause_key(self.namespace),))

    def beat(self: _Store, flusher: str, now: float, expires: float) -> None:
        with self._transaction() as conn:
            conn.execute(_BEAT, (self.namespace, flusher, now, expires))
            conn.execute(_FORGET, (self.namespace, now))

    def beats(self: _Store, now: float) -> dict[str, float]:
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(_BEATS, (self.namespace, now)).fetchall()
        # A time changed by hand into a text is no time: that note is left out.
        return {shown_id(name): seen for name, seen in rows if isinstance(seen, (int, float))}
