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

Capabilities and what it can lose
    ``shared`` (between processes of one machine; not over a network
    filesystem, where SQLite's locks do not hold), ``durable`` and
    ``rate_limit`` (buckets and slots in the same file). With
    ``synchronous=FULL`` a message is on disk when ``enqueue`` returns and
    survives a crash of the process or of the machine. With ``NORMAL`` the
    last commits before a power cut or an operating-system crash may be lost
    (a message enqueued, or one acked and then sent again); the file stays
    consistent. Losing the file, its ``-wal`` companion or the disk loses the
    queue.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from mailqueue_core.errors import ConfigurationError, LeaseLost, StoreUnavailable
from mailqueue_core.store import Claim, DeadLetter, Record, Stats, Store
from mailqueue_stores import sqlite_schema as sql
from mailqueue_stores.sqlite_connections import ConnectionPool
from mailqueue_stores.sqlite_django import enqueue_in_site_transaction
from mailqueue_stores.sqlite_limits import SQLiteLimits

__all__ = ["SQLiteStore"]

_SYNCHRONOUS = ("FULL", "NORMAL")


def _parse_location(location: str) -> tuple[str, dict[str, str]]:
    """Split a ``sqlite:///`` URL into an absolute file path and its query options."""
    parts = urlsplit(location)
    if parts.scheme != "sqlite":
        raise ConfigurationError(
            f"sqlite store URL must start with 'sqlite:///', got {location!r}"
        )
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise ConfigurationError(
            f"sqlite store URL {location!r} names no file: use sqlite:////abs/path.db"
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


class SQLiteStore(SQLiteLimits, Store):
    capabilities = frozenset({"shared", "durable", "rate_limit"})

    def __init__(self, location: str, **options: object) -> None:
        path, query = _parse_location(location)
        given: dict[str, object] = {**query, **options}
        namespace = given.pop("namespace", "default")
        timeout = _timeout(given.pop("timeout", 10.0))
        synchronous = _synchronous(given.pop("synchronous", "FULL"))
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
        #: What ``store_factory`` (and anyone) needs to build a twin of this store.
        self.options: dict[str, object] = {"timeout": timeout, "synchronous": synchronous}
        self.django_database = django_database
        if django_database is not None:
            self.options["django_database"] = django_database
        self._pool = ConnectionPool(self._connect)

    def __repr__(self) -> str:
        return f"<SQLiteStore path={self.path!r} namespace={self.namespace!r}>"

    # -- connections and the one place where sqlite3 errors are translated -----

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,  # the pool lends it to one thread at a time
        )
        try:
            sql.enable_wal(conn, self.timeout)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            sql.ensure_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
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
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

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
        expires = now + lease
        with self._transaction() as conn:
            claims = [
                Claim(Record(mid, data, created, due, attempts, error), uuid.uuid4().hex, expires)
                for mid, due, created, attempts, error, data in conn.execute(
                    sql.CLAIM, (self.namespace, now, limit)
                )
            ]
            conn.executemany(sql.TAKE, [(expires, c.token, self.namespace, c.id) for c in claims])
        return claims

    def _held(self, conn: sqlite3.Connection, statement: str, claim: Claim, *args: object) -> None:
        cursor = conn.execute(statement, (*args, self.namespace, claim.id, claim.token))
        if cursor.rowcount != 1:
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")

    def ack(self, claim: Claim) -> None:
        with self._transaction() as conn:
            self._held(conn, sql.ACK, claim)

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        with self._transaction() as conn:
            self._held(conn, sql.REQUEUE, claim, due, due, error)

    def release(self, claim: Claim) -> None:
        with self._transaction() as conn:
            self._held(conn, sql.RELEASE, claim)

    def bury(self, claim: Claim, error: str, now: float) -> None:
        with self._transaction() as conn:
            self._held(conn, sql.BURY, claim, now, error, error)
            self._held(conn, sql.ACK, claim)

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
            ready, scheduled, in_flight, oldest = conn.execute(
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
        )

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                sql.DEAD_LETTERS, (self.namespace, -1 if limit is None else limit)
            ).fetchall()
        return [
            DeadLetter(Record(mid, data, created, due, attempts, error), reason, buried)
            for mid, buried, reason, created, due, attempts, error, data in rows
        ]

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
