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
    ``tls_verify``, ``tls_ca_certs``; any other is an error.

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

Capabilities and what it can lose
    ``shared``, ``rate_limit`` (buckets and slots shared by every flusher:
    :mod:`mailqueue_stores.redis_limits`) and ``durable``, as durable as the
    server's persistence: with
    ``appendonly yes`` and ``appendfsync everysec`` a crash of the machine can
    lose the last second of writes (a crash of Redis alone loses nothing);
    with RDB snapshots only, everything since the last snapshot; with no
    persistence, everything. A Sentinel or Cluster failover can lose writes
    the old master had not yet replicated. ``maxmemory-policy`` must be
    ``noeviction``: an evicting Redis drops queued mail silently.
    ``oldest_ready_age`` is exact unless more than 1000 messages older than
    the oldest ready one are held or scheduled; then it is the oldest age
    among the 1000 longest-due ready messages.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from mailqueue_core.errors import ConfigurationError, LeaseLost, MessageTooLarge
from mailqueue_core.store import Claim, DeadLetter, Record, Stats, Store
from mailqueue_stores.redis_client import RedisClient
from mailqueue_stores.redis_config import parse_settings
from mailqueue_stores.redis_limits import RedisLimits
from mailqueue_stores.redis_scripts import RedisKeys

__all__ = ["RedisStore"]

#: How many old messages ``stats`` looks at to find the oldest ready one.
_AGE_WALK = 1000
#: Ids per script call for revive and purge, so one call never blocks Redis long.
_CHUNK = 500


class RedisStore(RedisLimits, Store):
    capabilities = frozenset({"shared", "durable", "rate_limit"})
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
        self._client.run("enqueue", [k.due, k.created], args)

    def fetch_due(self, now: float, limit: int, lease: float) -> list[Claim]:
        if limit <= 0:
            return []
        k = self.keys
        expires = now + lease
        token_base = secrets.token_hex(12) + ":"
        rows = self._client.run(
            "claim",
            [k.due, k.held],
            [k.live_prefix, repr(float(now)), limit, repr(expires), token_base],
        )
        claims = []
        for mid, token, data, created, due, attempts, last_error in rows:
            record = Record(
                id=mid.decode(),
                data=data,
                created=float(created),
                due=float(due),
                attempts=int(attempts),
                last_error=_text(last_error),
            )
            claims.append(Claim(record, token.decode(), expires))
        return claims

    def ack(self, claim: Claim) -> None:
        k = self.keys
        keys = [k.live(claim.id), k.due, k.held, k.created]
        self._settle(claim, "ack", keys, [])

    def requeue(self, claim: Claim, due: float, error: str | None) -> None:
        k = self.keys
        extra = [repr(float(due)), "0" if error is None else "1", error or ""]
        self._settle(claim, "requeue", [k.live(claim.id), k.due, k.held], extra)

    def release(self, claim: Claim) -> None:
        k = self.keys
        self._settle(claim, "release", [k.live(claim.id), k.due, k.held], [])

    def bury(self, claim: Claim, error: str, now: float) -> None:
        k = self.keys
        keys = [k.live(claim.id), k.dead_letter(claim.id), k.due, k.held, k.created, k.dead]
        self._settle(claim, "bury", keys, [error, repr(float(now))])

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
        stop = -1 if limit is None else limit - 1
        rows = self._client.run("dead_letters", [self.keys.dead], [self.keys.dead_prefix, stop])
        letters = []
        for mid, data, created, due, attempts, last_error, reason, buried in rows:
            record = Record(
                id=mid.decode(),
                data=data,
                created=float(created),
                due=float(due),
                attempts=int(attempts),
                last_error=_text(last_error),
            )
            letters.append(DeadLetter(record, _text(reason) or "", float(buried)))
        return letters

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
            n = self._client.run(
                "purge", [k.dead], [k.dead_prefix, repr(float(buried_before)), _CHUNK]
            )
            total += n
            if n < _CHUNK:
                return total

    # -- the rest --------------------------------------------------------------

    def stats(self, now: float) -> Stats:
        k = self.keys
        ready, scheduled, in_flight, dead, oldest = self._client.run(
            "stats", [k.due, k.held, k.created, k.dead], [repr(float(now)), _AGE_WALK]
        )
        return Stats(
            ready=ready,
            scheduled=scheduled,
            in_flight=in_flight,
            dead=dead,
            oldest_ready_age=None if oldest is None else max(0.0, now - float(oldest)),
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


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
