"""Redis store: the shared queue for flushers on many machines.

What it is
    A queue kept in Redis (plain, Sentinel or Cluster) through redis-py
    (``pip install mailqueue[redis]``). Every state change is one Lua script,
    so one atomic step on the server; claiming costs O(log N + limit) whatever
    the depth of the queue, and an expired lease comes back without a reaper.
    The key layout is in :mod:`mailqueue_stores.redis_scripts`.

URL format
    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS),
    ``unix://[[user]:password@]/path/to/socket?db=N``,
    ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``,
    ``redis+cluster://[[user]:password@]host:port[,host:port...]``
    (``rediss+sentinel`` and ``rediss+cluster`` with TLS). Query parameters:
    ``namespace``, ``db``, ``socket_timeout``, ``socket_connect_timeout``,
    ``tls_verify``, ``tls_ca_certs``, ``allow_eviction``, ``min_replicas``,
    ``replica_timeout``, ``max_clock_skew``; any other is an error.

Options
    ``namespace`` (str, ``"default"``; no braces): stores in other namespaces on
    the same server never see each other.
    ``socket_timeout``, ``socket_connect_timeout`` (float seconds, 5).
    ``tls_verify`` (bool, True): verify the server's certificate and host
    name with ``rediss``; only False turns that off.
    ``tls_ca_certs`` (str path, None: the system's trust store).
    ``sentinels`` (list of (host, port)) with ``service_name`` (str): find the
    master through Sentinel; the URL then names no host.
    ``cluster`` (bool, False): the URL's host is a Redis Cluster node.
    ``client_options`` (dict, {}): passed through to redis-py's client.
    ``allow_eviction`` (bool, False): let :meth:`RedisStore.verify` pass on a
    server whose ``maxmemory-policy`` may evict queued mail.
    ``min_replicas`` (int, 0): enqueue returns only once this many replicas
    acknowledged the write (``WAIT``), so a failover cannot lose it.
    ``replica_timeout`` (float seconds, 1): how long enqueue waits for them;
    fewer in time is ``StoreUnavailable``.
    ``max_clock_skew`` (float seconds, 60; ``inf`` turns the check off): a
    lease is taken over only when the caller's clock says it ran out and the
    Redis server's clock agrees within this many seconds.

Capabilities and what it can lose
    ``shared``, ``rate_limit`` (buckets and slots shared by every flusher:
    :mod:`mailqueue_stores.redis_limits`) and ``durable``, as durable as the
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

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from mailqueue_core.errors import ConfigurationError, LeaseLost, MessageTooLarge, StoreError
from mailqueue_core.locations import redact
from mailqueue_core.store import Capability, Claim, DeadLetter, Record, Stats, Store
from mailqueue_core.text import get_logger
from mailqueue_stores.redis_client import RedisClient, ReplicasMissing
from mailqueue_stores.redis_config import parse_settings
from mailqueue_stores.redis_limits import RedisLimits
from mailqueue_stores.redis_records import (
    claim_from_row,
    dead_letter_from_row,
    lost_letter_from_row,
)
from mailqueue_stores.redis_scripts import RedisKeys

__all__ = ["RedisStore"]

log = get_logger("mailqueue.stores.redis")

#: How many old messages ``stats`` looks at to find the oldest ready one.
_AGE_WALK = 1000
#: Ids per script call for revive and purge, so one call never blocks Redis long.
_CHUNK = 500
#: ``maxmemory-policy`` values that never evict a key without a TTL (the queue sets none).
_KEEPS_QUEUE = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


class RedisStore(RedisLimits, Store):
    capabilities = frozenset({Capability.SHARED, Capability.DURABLE, Capability.RATE_LIMIT})
    #: Redis's largest string (``proto-max-bulk-len``, 512 MiB by default).
    max_record_size = 512 * 1024 * 1024

    def __init__(self, location: str = "redis://", **options: Any) -> None:
        namespace, settings = parse_settings(location, options)
        if not isinstance(namespace, str) or "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"redis store namespace must be a string without braces, got {namespace!r}"
            )
        super().__init__(location, namespace=namespace)
        self.options = {k: v for k, v in options.items() if k != "namespace"}
        self.settings = settings
        self.keys = RedisKeys(namespace)
        self._client = RedisClient(settings)
        # Lua reads "inf" as infinity too, but a finite bound keeps the scripts' arithmetic plain.
        self._skew = repr(min(settings.max_clock_skew, 1e12))

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
        k = self.keys
        args: list[Any] = [k.live_prefix, k.dead_prefix]
        for record in records:
            args += _record_args(record)
        replicas = self.settings.min_replicas
        if not replicas:
            self._client.run("enqueue", [k.due, k.created], args)
            return
        try:
            self._client.run_replicated("enqueue", [k.due, k.created], args, replicas)
        except ReplicasMissing as missing:
            self._withdraw([mid.decode() for mid in missing.answer])
            raise

    def _withdraw(self, ids: list[str]) -> None:
        """Take back what an enqueue added that the replicas did not confirm.

        The caller is told the enqueue failed (and falls back); if the copy
        stayed, the message would be sent from here and from the fallback.
        A flusher that claimed it meanwhile keeps it.
        """
        if not ids:
            return
        k = self.keys
        try:
            self._client.run("withdraw", [k.due, k.created], [k.live_prefix, *ids])
        except StoreError as exc:
            log.warning(
                "redis store (namespace %s): could not take back %d message(s) that no "
                "replica confirmed; they may be delivered twice: %s",
                self.namespace,
                len(ids),
                exc,
            )

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        if limit <= 0:
            return []
        k = self.keys
        expires = now + lease
        token_base = secrets.token_hex(12) + ":"
        rows, troubles = self._client.run(
            "claim",
            [k.due, k.held, k.created, k.dead, k.lost],
            [
                k.live_prefix,
                k.dead_prefix,
                k.lost_prefix,
                repr(float(now)),
                limit,
                repr(expires),
                token_base,
                repr(float(lease)),
                self._skew,
            ],
        )
        for trouble in troubles:
            self._report(trouble)
        return [claim_from_row(row, expires) for row in rows]

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
        k = self.keys
        keys = [k.live(claim.id), k.due, k.held, k.created]
        self._settle(claim, "ack", keys, [])

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        k = self.keys
        extra = [
            repr(float(due)),
            claim.record.attempts + 1,
            "0" if error is None else "1",
            error or "",
        ]
        self._settle(claim, "requeue", [k.live(claim.id), k.due, k.held], extra)

    def release(self, claim: Claim) -> None:
        k = self.keys
        extra = [repr(float(claim.record.due))]
        self._settle(claim, "release", [k.live(claim.id), k.due, k.held], extra)

    def bury(self, claim: Claim, error: str, now: float) -> None:
        k = self.keys
        keys = [k.live(claim.id), k.dead_letter(claim.id), k.due, k.held, k.created, k.dead]
        r = claim.record
        extra = [error, repr(float(now)), r.attempts + 1, repr(float(r.created)), repr(r.due)]
        self._settle(claim, "bury", keys, extra)

    def _settle(self, claim: Claim, script: str, keys: list[str], extra: list[Any]) -> None:
        if not self._client.run(script, keys, [claim.id, claim.token, *extra]):
            raise LeaseLost(f"message {claim.id} is no longer held by this claim")

    # -- dead letters ----------------------------------------------------------

    def add_dead(self, records: Sequence[Record], now: float) -> None:
        if not records:
            return
        args: list[Any] = [self.keys.dead_prefix, repr(float(now))]
        for record in records:
            args += _record_args(record)
        self._client.run("add_dead", [self.keys.dead], args)

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        if limit is not None and limit <= 0:
            return []
        k = self.keys
        stop = -1 if limit is None else limit - 1
        dead, lost = self._client.run(
            "dead_letters", [k.dead, k.lost], [k.dead_prefix, k.lost_prefix, stop]
        )
        letters = [dead_letter_from_row(row) for row in dead]
        letters += [lost_letter_from_row(row) for row in lost]
        letters.sort(key=lambda letter: letter.buried)  # stable: ties keep dead first
        return letters if limit is None else letters[:limit]

    def revive(self, ids: Iterable[str] | None, now: float) -> int:
        k = self.keys
        if ids is None:
            chosen = [m.decode() for m in self._client.call("ZRANGE", k.dead, 0, -1)]
        else:
            chosen = list(ids)
        revived = 0
        for start in range(0, len(chosen), _CHUNK):
            revived += self._client.run(
                "revive",
                [k.due, k.held, k.created, k.dead],
                [k.live_prefix, k.dead_prefix, repr(float(now)), *chosen[start : start + _CHUNK]],
            )
        return revived

    def purge(self, buried_before: float) -> int:
        k = self.keys
        total = 0
        while True:
            dead, lost = self._client.run(
                "purge",
                [k.dead, k.lost],
                [k.dead_prefix, k.lost_prefix, repr(float(buried_before)), _CHUNK],
            )
            total += dead + lost
            if dead < _CHUNK and lost < _CHUNK:
                return total

    # -- the rest --------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        k = self.keys
        ready, scheduled, in_flight, stuck, dead, lost, oldest = self._client.run(
            "stats",
            [k.due, k.held, k.created, k.dead, k.lost],
            [k.live_prefix, repr(float(now)), _AGE_WALK, self._skew],
        )
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
        if self.settings.allow_eviction:
            return
        for node, policy in sorted(policies.items()):
            if policy in _KEEPS_QUEUE:
                continue
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
            raise ConfigurationError(
                f"{where} {found} queued mail when memory is full, and that mail is lost "
                "silently. Fix: set 'maxmemory-policy noeviction' on every Redis node "
                "(redis.conf, or CONFIG SET maxmemory-policy noeviction, or your provider's "
                "parameter group). To accept the risk instead, set the store option "
                "allow_eviction=true (OPTIONS or ?allow_eviction=true)."
            )

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the server answers."""
        self._client.call("PING")

    def close(self) -> None:
        self._client.close()


def _record_args(record: Record) -> list[Any]:
    error = record.last_error
    return [
        record.id,
        record.data,
        repr(float(record.created)),
        repr(float(record.due)),
        int(record.attempts),
        "0" if error is None else "1",
        error or "",
    ]
