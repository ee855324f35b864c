"""SQLite store: the embedded default, one file shared by the processes of one machine.

What it is
    A queue in one SQLite database file in WAL mode. Web processes enqueue
    and any number of flusher processes and threads on the same machine claim
    from it; claims take SQLite's write lock (``BEGIN IMMEDIATE``), so
    concurrent flushers get disjoint messages. The schema is created on first
    use (unless ``create=false``). Each thread of each process has its own
    connection, reopened after a fork. The cost of a claim does not grow with
    the depth of the queue. :meth:`SQLiteStore.verify` (run by every
    ``manage.py check``, as the store is ``local``, and by every flusher)
    reports a directory that does not exist, files this user cannot write and
    a file that is not a queue, with the command that fixes it.
    :meth:`SQLiteStore.without_creating` opens an existing queue only.

URL format
    As SQLAlchemy and dj-database-url read them: ``sqlite:////var/spool/mq.db``
    (four slashes) is an absolute path, ``sqlite:///spool/mq.db`` (three) is
    relative to the working directory when the store is built. Any other
    shape (``sqlite:/mq.db``, ``sqlite://mq.db``, a host, a ``#``) is refused
    with the two right forms shown. Options may also be given in the query
    string: ``sqlite:////var/spool/mq.db?namespace=shop``; ``OPTIONS`` win
    over the query string.

Options
    Declared once, with their kinds, defaults and meaning, in
    :class:`~mailqueue_stores.sqlite.options.SQLiteOptions`, and read through
    :func:`mailqueue_core.options.read_options`: the option table of the
    SQLite store's page (:doc:`/stores/sqlite`) is generated from it.

Capabilities and what it can lose
    ``shared`` (between processes of one machine; not over a network
    filesystem, where SQLite's locks do not hold), ``durable``,
    ``rate_limit`` (buckets and slots in the same file), ``local`` (its
    check looks at files only), ``browse`` (pages by cursor over an index:
    the same cost at any depth), ``pause`` (a flag per namespace in the
    file), ``heartbeat`` (a row per flusher), ``sent_log`` (a table in
    the file, paged by cursor like ``browse``) and ``wake`` (a waiting
    flusher polls a count that enqueues bump, every 5 ms, on its own
    connection). With
    ``synchronous=FULL`` a message is on disk when ``enqueue`` returns and
    survives a crash of the process or of the machine. With ``NORMAL`` the
    last commits before a power cut or an operating-system crash may be lost
    (a message enqueued, or one acked and then sent again); the file stays
    consistent. Losing the file, its ``-wal`` companion or the disk loses the
    queue. On a full disk ``enqueue`` raises ``StoreUnavailable`` (the
    fallback store takes new mail) while claims and acks go on, using the
    reserve (:mod:`~mailqueue_stores.sqlite.space`). A queue file deleted or
    replaced while processes have it open is noticed before their next call,
    which uses the file now at the path (:mod:`~mailqueue_stores.sqlite.files`).
    A row damaged by hand is claimed with ``damage`` set and buried
    (:mod:`~mailqueue_stores.sqlite.rows`).

The package
    :mod:`~mailqueue_stores.sqlite.store` (the store, translating every
    ``sqlite3`` error), :mod:`~mailqueue_stores.sqlite.options` (URL and
    options), :mod:`~mailqueue_stores.sqlite.verify` (what ``verify`` checks),
    :mod:`~mailqueue_stores.sqlite.schema` (tables and statements),
    :mod:`~mailqueue_stores.sqlite.connections` (per thread, across forks),
    :mod:`~mailqueue_stores.sqlite.files`, :mod:`~mailqueue_stores.sqlite.space`,
    :mod:`~mailqueue_stores.sqlite.rows`, :mod:`~mailqueue_stores.sqlite.rate_limits`,
    :mod:`~mailqueue_stores.sqlite.console` and :mod:`~mailqueue_stores.sqlite.browsing`
    (the console's calls and pages), :mod:`~mailqueue_stores.sqlite.counting`
    (``stats`` from the indexes), :mod:`~mailqueue_stores.sqlite.sent_log`,
    :mod:`~mailqueue_stores.sqlite.wake_ups` and
    :mod:`~mailqueue_stores.sqlite.site_transaction` (enqueue in the site's transaction).
"""

from mailqueue_stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
