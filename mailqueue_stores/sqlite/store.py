"""SQLite store: the embedded default, one file shared by the processes of one machine.

What it is
    A queue in one SQLite database file in WAL mode. Web processes enqueue
    and any number of flusher processes and threads on the same machine claim
    from it; claims take SQLite's write lock (``BEGIN IMMEDIATE``), so
    concurrent flushers get disjoint messages. The schema is created on first
    use. Each thread of each process has its own connection, reopened after a
    fork. The cost of a claim does not grow with the depth of the queue.

URL format
    As SQLAlchemy and dj-database-url read them: ``sqlite:////var/spool/mq.db``
    (four slashes) is an absolute path, ``sqlite:///spool/mq.db`` (three) is
    relative to the working directory when the store is built. Options may also
    be given in the query string: ``sqlite:////var/spool/mq.db?namespace=shop``;
    keyword options win over the query string.

Options
    ``namespace`` (str, ``"default"``): queues in one file that never see
    each other.
    ``timeout`` (float, ``10``): seconds to wait for another connection's
    write lock before the call raises ``StoreUnavailable``.
    ``synchronous`` (str, ``"FULL"``): ``"FULL"`` syncs the WAL to disk at
    every commit; ``"NORMAL"`` syncs only at checkpoints, faster, and still
    safe against a crash of any process.
    ``django_database`` (str, none): the alias of the site's own SQLite
    database when the queue lives in that same file: enqueues then go through
    Django's connection and so join the request's transaction (stored at its
    commit, never after a rollback, nothing lost in between). Needs Django
    configured with that alias pointing at the store's file.
    ``mode`` (int or octal text, ``0o600``): the permissions of the queue file
    and its ``-wal``, ``-shm`` and ``-reserve`` companions when the store
    creates them, whatever the umask; ``0o660`` lets a group share the queue
    (a web server and a flusher running as two users). Access for others is
    refused: queued mail holds password-reset links and the like.
    ``reserve`` (int, bytes, ``8388608``): the size of ``<file>-reserve``,
    room kept so that flushers can claim and ack on a full disk; ``0``: none.

Capabilities and what it can lose
    ``shared`` (between processes of one machine; not over a network
    filesystem, where SQLite's locks do not hold), ``durable`` and
    ``rate_limit`` (buckets and slots in the same file). With
    ``synchronous=FULL`` a message is on disk when ``enqueue`` returns and
    survives a crash of the process or of the machine. With ``NORMAL`` the
    last commits before a power cut or an operating-system crash may be lost
    (a message enqueued, or one acked and then sent again); the file stays
    consistent. Losing the file, its ``-wal`` companion or the disk loses the
    queue. On a full disk ``enqueue`` raises ``StoreUnavailable`` (the
    fallback store takes new mail) while claims and acks go on, using the
    reserve (:mod:`~mailqueue_stores.sqlite_space`). A queue file deleted or
    replaced while processes have it open is noticed before their next call,
    which uses the file now at the path (:mod:`~mailqueue_stores.sqlite_files`).
    A row damaged by hand is claimed with ``damage`` set and buried
    (:mod:`~mailqueue_stores.sqlite_rows`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from mailqueue_core.errors import ConfigurationError, LeaseLost, StoreUnavailable
from mailqueue_core.locations import redact
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_core.text import get_logger
from mailqueue_stores import sqlite_schema as sql
from mailqueue_stores.sqlite_connections import ConnectionPool
from mailqueue_stores.sqlite_django import enqueue_in_site_transaction
from mailqueue_stores.sqlite_files import create_lock, create_private, warn_if_open_to_others
from mailqueue_stores.sqlite_limits import SQLiteLimits
from mailqueue_stores.sqlite_rows import Row, decode_text, new_id, read_record, readable, usable_id
from mailqueue_stores.sqlite_space import Reserve, give_back, out_of_space, truncate_wal

__all__ = ["SQLiteStore"]

T = TypeVar("T")

log = get_logger("mailqueue.stores.sqlite")

_SYNCHRONOUS = ("FULL", "NORMAL")
DEFAULT_MODE = 0o600
DEFAULT_RESERVE = 8 << 20
# After a burst the -wal is cut back to this at its next reuse, giving the
# space back; normal traffic keeps it near 4 MB (SQLite's 1,000-page checkpoint).
JOURNAL_SIZE_LIMIT = 16 << 20


def _parse_location(location: str) -> tuple[str, dict[str, str]]:
    """Split a ``sqlite:///`` URL into an absolute file path and its query options."""
    parts = urlsplit(location)
    if parts.scheme != "sqlite":
        raise ConfigurationError(
            f"sqlite store URL must start with 'sqlite:///', got {redact(location)!r}"
        )
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise ConfigurationError(
            f"sqlite store URL {redact(location)!r} names no file: use sqlite:////abs/path.db"
            " (four slashes) or sqlite:///relative/path.db"
        )
    name = unquote(parts.path[1:])
    if name == ":memory:":
        raise ConfigurationError(
            "an in-memory sqlite database is neither shared nor durable: use the memory store"
        )
    query: dict[str, str] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if len(values) > 1:
            raise ConfigurationError(f"sqlite store URL gives {key!r} more than once")
        query[key] = values[0]
    return os.path.abspath(name), query


def _timeout(value: object) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(
            f"sqlite store option 'timeout' must be seconds >= 0, got {value!r}"
        )
    return seconds


def _synchronous(value: object) -> str:
    if isinstance(value, str) and value.upper() in _SYNCHRONOUS:
        return value.upper()
    raise ConfigurationError(
        f"sqlite store option 'synchronous' must be 'FULL' or 'NORMAL', got {value!r}"
    )


def _mode(value: object) -> int:
    mode: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            mode = int(value.lower().removeprefix("0o"), 8)
    if mode is None or not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise ConfigurationError(
            f"sqlite store option 'mode' must be file permissions that let the owner read "
            f"and write, like 0o600 or '0660', got {value!r}"
        )
    if mode & 0o007:
        raise ConfigurationError(
            f"sqlite store option 'mode' gives other users access ({oct(mode)}): queued mail "
            "holds password-reset links and the like; share it with a group (0o660) instead"
        )
    return mode


def _reserve(value: object) -> int:
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and value.isdigit():
        size = int(value)
    if size is None or size < 0:
        raise ConfigurationError(
            f"sqlite store option 'reserve' must be a size in bytes >= 0, got {value!r}"
        )
    return size


class SQLiteStore(SQLiteLimits, Store):
    capabilities = frozenset({Capability.SHARED, Capability.DURABLE, Capability.RATE_LIMIT})

    def __init__(self, location: str, **options: object) -> None:
        path, query = _parse_location(location)
        given: dict[str, object] = {**query, **options}
        namespace = given.pop("namespace", "default")
        timeout = _timeout(given.pop("timeout", 10.0))
        synchronous = _synchronous(given.pop("synchronous", "FULL"))
        mode = _mode(given.pop("mode", DEFAULT_MODE))
        reserve = _reserve(given.pop("reserve", DEFAULT_RESERVE))
        django_database = given.pop("django_database", None)
        if django_database is not None and not (
            isinstance(django_database, str) and django_database
        ):
            raise ConfigurationError(
                f"sqlite store option 'django_database' must be a database alias, "
                f"got {django_database!r}"
            )
        if given:
            raise ConfigurationError(f"unknown sqlite store options: {', '.join(sorted(given))}")
        super().__init__(location, namespace=namespace)  # type: ignore[arg-type]
        self.path = path
        self.timeout = timeout
        self.synchronous = synchronous
        self.mode = mode
        #: What ``store_factory`` (and anyone) needs to build a twin of this store.
        self.options: dict[str, object] = {"timeout": timeout, "synchronous": synchronous}
        if mode != DEFAULT_MODE:
            self.options["mode"] = mode
        if reserve != DEFAULT_RESERVE:
            self.options["reserve"] = reserve
        self.django_database = django_database
        if django_database is not None:
            self.options["django_database"] = django_database
        self._reserve = Reserve(path, reserve, mode)
        self._pool = ConnectionPool(self._connect, path)

    def __repr__(self) -> str:
        return f"<SQLiteStore path={self.path!r} namespace={self.namespace!r}>"

    # -- connections and the one place where sqlite3 errors are translated -----

    def _connect(self) -> sqlite3.Connection:
        create_private(self.path, self.mode)
        with create_lock:
            conn = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,  # the pool lends it to one thread at a time
            )
        conn.text_factory = decode_text
        try:
            # A new, empty file only (see sqlite_space); on any other it would
            # write, and a full disk refuses writes.
            if conn.execute("PRAGMA page_count").fetchone() == (0,):
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            sql.enable_wal(conn, self.timeout)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            sql.ensure_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
        warn_if_open_to_others(self.path)
        self._reserve.ensure()
        return conn

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction that commits when the block ends and rolls back when it raises."""
        try:
            with self._pool.connection() as conn:
                conn.execute(begin)
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

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
            enqueue_in_site_transaction(self.django_database, self.path, rows)
        elif rows:
            with self._transaction() as conn:
                conn.executemany(sql.ENQUEUE, rows)

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

    def ack(self, claim: Claim) -> None:
        self._drain(lambda conn: self._held(conn, sql.ACK, claim))

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        self._drain(lambda conn: self._held(conn, sql.REQUEUE, claim, due, due, error))

    def release(self, claim: Claim) -> None:
        self._drain(lambda conn: self._held(conn, sql.RELEASE, claim))

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
            ready, scheduled, in_flight, stuck, oldest = conn.execute(
                sql.STATS, {"now": now, "namespace": self.namespace}
            ).fetchone()
            (dead,) = conn.execute(sql.COUNT_DEAD, (self.namespace,)).fetchone()
        return Stats.counted(
            now,
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            oldest_created=oldest,
            stuck=stuck,
        )

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                sql.DEAD_LETTERS, (self.namespace, -1 if limit is None else limit)
            ).fetchall()
        letters = []
        for raw_id, buried, reason, created, due, attempts, error, data in rows:
            mid = raw_id if isinstance(raw_id, str) else repr(raw_id)
            record = read_record(Row(readable(mid), due, created, attempts, error, data), 0.0)
            when = buried if isinstance(buried, (int, float)) else 0.0
            why = readable(reason) if isinstance(reason, str) else repr(reason)
            letters.append(DeadLetter(record, why, float(when)))
        return letters

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
        return revived

    def purge(self, buried_before: float) -> int:
        with self._transaction() as conn:
            return conn.execute(sql.PURGE, (self.namespace, buried_before)).rowcount
