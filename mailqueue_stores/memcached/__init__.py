"""memcached store: a shared queue in one or more memcached servers, losses reported.

What it is
    A queue for sites that already run memcached and no Redis. memcached has no
    lists, sorted sets or key scans, evicts items when memory runs short and
    forgets everything on restart; this store keeps each message whole on one
    server, indexes it in rings of ``incr``-numbered slots per 10-second
    due-time bucket, claims by ``cas``, and reports every loss it can find (see
    ``docs/stores/memcached.rst``). It reads no clock of its own: every time
    comes from the caller (``now``, or a record's ``created``).

URL format
    ``memcached://host:port`` (port defaults to 11211), several servers as
    ``memcached://h1:p1,h2:p2``, IPv6 as ``memcached://[::1]:11211``; any
    option may also be given in the query (``?namespace=site1&timeout=2``).

Options
    ``namespace``, ``servers``, ``connect_timeout``, ``timeout`` and
    ``max_item_size``, declared in
    :class:`~mailqueue_stores.memcached.options.MemcachedOptions`; the table in
    ``docs/stores/memcached.rst`` is generated from that declaration.

Capabilities and what it can lose
    ``shared``, ``may_lose``. Not ``durable``: a restart empties memcached and
    an eviction can drop a message before it is sent. Such a loss is never
    silent: the message is logged at ERROR with its id, counted in
    ``stats().lost`` and listed by ``dead_letters()`` with ``lost=True``. With
    several servers, a server restarted empty is reported exactly, by id, by
    any client, even one started after the restart (each server's journal is
    kept on another). With one server, a restart is reported by clients that
    were running before it, with the number of messages they last saw queued.
    A damaged record (a header or data item deleted, cut short or overwritten
    behind the store's back) is handed to the flusher for burial with
    ``record.damage`` set, or reported lost when nothing of its data is left.
    A record larger than ``max_item_size`` raises ``MessageTooLarge`` at
    enqueue. Choose Redis or SQLite when mail must survive a restart.

The package's modules: :mod:`~.store` (the store, over one :mod:`~.shard` per
server), :mod:`~.options`, :mod:`~.client` (one server, errors translated),
:mod:`~.keys`, :mod:`~.buckets` (due-time buckets and the caller's time),
:mod:`~.codec` and :mod:`~.headers` (the typed values kept in items),
:mod:`~.rings`, :mod:`~.indexing` (a slot a walk passed before it was
written), :mod:`~.scanner`, :mod:`~.dead_letters`, :mod:`~.losses`,
:mod:`~.journal` and :mod:`~.epochs` (what a wiped server took).
"""

from __future__ import annotations

from mailqueue_stores.memcached.store import MemcachedStore

__all__ = ["MemcachedStore"]
