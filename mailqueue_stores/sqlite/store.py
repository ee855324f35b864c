"""The SQLite store itself: the contract over a pool of connections to one file.

Every ``sqlite3`` error of a call is translated here, in :meth:`SQLiteStore._transaction`;
the pieces it stands on live beside it (see :mod:`mailqueue_stores.sqlite`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from mailqueue_core.errors import LeaseLost, StoreUnavailable
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_core.text import get_logger
from mailqueue_stores.sqlite import schema as sql
from mailqueue_stores.sqlite.connections import ConnectionPool
from mailqueue_stores.sqlite.console import SQLiteConsole
from mailqueue_stores.sqlite.counting import read_stats
from mailqueue_stores.sqlite.files import create_lock, create_private, warn_if_open_to_others
from mailqueue_stores.sqlite.options import WHAT, SQLiteOptions, read
from mailqueue_stores.sqlite.rate_limits import SQLiteLimits
from mailqueue_stores.sqlite.rows import (
    Row,
    decode_text,
    new_id,
    read_dead,
    read_record,
    readable,
    usable_id,
)
from mailqueue_stores.sqlite.sent_log import SQLiteSentLog
from mailqueue_stores.sqlite.site_transaction import enqueue_in_site_transaction
from mailqueue_stores.sqlite.space import Reserve, give_back, out_of_space, truncate_wal
from mailqueue_stores.sqlite.verify import diagnose, no_queue, uri, verify_queue
from mailqueue_stores.sqlite.wake_ups import SQLiteWakeUps, read_wakes, wake

__all__ = ["SQLiteStore"]

T = TypeVar("T")

log = get_logger("mailqueue.stores.sqlite")

# After a burst the -wal is cut back to this at its next reuse, giving the
# space back; normal traffic keeps it near 4 MB (SQLite's 1,000-page checkpoint).
JOURNAL_SIZE_LIMIT = 16 << 20
# Always in ``options``, so that a twin never depends on the defaults of another release.
_ALWAYS_SHOWN = ("timeout", "synchronous")


class SQLiteStore(SQLiteConsole, SQLiteSentLog, SQLiteLimits, SQLiteWakeUps, Store):
    """A queue in one SQLite file (see :mod:`mailqueue_stores.sqlite`)."""

    capabilities = frozenset(
        {
            Capability.SHARED,
            Capability.DURABLE,
            Capability.RATE_LIMIT,
            Capability.LOCAL,
            Capability.BROWSE,
            Capability.PAUSE,
            Capability.HEARTBEAT,
            Capability.SENT_LOG,
            Capability.WAKE,
        }
    )

    def __init__(self, location: str, **options: object) -> None:
        where, namespace, declared = read(location, options)
        super().__init__(location, namespace=namespace)
        self._where = where
        self.path = where.path
        self.timeout = declared.timeout
        self.synchronous = declared.synchronous
        self.mode = declared.mode
        self.django_database = declared.django_database
        self.create = declared.create
        #: What ``store_factory`` (and anyone) needs to build a twin of this store.
        self.options = _twin_options(declared)
        self._reserve = Reserve(where.path, declared.reserve, declared.mode)
        self._pool = ConnectionPool(self._connect, where.path)
        # The count of wake-ups seen by the last claim or wait (see wake_ups).
        self._seen_wakes: object = None

    def without_creating(self) -> SQLiteStore:
        """This store, opening an existing queue only (``create=false``).

        For the commands that only read or repair (``status``, ``dead``,
        ``retry``, ``purge``) and monitors: a path with no queue raises
        :class:`~mailqueue_core.errors.StoreUnavailable` naming it, instead of
        creating an empty queue that looks healthy.
        """
        options = {**self.options, "create": False}
        return type(self)(self.location, namespace=self.namespace, **options)

    def verify(self) -> None:
        """Whether this process can open and write the queue file, without creating it.

        A missing directory, a directory or file this user cannot write, a file
        that is not a SQLite queue (or a newer release's) raise
        :class:`~mailqueue_core.errors.ConfigurationError` naming the path and
        ending in ``Fix: <command>``; a lock held past ``timeout``, or no queue
        at the path with ``create=false``, raise ``StoreUnavailable``. With a
        relative URL path it logs once per process which file that is.
        """
        verify_queue(
            self._where,
            mode=self.mode,
            timeout=self.timeout,
            site_database=self.django_database,
            create=self.create,
        )

    def __repr__(self) -> str:
        return f"<SQLiteStore path={self.path!r} namespace={self.namespace!r}>"

    # -- connections and the one place where sqlite3 errors are translated -----

    def _connect(self) -> sqlite3.Connection:
        conn = self._open_file()
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        warn_if_open_to_others(self.path)
        if self.create:
            self._reserve.ensure()
        return conn

    def _open_file(self) -> sqlite3.Connection:
        if self.create:
            create_private(self.path, self.mode)
        elif not os.path.exists(self.path):
            raise no_queue(self._where, "no such file")
        with create_lock:
            conn = sqlite3.connect(
                uri(self.path, create=self.create),
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,  # the pool lends it to one thread at a time
            )
        conn.text_factory = decode_text
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        if not self.create and sql.schema_version(conn) == 0:
            raise no_queue(self._where, "no queue tables in it")
        # A new, empty file only (see the space module); on any other it would
        # write, and a full disk refuses writes.
        if conn.execute("PRAGMA page_count").fetchone() == (0,):
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        sql.enable_wal(conn, self.timeout)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        sql.ensure_schema(conn, self.path)

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction that commits when the block ends and rolls back when it raises."""
        with self._connection() as conn:
            conn.execute(begin)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in autocommit mode, for the block."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except StoreUnavailable:
            raise  # said already (a ConnectionError, so an OSError too)
        except (sqlite3.Error, OSError) as exc:
            # Only once a call failed: a few stat calls say what to fix, if it is the files.
            fix = diagnose(self._where, self.mode)
            raise StoreUnavailable(
                f"{WHAT} {self.path}: {exc}" + (f"; {fix}" if fix else "")
            ) from exc

    def _drain(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a write transaction that a full disk does not stop.

        For the calls that drain the queue: when the disk is full, give up the
        reserve, give the ``-wal``'s space back, and try once more.
        """
        try:
            with self._transaction() as conn:
                return body(conn)
        except StoreUnavailable as exc:
            if not out_of_space(exc.__cause__):
                raise
            room = self._reserve.give_up()
            with contextlib.suppress(sqlite3.Error, OSError), self._pool.connection() as conn:
                room = truncate_wal(conn) or room
            if not room:
                raise
        with self._transaction() as conn:
            return body(conn)

    def _make_room(self) -> None:
        """While the reserve is missing: give drained space back, then make the reserve."""
        with contextlib.suppress(sqlite3.Error, OSError), self._pool.connection() as conn:
            give_back(conn, 2 * self._reserve.size)
        self._reserve.ensure()

    def close(self) -> None:
        self._pool.close()

    # -- the contract -----------------------------------------------------------

    def enqueue(self, records: Sequence[Record]) -> None:
        ns = self.namespace
        rows = [
            (ns, r.id, r.due, r.due, r.created, r.attempts, r.last_error, r.data, ns, r.id)
            for r in records
        ]
        if rows and self.django_database is not None:
            enqueue_in_site_transaction(self.django_database, self.path, ns, rows)
        elif rows:
            with self._transaction() as conn:
                conn.executemany(sql.ENQUEUE, rows)
                wake(conn, ns)

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        if limit <= 0:
            return []
        claims = self._drain(lambda conn: self._claim(conn, now, limit, now + lease))
        if self._reserve.short:
            self._make_room()
        return claims

    def _claim(
        self, conn: sqlite3.Connection, now: float, limit: int, expires: float
    ) -> list[Claim]:
        # Read under the write lock: what is queued after this claim wakes the next wait.
        self._seen_wakes = read_wakes(conn, self.namespace)
        # Rows whose due is not a number first: they are rare, and the claim
        # below would never reach them.
        rows = conn.execute(sql.CLAIM_UNTIMED, (self.namespace, limit)).fetchall()
        if len(rows) < limit:
            rows += conn.execute(sql.CLAIM, (self.namespace, now, limit - len(rows))).fetchall()
        claims, takes = [], []
        for rowid, raw_id, due, created, attempts, error, data in rows:
            mid = usable_id(raw_id)
            if mid is None:
                mid = new_id()
                log.warning(
                    "sqlite store %s: a queued message had an unusable id (%s); it is now %s",
                    self.path,
                    readable(raw_id) if isinstance(raw_id, str) else repr(raw_id),
                    mid,
                )
            record = read_record(Row(mid, due, created, attempts, error, data), now)
            token = uuid.uuid4().hex
            claims.append(Claim(record, token, expires))
            takes.append((expires, token, mid, rowid))
        conn.executemany(sql.TAKE, takes)
        return claims

    def _held(self, conn: sqlite3.Connection, statement: str, claim: Claim, *args: object) -> None:
        cursor = conn.execute(statement, (*args, self.namespace, claim.id, claim.token))
        if cursor.rowcount != 1:
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")

    def _back(self, conn: sqlite3.Connection, statement: str, claim: Claim, *args: object) -> None:
        """:meth:`_held`, for a message that goes back to the queue (and may be due now)."""
        self._held(conn, statement, claim, *args)
        wake(conn, self.namespace)

    def ack(self, claim: Claim) -> None:
        self._drain(lambda conn: self._held(conn, sql.ACK, claim))

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        self._drain(lambda conn: self._back(conn, sql.REQUEUE, claim, due, due, error))

    def release(self, claim: Claim) -> None:
        self._drain(lambda conn: self._back(conn, sql.RELEASE, claim))

    def bury(self, claim: Claim, error: str, now: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute(sql.HELD, (self.namespace, claim.id, claim.token)).fetchone()
            if row is None:
                raise LeaseLost(f"message {claim.id} is no longer held by this claim")
            rowid, due, created, attempts, last_error, data = row
            # Read as a claim reads it, so that a damaged row is buried whole
            # with placeholders where it could not be read.
            record = read_record(Row(claim.id, due, created, attempts, last_error, data), now)
            conn.execute(sql.DELETE_ROW, (rowid,))
            conn.execute(
                sql.ADD_DEAD,
                (
                    self.namespace,
                    claim.id,
                    now,
                    error,
                    record.created,
                    record.due,
                    record.attempts + 1,  # the attempt that buried it counts
                    error,
                    record.data,
                ),
            )

        self._drain(body)

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        ns = self.namespace
        rows = [
            (ns, r.id, now, r.last_error or "", r.created, r.due, r.attempts, r.last_error, r.data)
            for r in records
        ]
        if rows:
            with self._transaction() as conn:
                conn.executemany(sql.ADD_DEAD, rows)

    def stats(self, now: float) -> Stats:
        with self._transaction("BEGIN") as conn:
            return read_stats(conn, self.namespace, now)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                sql.DEAD_LETTERS, (self.namespace, -1 if limit is None else limit)
            ).fetchall()
        return [DeadLetter(*read_dead(row, 0.0)) for row in rows]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        wanted = None if ids is None else list(dict.fromkeys(ids))
        revived = 0
        with self._transaction() as conn:
            if wanted is None:
                wanted = [mid for (mid,) in conn.execute(sql.DEAD_IDS, (self.namespace,))]
            for mid in wanted:
                if conn.execute(sql.REVIVE, (now, now, now, self.namespace, mid)).rowcount:
                    conn.execute(sql.DELETE_DEAD, (self.namespace, mid))
                    revived += 1
            if revived:
                wake(conn, self.namespace)
        return revived

    def purge(self, buried_before: float) -> int:
        with self._transaction() as conn:
            return conn.execute(sql.PURGE, (self.namespace, buried_before)).rowcount


def _twin_options(declared: SQLiteOptions) -> dict[str, object]:
    """The options that differ from the defaults, and the ones always shown."""
    defaults = SQLiteOptions()
    return {
        field.name: getattr(declared, field.name)
        for field in dataclasses.fields(declared)
        if field.name in _ALWAYS_SHOWN
        or getattr(declared, field.name) != getattr(defaults, field.name)
    }
