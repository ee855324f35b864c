"""The SQLite store's sent log: delivered mail, a row each, in the queue's file.

A row holds what the flusher logged (:class:`~mailqueue_core.store.SentRecord`):
recipients as a JSON array, ``data`` empty unless bodies are kept. Pages,
counts and prunes go through the unique ``(namespace, sent, id)`` index, which
also keeps a record logged twice (the same id and send time) once. A page
seeks past its cursor, the last listed ``(sent, id)`` (made by
:func:`mailqueue_core.cursors.encode_cursor`), and reads its own rows: no
count or scan of what comes before, however long the log.

Rows stay until :meth:`~SQLiteSentLog.prune_sent` deletes them (the flusher
prunes every 10 minutes); they are not dropped at their ``expires`` by
themselves. A row changed by hand never makes a call raise: one whose ``sent``
is not a number is left out of pages and counts, one whose id is not a text is
left out of pages (the index sorts them after every number and every text,
where no cursor could follow them), and the other columns are read as they
can be.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from mailqueue_core.cursors import decode_cursor, encode_cursor
from mailqueue_core.store import Page, SentRecord
from mailqueue_stores.sqlite.browsing import bind
from mailqueue_stores.sqlite.rows import readable, shown_id
from mailqueue_stores.sqlite.schema import SENT_INDEX

__all__ = ["COUNT", "SQLiteSentLog", "statements"]

T = TypeVar("T")

_LOG = (
    "INSERT OR IGNORE INTO mailqueue_sent (namespace, id, sent, recipients, subject,"
    " message_id, transport, provider_id, attempts, created, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    "id, sent, recipients, subject, message_id, transport, provider_id, attempts, created, data"
)
# The rows a cursor can follow: a ``sent`` that is a number (texts and blobs
# sort after them) and an id that is a text (a blob sorts after every text).
_NUMBERS = "sent < ''"
_TEXT_ID = "typeof(id) = 'text'"
#: Parameters ``(namespace, since)``; public, as :func:`statements` is. Without
#: the test of the id's type, which would double the cost of a long count.
COUNT = (
    f"SELECT COUNT(*) FROM mailqueue_sent INDEXED BY {SENT_INDEX}"  # noqa: S608 - ours
    f" WHERE namespace = ? AND sent >= ? AND {_NUMBERS}"
)
_PRUNE = "DELETE FROM mailqueue_sent WHERE namespace = ? AND sent < ?"


class _Store(Protocol):
    namespace: str

    def _transaction(
        self, begin: str = "BEGIN IMMEDIATE"
    ) -> AbstractContextManager[sqlite3.Connection]: ...

    def _drain(self, body: Callable[[sqlite3.Connection], T]) -> T: ...


def statements(
    namespace: str, after: tuple[float, str] | None, newest_first: bool
) -> tuple[str, list[object]]:
    """The query for a page after ``after`` (the last listed ``(sent, id)``), with
    its parameters but the LIMIT (the last one). Public so that a test can show
    that it seeks in its index and reads nothing before the cursor."""
    conditions = ["namespace = ?", _TEXT_ID]
    params: list[object] = [namespace]
    if after is not None:
        sent, record_id = after
        mark, value = bind(record_id)
        conditions.append(f"(sent, id) {'<' if newest_first else '>'} (?, {mark})")
        params += [sent, value]
    if after is None or not newest_first:
        # SQLite seeks on one bound a side: going down from a cursor, the cursor
        # is that bound (and, a number, it leaves the texts out by itself).
        conditions.append(_NUMBERS)
    back = " DESC" if newest_first else ""
    sql = (
        f"SELECT {_COLUMNS} FROM mailqueue_sent INDEXED BY {SENT_INDEX}"  # noqa: S608 - ours
        f" WHERE {' AND '.join(conditions)} ORDER BY sent{back}, id{back} LIMIT ?"
    )
    return sql, params


def _text(value: object) -> str | None:
    """A text column as a text, whatever it holds (NULL stays None)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    # TEXT affinity stores a number as a text: a text or NULL is all that is left.
    return None if value is None else readable(str(value))


def _recipients(value: object) -> tuple[str, ...]:
    try:
        found = json.loads(value) if isinstance(value, (str, bytes)) else None
    except ValueError:
        found = None
    if isinstance(found, list) and all(isinstance(r, str) for r in found):
        return tuple(found)
    shown = _text(value)  # what is there, rather than nothing
    return () if shown is None else (shown,)


def read_sent(columns: Sequence[object]) -> SentRecord:
    """A record from a row's columns (``_COLUMNS``), whatever a hand left in them."""
    raw_id, sent, recipients, subject, message_id, transport, provider_id = columns[:7]
    attempts, created, data = columns[7:]
    return SentRecord(
        id=shown_id(raw_id),
        sent=float(sent) if isinstance(sent, (int, float)) else 0.0,
        recipients=_recipients(recipients),
        subject=_text(subject) or "",
        message_id=_text(message_id),
        transport=_text(transport) or "",
        provider_id=_text(provider_id),
        attempts=attempts if type(attempts) is int else 0,
        created=float(created) if isinstance(created, (int, float)) else 0.0,
        data=data if isinstance(data, bytes) else b"",
    )


class SQLiteSentLog:
    """Mixed into :class:`~mailqueue_stores.sqlite.SQLiteStore`."""

    def log_sent(self: _Store, records: Sequence[SentRecord], expires: float) -> None:
        rows = [
            (
                self.namespace,
                r.id,
                r.sent,
                json.dumps(list(r.recipients)),
                r.subject,
                r.message_id,
                r.transport,
                r.provider_id,
                r.attempts,
                r.created,
                r.data,
            )
            for r in records
        ]
        if rows:
            # Not a drain: new rows must not take the reserve kept for delivery.
            with self._transaction() as conn:
                conn.executemany(_LOG, rows)

    def sent_log(
        self: _Store,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page[SentRecord]:
        if limit < 1:
            raise ValueError(f"sqlite store: a page holds at least one record, not {limit}")
        after = None if cursor is None else decode_cursor(cursor)
        sql, params = statements(self.namespace, after, newest_first)
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        entries = [read_sent(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return Page(entries)
        raw_id, sent = rows[limit - 1][:2]
        # The id as SQLite holds it (not as shown), so that the next page seeks past it.
        return Page(entries, encode_cursor(sent, raw_id))

    def count_sent(self: _Store, since: float) -> int:
        with self._transaction("BEGIN") as conn:
            (found,) = conn.execute(COUNT, (self.namespace, since)).fetchone()
        return int(found)

    def prune_sent(self: _Store, sent_before: float) -> int:
        # A drain: deleting is what frees a full disk.
        return self._drain(
            lambda conn: conn.execute(_PRUNE, (self.namespace, sent_before)).rowcount
        )
