"""The SQLite store's file: WAL set-up, tables and statements (connections live apart).

Live messages and dead letters sit in two tables keyed on ``(namespace, id)``.
In the live table, ``due`` is the next time a message can be claimed: its due
time while it waits, its lease expiry while it is claimed. So one
``(namespace, due)`` index finds both due messages and expired leases, and a
claim reads ``limit`` index entries however deep the queue is. ``record_due``
keeps the due time that the claim's record reports and that a release restores.
Small columns come first and ``data`` last, so that reading the state of a row
never walks the overflow pages of a large message.

The console lists each state in ``(due, id)`` order: two partial indexes on
``(namespace, due, id)``, one over the waiting rows (ready and scheduled) and
one over the claimed rows (in flight and stuck), so that a page reads only its
own entries and listing the few claimed rows never walks the deep scheduled
ones. Dead letters are listed by their ``(namespace, buried, id)`` index.
:meth:`~mailqueue_stores.sqlite.SQLiteStore.stats` reads indexes only (see
:mod:`~mailqueue_stores.sqlite.counting`); for the age of the oldest ready
message, a third partial index orders the waiting rows by ``created``.

The sent log (:mod:`~mailqueue_stores.sqlite.sent_log`) is a table of its own,
listed, counted and pruned through its unique ``(namespace, sent, id)`` index;
the flushers' heartbeats are a small table keyed on ``(namespace, flusher)``,
and the wake-ups (:mod:`~mailqueue_stores.sqlite.wake_ups`) a counter per
namespace.

Indexes and tables added to a released schema (the three indexes, the sent
log, the heartbeats and the wake-ups) do not change the schema version: a
release that does not know an index still keeps it up to date (SQLite does, on
every write), and one that does not know a table leaves it alone, while a newer
version would make that release refuse the file, so a rollback would stop the
queue.
:func:`ensure_schema` adds the missing ones under the write lock.
"""

from __future__ import annotations

import sqlite3
import time

from mailqueue_core.errors import ConfigurationError

__all__ = [
    "ADDED",
    "CLAIM",
    "CLAIM_UNTIMED",
    "CREATED_INDEX",
    "HELD_INDEX",
    "SCHEMA_VERSION",
    "SENT_INDEX",
    "WAITING_INDEX",
    "enable_wal",
    "ensure_schema",
    "schema_version",
]

SCHEMA_VERSION = 2  # 2: rate-limit buckets and connection slots
_SQLITE_BUSY = 5  # sqlite3.SQLITE_BUSY from Python 3.11
WAITING_INDEX = "mailqueue_queue_waiting"
HELD_INDEX = "mailqueue_queue_held"
CREATED_INDEX = "mailqueue_queue_created"
SENT_INDEX = "mailqueue_sent_time"

DDL = (
    """CREATE TABLE IF NOT EXISTS mailqueue_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS mailqueue_queue (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        due REAL NOT NULL,
        record_due REAL NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL,
        token TEXT,
        last_error TEXT,
        data BLOB NOT NULL,
        PRIMARY KEY (namespace, id)
    )""",
    "CREATE INDEX IF NOT EXISTS mailqueue_queue_due ON mailqueue_queue (namespace, due)",
    f"CREATE INDEX IF NOT EXISTS {WAITING_INDEX} ON mailqueue_queue (namespace, due, id)"
    " WHERE token IS NULL",
    f"CREATE INDEX IF NOT EXISTS {HELD_INDEX} ON mailqueue_queue (namespace, due, id)"
    " WHERE token IS NOT NULL",
    # ``due`` is in it so that finding the oldest ready row never reads the table.
    f"CREATE INDEX IF NOT EXISTS {CREATED_INDEX} ON mailqueue_queue (namespace, created, due)"
    " WHERE token IS NULL",
    """CREATE TABLE IF NOT EXISTS mailqueue_dead (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        buried REAL NOT NULL,
        reason TEXT NOT NULL,
        created REAL NOT NULL,
        due REAL NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT,
        data BLOB NOT NULL,
        PRIMARY KEY (namespace, id)
    )""",
    "CREATE INDEX IF NOT EXISTS mailqueue_dead_buried ON mailqueue_dead (namespace, buried, id)",
    """CREATE TABLE IF NOT EXISTS mailqueue_buckets (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        tokens REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (namespace, name)
    )""",
    """CREATE TABLE IF NOT EXISTS mailqueue_slots (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        token TEXT NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (namespace, name, token)
    )""",
    # ``recipients`` is a JSON array; ``data`` is empty unless bodies are kept.
    """CREATE TABLE IF NOT EXISTS mailqueue_sent (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        sent REAL NOT NULL,
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_id TEXT,
        transport TEXT NOT NULL,
        provider_id TEXT,
        attempts INTEGER NOT NULL,
        created REAL NOT NULL,
        data BLOB NOT NULL
    )""",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {SENT_INDEX} ON mailqueue_sent (namespace, sent, id)",
    """CREATE TABLE IF NOT EXISTS mailqueue_beats (
        namespace TEXT NOT NULL,
        flusher TEXT NOT NULL,
        seen REAL NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (namespace, flusher)
    )""",
    """CREATE TABLE IF NOT EXISTS mailqueue_wakes (
        namespace TEXT PRIMARY KEY,
        wakes INTEGER NOT NULL
    )""",
)

SET_VERSION_IF_MISSING = (
    "INSERT OR IGNORE INTO mailqueue_meta (key, value) VALUES ('schema_version', ?)"
)
_VERSION_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mailqueue_meta'"
_VERSION = "SELECT value FROM mailqueue_meta WHERE key = 'schema_version'"
#: What was added to the schema after its version was released (tables and
#: indexes share one namespace of names in SQLite).
ADDED = (
    WAITING_INDEX,
    HELD_INDEX,
    CREATED_INDEX,
    "mailqueue_sent",
    SENT_INDEX,
    "mailqueue_beats",
    "mailqueue_wakes",
)
_ADDED_MARKS = ", ".join("?" * len(ADDED))
_ADDED_FOUND = f"SELECT COUNT(*) FROM sqlite_master WHERE name IN ({_ADDED_MARKS})"  # noqa: S608
TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"

#: The claim query: parameters ``(namespace, now, limit)``. Public so that a
#: test can show its query plan reads the index, not the table.
CLAIM = (
    "SELECT rowid, id, record_due, created, attempts, last_error, data FROM mailqueue_queue"
    " WHERE namespace = ? AND due <= ? ORDER BY due, rowid LIMIT ?"
)
#: Rows whose ``due`` is a text or a blob (written by hand): SQLite sorts them
#: after every number, so ``due <= now`` never finds them; this finds them at
#: the end of the same index. Parameters ``(namespace, limit)``.
CLAIM_UNTIMED = (
    "SELECT rowid, id, record_due, created, attempts, last_error, data FROM mailqueue_queue"
    " WHERE namespace = ? AND due >= '' ORDER BY due, rowid LIMIT ?"
)
# By rowid: the row was just read in the same transaction. An id that could
# not address its row again (not clean text) is replaced at the same time.
TAKE = "UPDATE mailqueue_queue SET due = ?, token = ?, id = ? WHERE rowid = ?"

ENQUEUE = (
    "INSERT OR IGNORE INTO mailqueue_queue"
    " (namespace, id, due, record_due, created, attempts, last_error, data)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM mailqueue_dead WHERE namespace = ? AND id = ?)"
)
ACK = "DELETE FROM mailqueue_queue WHERE namespace = ? AND id = ? AND token = ?"
REQUEUE = (
    "UPDATE mailqueue_queue SET due = ?, record_due = ?, attempts = attempts + 1,"
    " last_error = ?, token = NULL WHERE namespace = ? AND id = ? AND token = ?"
)
RELEASE = (
    "UPDATE mailqueue_queue SET due = record_due, token = NULL"
    " WHERE namespace = ? AND id = ? AND token = ?"
)
HELD = (
    "SELECT rowid, record_due, created, attempts, last_error, data FROM mailqueue_queue"
    " WHERE namespace = ? AND id = ? AND token = ?"
)
DELETE_ROW = "DELETE FROM mailqueue_queue WHERE rowid = ?"
ADD_DEAD = (
    "INSERT OR REPLACE INTO mailqueue_dead"
    " (namespace, id, buried, reason, created, due, attempts, last_error, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DEAD_LETTERS = (
    "SELECT id, buried, reason, created, due, attempts, last_error, data FROM mailqueue_dead"
    " WHERE namespace = ? ORDER BY buried, id LIMIT ?"
)
DEAD_IDS = "SELECT id FROM mailqueue_dead WHERE namespace = ? ORDER BY buried, id"
# A dead letter whose id is live again (add_dead of a live id) stays dead:
# reviving it must not overwrite the live message.
REVIVE = (
    "INSERT OR IGNORE INTO mailqueue_queue"
    " (namespace, id, due, record_due, created, attempts, last_error, data)"
    " SELECT namespace, id, ?, ?, ?, 0, last_error, data"
    " FROM mailqueue_dead WHERE namespace = ? AND id = ?"
)
DELETE_DEAD = "DELETE FROM mailqueue_dead WHERE namespace = ? AND id = ?"
PURGE = "DELETE FROM mailqueue_dead WHERE namespace = ? AND buried < ?"


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file; 0 when it holds no queue."""
    if conn.execute(_VERSION_TABLE).fetchone() is None:
        return 0
    row = conn.execute(_VERSION).fetchone()
    return 0 if row is None else int(row[0])


def _complete(conn: sqlite3.Connection) -> bool:
    """Whether the file holds every table and index added since its version was released."""
    (found,) = conn.execute(_ADDED_FOUND, ADDED).fetchone()
    return bool(found == len(ADDED))


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code == _SQLITE_BUSY if code is not None else "locked" in str(exc)


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode (a no-op once it is), waiting up to ``timeout`` for a lock.

    SQLite does not call the busy handler when several connections switch a
    new file to WAL at once: the losers get SQLITE_BUSY at once. So they wait
    here, as the busy timeout would have made them wait.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
            continue
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode!r})")
        return


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables and indexes that are missing; refuse a schema from a newer release.

    ``conn`` is in autocommit mode. Creation runs under ``BEGIN IMMEDIATE`` and
    looks again once it holds the write lock, so processes that race to create
    or upgrade the schema take turns and the later ones find it done. Indexing
    a deep queue holds the write lock meanwhile (the console's two indexes:
    2.8 s for a million messages, measured; the ``created`` one: 1.9 s): other
    processes wait for it as for any write, up to ``timeout``.
    """
    version = schema_version(conn)
    if version == SCHEMA_VERSION and _complete(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"sqlite store {path} has schema version {version}, newer than this"
                f" mailqueue understands ({SCHEMA_VERSION}): upgrade mailqueue"
            )
        if version < SCHEMA_VERSION or not _complete(conn):
            for statement in DDL:
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO mailqueue_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
