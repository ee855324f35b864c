"""Redis store: the shared queue for flushers on many machines.

What it is
    A queue kept in Redis (plain, Sentinel or Cluster) through redis-py
    (``pip install mailqueue[redis]``). Every state change is one Lua script,
    so one atomic step on the server; claiming costs O(log N + limit) whatever
    the depth of the queue, and an expired lease comes back without a reaper.
    The store (:class:`RedisStore`) is an adapter over
    :class:`~mailqueue_stores.redis.client.RedisClient`, which lays out the
    scripts' calls (:mod:`~mailqueue_stores.redis.scripts`) on the key layout
    of :mod:`~mailqueue_stores.redis.keys`.

URL format
    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS),
    ``unix://[[user]:password@]/path/to/socket?db=N``,
    ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``,
    ``redis+cluster://[[user]:password@]host:port[,host:port...]``
    (``rediss+sentinel`` and ``rediss+cluster`` with TLS). Every option but
    ``client_options`` and ``sentinels`` may also be given in the query
    (``?namespace=shop&min_replicas=1``); ``db`` there overrides the path.

Options
    Declared, with their kinds and defaults, in
    :class:`mailqueue_stores.redis.options.RedisOptions`; the option table of
    :doc:`/stores/redis` is generated from it. Beside ``namespace`` (no
    braces): timeouts, TLS, ``sentinels`` with ``service_name``,
    ``cluster``, ``client_options`` for redis-py, and what the store promises
    (``allow_eviction``, ``min_replicas``, ``replica_timeout``,
    ``max_clock_skew``). An unknown option is an error that lists the valid
    ones.

Capabilities and what it can lose
    ``shared``, ``rate_limit`` (buckets and slots shared by every flusher:
    :mod:`mailqueue_stores.redis.limits`), ``browse`` (pages by cursor whose
    cost does not grow with the depth of the queue:
    :mod:`mailqueue_stores.redis.browsing`), ``pause`` (one key of the
    namespace; with ``min_replicas``, confirmed by the replicas as an enqueue
    is), ``sent_log`` (a sorted set and a hash per record, each expiring when
    its record may go: :mod:`mailqueue_stores.redis.sentlog`), ``heartbeat``
    (a hash and a sorted set that expire with the last note:
    :mod:`mailqueue_stores.redis.heartbeats`), ``wake`` (what may make mail
    due adds to a stream of one entry, and a waiting flusher blocks in ``XREAD``
    on a connection of its own: :mod:`mailqueue_stores.redis.wakeups`) and
    ``durable``, as durable as the
    server's persistence: with
    ``appendonly yes`` and ``appendfsync everysec`` a crash of the machine can
    lose the last second of writes (a crash of Redis alone loses nothing);
    with RDB snapshots only, everything since the last snapshot; with no
    persistence, everything. A Sentinel or Cluster failover can lose writes
    the old master had not yet replicated, unless ``min_replicas`` is set.
    ``maxmemory-policy`` must not evict keys without a TTL (``noeviction``,
    or a ``volatile-*`` policy): :meth:`RedisStore.verify` refuses an
    ``allkeys-*`` one. A full server (``maxmemory`` reached) refuses enqueue
    (``StoreUnavailable``) and still drains. A record deleted or damaged behind
    the store's back is reported: lost (``Stats.lost``) or claimed with
    ``Record.damage`` for burial, never a reason for ``fetch_due`` to fail.
    ``oldest_ready_age`` is exact unless more than 1000 messages older than
    the oldest ready one are held or scheduled; then it is the oldest age
    among the 1000 longest-due ready messages.

Leases and clocks
    The store contract passes time in (``now``): due times are the caller's,
    and so is a claim's ``expires``. The claim script also notes the Redis
    server's clock (``TIME``). Taking over a claim needs both clocks: the
    caller's ``now`` past ``expires`` *and* the server's clock no more than
    ``max_clock_skew`` short of the server-side lease end. One clock that is
    off (a flusher 400 s ahead, a new master after a failover whose clock
    jumped) can no longer cut a lease short by more than ``max_clock_skew``;
    60 s is what the flusher's own safety margin (``min(LEASE / 5, 60)``)
    covers with the default ``LEASE`` of 300 s. Tests that move ``now`` by
    hand past a 30 s lease stay within the allowance; a test or drill that
    jumps further, past a lease that is still running by the real clock, sets
    ``max_clock_skew=inf`` to trust the caller's clock alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mailqueue_core.errors import ConfigurationError, LeaseLost, MessageTooLarge
from mailqueue_core.locations import redact
from mailqueue_core.store import (
    Capability,
    Claim,
    DeadLetter,
    Entry,
    Page,
    Record,
    SentRecord,
    State,
    Stats,
    Store,
)
from mailqueue_core.text import get_logger
from mailqueue_stores.redis import browsing, sentlog
from mailqueue_stores.redis.client import RedisClient
from mailqueue_stores.redis.records import (
    claim_from_row,
    dead_letter_from_row,
    lost_letter_from_row,
)
from mailqueue_stores.redis.settings import read_settings

__all__ = ["RedisStore"]

log = get_logger("mailqueue.stores.redis")

#: ``maxmemory-policy`` values that never evict a key without a TTL (the queue sets none).
_KEEPS_QUEUE = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


class RedisStore(Store):
    capabilities = frozenset(
        {
            Capability.SHARED,
            Capability.DURABLE,
            Capability.RATE_LIMIT,
            Capability.BROWSE,
            Capability.PAUSE,
            Capability.HEARTBEAT,
            Capability.SENT_LOG,
            Capability.WAKE,
        }
    )
    #: Redis's largest string (``proto-max-bulk-len``, 512 MiB by default).
    max_record_size = 512 * 1024 * 1024

    def __init__(self, location: str = "redis://", **options: Any) -> None:
        namespace, settings = read_settings(location, options)
        super().__init__(location, namespace=namespace)
        #: The options as given, ``namespace`` aside: enough to build a twin.
        self.options = {k: v for k, v in options.items() if k != "namespace"}
        self.settings = settings
        self._client = RedisClient(settings, namespace)

    # -- queue -----------------------------------------------------------------

    def enqueue(self, records: Sequence[Record]) -> None:
        if not records:
            return
        for record in records:
            if record.size > self.max_record_size:
                raise MessageTooLarge(
                    f"message {record.id} is {record.size} bytes; redis holds at most "
                    f"{self.max_record_size}"
                )
        self._client.enqueue(records)

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        if limit <= 0:
            return []
        rows, troubles = self._client.claim(now, limit, lease)
        for trouble in troubles:
            self._report(trouble)
        return [claim_from_row(row, now + lease) for row in rows]

    def _report(self, trouble: list[bytes]) -> None:
        mid = trouble[0].decode()
        if trouble[1] == b"lost":
            log.error(
                "redis store (namespace %s): message %s was gone from Redis when it was "
                "claimed (deleted or evicted): reported as lost",
                self.namespace,
                mid,
            )
        else:
            log.error(
                "redis store (namespace %s): message %s was buried: its key holds a %s, "
                "not a hash",
                self.namespace,
                mid,
                trouble[2].decode(),
            )

    def ack(self, claim: Claim) -> None:
        _held(claim, self._client.ack(claim))

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        _held(claim, self._client.requeue(claim, due, error))

    def release(self, claim: Claim) -> None:
        _held(claim, self._client.release(claim))

    def bury(self, claim: Claim, error: str, now: float) -> None:
        _held(claim, self._client.bury(claim, error, now))

    # -- dead letters ----------------------------------------------------------

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        if records:
            self._client.add_dead(records, now)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        if limit is not None and limit <= 0:
            return []
        dead, lost = self._client.dead_letters(-1 if limit is None else limit - 1)
        letters = [dead_letter_from_row(row) for row in dead]
        letters += [lost_letter_from_row(row) for row in lost]
        letters.sort(key=lambda letter: letter.buried)  # stable: ties keep dead first
        return letters if limit is None else letters[:limit]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        return self._client.revive(ids, now)

    def purge(self, buried_before: float) -> int:
        return self._client.purge(buried_before)

    # -- the console -------------------------------------------------------------

    def browse(
        self,
        state: State,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[Entry]:
        return browsing.browse(self._client, state, now, limit, cursor, newest_first)

    def get(self, record_id: str, now: float) -> Entry | None:
        return browsing.get(self._client, record_id, now)

    def delete(self, ids: Iterable[str], now: float) -> int:
        return self._client.delete(browsing.unique(list(ids)), now)

    def send_now(self, ids: Iterable[str], now: float) -> int:
        return self._client.send_now(browsing.unique(list(ids)), now)

    def paused(self) -> bool:
        return self._client.paused()

    def set_paused(self, paused: bool) -> None:
        self._client.set_paused(paused)

    def wait_for_mail(self, timeout: float) -> bool:
        return self._client.wait_for_mail(timeout)

    # -- heartbeats and the sent log ----------------------------------------------

    def beat(self, flusher: str, now: float, expires: float) -> None:
        self._client.beat(flusher, now, expires)

    def beats(self, now: float) -> dict[str, float]:
        flat = self._client.beats(now)
        notes: dict[str, float] = {}
        for name, at in zip(flat[::2], flat[1::2], strict=True):
            try:
                notes[name.decode()] = float(at)
            except ValueError:
                log.warning(
                    "redis store (namespace %s): the heartbeat of %r holds %r, not a time",
                    self.namespace,
                    name,
                    at[:40],
                )
        return notes

    def log_sent(self, records: Sequence[SentRecord], expires: float) -> None:
        if records:
            self._client.log_sent(records, expires)

    def sent_log(
        self,
        now: float,
        *,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page[SentRecord]:
        return sentlog.page(self._client, limit, cursor, newest_first)

    def count_sent(self, since: float) -> int:
        return self._client.count_sent(since)

    def prune_sent(self, sent_before: float) -> int:
        return self._client.prune_sent(sent_before)

    # -- the rest --------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        ready, scheduled, in_flight, stuck, dead, lost, oldest = self._client.stats(now)
        return Stats(
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            lost=lost,
            oldest_ready_age=None if oldest is None else max(0.0, now - float(oldest)),
            stuck=stuck,
        )

    def verify(self) -> None:
        """Refuse a server whose ``maxmemory-policy`` may evict queued mail.

        Reads ``maxmemory_policy`` from ``INFO memory`` of the master (of
        every Cluster primary): ``CONFIG GET`` is often disabled on managed
        Redis. ``noeviction`` and the ``volatile-*`` policies never evict a key
        without a TTL, and the queue sets none; an ``allkeys-*`` policy drops
        queued mail silently once memory is full. ``allow_eviction=true``
        accepts that risk. Raises ``StoreUnavailable`` when the server cannot
        be reached.
        """
        policies = self._client.memory_policies()
        if self.settings.options.allow_eviction:
            return
        for node, policy in sorted(policies.items()):
            if policy not in _KEEPS_QUEUE:
                raise ConfigurationError(self._evicts(node, policy))

    def _evicts(self, node: str, policy: str | None) -> str:
        where = f"redis store {redact(self.location)!r}" + (
            f" (node {node})" if self.settings.mode == "cluster" else ""
        )
        if policy is None:
            found = (
                "does not tell its maxmemory-policy (INFO memory denied or without it), "
                "so it may evict"
            )
        else:
            found = f"has maxmemory-policy {policy}, which evicts"
        return (
            f"{where} {found} queued mail when memory is full, and that mail is lost "
            "silently. Fix: set 'maxmemory-policy noeviction' on every Redis node "
            "(redis.conf, or CONFIG SET maxmemory-policy noeviction, or your provider's "
            "parameter group). To accept the risk instead, set the store option "
            "allow_eviction=true (OPTIONS or ?allow_eviction=true)."
        )

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the server answers."""
        self._client.ping()

    def close(self) -> None:
        self._client.close()

    # -- shared rate limits (see mailqueue_core.ratelimit) ---------------------

    def take_token(self, bucket: str, rate: float, burst: float, now: float) -> float:
        return self._client.take_token(bucket, rate, burst, now)

    def acquire_slot(self, name: str, limit: int, lease: float, now: float) -> str | None:
        return self._client.acquire_slot(name, limit, lease, now)

    def release_slot(self, name: str, token: str) -> None:
        self._client.release_slot(name, token)


def _held(claim: Claim, still: bool) -> None:
    if not still:
        raise LeaseLost(f"message {claim.id} is no longer held by this claim")
