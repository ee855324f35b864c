"""The Redis store's connection: redis-py, wrapped.

It imports redis-py lazily (a friendly error names the extra to install),
builds a plain, Sentinel or Cluster client on first use, registers the Lua
scripts once (redis-py calls them by SHA and reloads them when the server
answers NOSCRIPT, as after a restart or ``SCRIPT FLUSH``), and translates
every redis-py error into the store errors in
:meth:`RedisConnection.translated`, the one place where that happens.

What is ``StoreUnavailable`` (the caller falls back, or tries again later):
the server cannot be reached, or it refuses to write for now: ``OOM`` (full),
``NOREPLICAS`` (``min-replicas-to-write`` not met), ``READONLY`` (a demoted
master), ``MASTERDOWN``, ``LOADING``, ``CLUSTERDOWN``, ``TRYAGAIN``, a Cluster
client that gave up following redirections, or fewer replicas than
``min_replicas`` acknowledging an enqueue in time. Every other error the
server answers is a plain ``StoreError``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from mailqueue_core.errors import ConfigurationError, StoreError, StoreUnavailable
from mailqueue_stores.redis.scripts import SCRIPTS, script_source, supports_flags
from mailqueue_stores.redis.settings import RedisSettings

__all__ = ["RedisConnection", "ReplicasMissing", "import_redis", "refusal"]

#: Error codes with which a server refuses a write for now (see the module docstring).
REFUSALS = ("OOM", "NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING", "CLUSTERDOWN", "TRYAGAIN")


class ReplicasMissing(StoreUnavailable):
    """Fewer replicas than ``min_replicas`` acknowledged a write in time.

    ``answer`` is what the script answered: the master did the write.
    """

    def __init__(self, message: str, answer: Any) -> None:
        super().__init__(message)
        self.answer = answer


def import_redis() -> ModuleType:
    try:
        import redis
        import redis.backoff
        import redis.cluster
        import redis.retry
        import redis.sentinel
    except ImportError as exc:
        raise ConfigurationError(
            "the redis store needs redis-py, which is not installed: pip install mailqueue[redis]"
        ) from exc
    return redis


def refusal(exc: BaseException, redis: ModuleType) -> str | None:
    """The refusal code of a redis-py error (see :data:`REFUSALS`), or None.

    redis-py strips the codes it knows and raises a class of its own for them;
    the ones it does not know (``NOREPLICAS``) stay at the start of the text.
    """
    e = redis.exceptions
    by_class = (
        (e.OutOfMemoryError, "OOM"),
        (e.ReadOnlyError, "READONLY"),
        (e.BusyLoadingError, "LOADING"),
        (e.MasterDownError, "MASTERDOWN"),
        (e.ClusterDownError, "CLUSTERDOWN"),
        (e.TryAgainError, "TRYAGAIN"),
    )
    for cls, code in by_class:
        if isinstance(exc, cls):
            return code
    text = str(exc)
    first = text.split(" ", 1)[0].lstrip("-")
    if first in REFUSALS:
        return first
    # A script reached a key whose slot is being migrated (a Cluster reshard):
    # Redis checks declared keys before the script runs (ASK, TRYAGAIN) but
    # the keys a script builds only when it reaches them.
    if "attempted to access a non local key" in text:
        return "slot on the move"
    return None


class RedisConnection:
    """One connection pool (or cluster client) and the registered scripts.

    With ``read_timeout``, a connection for blocking reads (:meth:`entry_after`)
    instead: its socket timeout is that many seconds whatever ``socket_timeout``
    says, it speaks RESP2 whatever ``client_options`` say (the shape of an
    ``XREAD`` answer depends on it), and it registers no scripts.
    """

    def __init__(self, settings: RedisSettings, *, read_timeout: float | None = None) -> None:
        self._redis = import_redis()
        self.settings = settings
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Turn redis-py's errors into ``StoreUnavailable`` / ``StoreError``."""
        exceptions = self._redis.exceptions
        unreachable = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            exceptions.ClusterError,
            exceptions.RedisClusterException,
        )
        try:
            yield
        except (exceptions.RedisError, exceptions.RedisClusterException) as exc:
            code = refusal(exc, self._redis)
            if code == "OOM":
                raise StoreUnavailable(
                    f"redis store is full (maxmemory reached) and refused the write: {exc}"
                ) from exc
            if code is not None:
                raise StoreUnavailable(f"redis store refused the write ({code}): {exc}") from exc
            if isinstance(exc, unreachable):
                raise StoreUnavailable(f"redis store unreachable: {exc}") from exc
            raise StoreError(f"redis store error: {exc}") from exc

    def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of :data:`SCRIPTS` by name."""
        with self.translated():
            client = self._connection()
            return self._scripts[script](keys=keys, args=args, client=client)

    def run_replicated(
        self, script: str, keys: Sequence[str], args: Sequence[Any], replicas: int
    ) -> Any:
        """Run a script, then ``WAIT`` on the same connection for ``replicas`` replicas.

        Raises :class:`ReplicasMissing` (carrying the script's answer as
        ``answer``) when fewer acknowledged the write within
        ``replica_timeout``: the master has it, the replicas may not.
        """
        timeout = self.settings.options.replica_timeout
        timeout_ms = max(1, round(timeout * 1000))
        with self.translated():
            client = self._connection()
            target = client
            if self.settings.mode == "cluster":
                # WAIT counts this connection's own writes, and the cluster
                # client would send it to every node: talk to the shard itself.
                target = client.get_redis_connection(client.get_node_from_key(keys[0]))
            pipe = target.pipeline(transaction=False)
            self._scripts[script](keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            try:
                answer, acknowledged = pipe.execute()
            except self._redis.exceptions.RedisError as exc:
                if self.settings.mode != "cluster":
                    raise
                self._refresh_cluster(client)
                if isinstance(exc, self._redis.exceptions.AskError):  # MOVED too
                    raise StoreUnavailable(
                        f"redis store: the Cluster moved the namespace's slot ({exc}); "
                        "the next call goes to its new node"
                    ) from exc
                raise
        if acknowledged < replicas:
            raise ReplicasMissing(
                f"redis store: only {acknowledged} of the {replicas} replicas required "
                f"(min_replicas) acknowledged the write within {timeout}s",
                answer,
            )
        return answer

    def call(self, command: str, *args: Any) -> Any:
        """Run one plain command (read-only use: PING, EXISTS, ZRANGE)."""
        with self.translated():
            return self._connection().execute_command(command, *args)

    def newest_entry(self, key: str) -> bytes:
        """The id of the newest entry of the stream ``key``; ``0-0`` when it has none."""
        with self._on_shard(key) as shard:
            found = shard.xrevrange(key, count=1)
        newest: bytes = found[0][0] if found else b"0-0"
        return newest

    def entry_after(self, key: str, after: bytes, block: float | None) -> bytes | None:
        """The id of the newest entry after ``after`` of the stream ``key``,
        waiting up to ``block`` seconds for one (None: not at all, a look);
        None when none came."""
        ms = None if block is None else max(1, round(block * 1000))  # BLOCK 0 never ends
        with self._on_shard(key) as shard:
            answer = shard.xread({key: after}, block=ms)
        if not answer:
            return None
        # RESP2 gives [[key, entries]]; redis-py's newer unified form {key: entries}.
        ((_, entries),) = answer.items() if isinstance(answer, dict) else answer
        newest: bytes = entries[-1][0]
        return newest

    @contextlib.contextmanager
    def _on_shard(self, key: str) -> Iterator[Any]:
        """A client for the node that holds ``key``, errors translated.

        On a Cluster, the node's own client: the cluster client would ask the
        server which of ``XREAD``'s arguments are keys (``COMMAND GETKEYS``) on
        every call. A failure there reads the slot map again, so that the next
        call finds a new master. A master demoted while a client blocked
        answers ``UNBLOCKED``: ``StoreUnavailable``, and the pool's connections
        are dropped, so that the next call asks Sentinel where the master is.
        """
        exceptions = self._redis.exceptions
        with self.translated():
            client = self._connection()
            cluster = self.settings.mode == "cluster"
            shard = (
                client.get_redis_connection(client.get_node_from_key(key)) if cluster else client
            )
            try:
                yield shard
            except exceptions.RedisError as exc:
                if cluster:
                    self._refresh_cluster(client)
                if isinstance(exc, exceptions.AskError):  # MOVED too
                    raise StoreUnavailable(
                        f"redis store: the Cluster moved the namespace's slot ({exc}); "
                        "the next call goes to its new node"
                    ) from exc
                if str(exc).startswith("UNBLOCKED"):
                    shard.connection_pool.disconnect()
                    raise StoreUnavailable(
                        f"redis store: the server stopped being the master ({exc})"
                    ) from exc
                raise

    def memory_policies(self) -> dict[str, str | None]:
        """``maxmemory_policy`` from ``INFO memory`` of each master, by node name.

        ``INFO`` rather than ``CONFIG GET``: managed Redis services often
        disable ``CONFIG``. None where the server does not report it.
        """
        with self.translated():
            client = self._connection()
            try:
                if self.settings.mode == "cluster":
                    infos = client.info("memory", target_nodes=client.PRIMARIES)
                    if "maxmemory_policy" in infos:  # one primary: redis-py answers it bare
                        infos = {"primary": infos}
                else:
                    infos = {"master": client.info("memory")}
            except self._redis.exceptions.NoPermissionError:
                return {"master": None}  # INFO denied by an ACL
        return {node: info.get("maxmemory_policy") for node, info in infos.items()}

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._scripts = {}
        if client is not None:
            with self.translated():
                client.close()

    def _connection(self) -> Any:
        with self._lock:
            if self._client is None:
                client = self._build()
                if self.read_timeout is None:
                    flags = supports_flags(self._server_version(client))
                    self._scripts = {
                        name: client.register_script(script_source(name, flags))
                        for name in SCRIPTS
                    }
                self._client = client
            return self._client

    def _server_version(self, client: Any) -> str:
        """The server's ``redis_version`` (the lowest of a Cluster's primaries)."""
        try:
            if self.settings.mode == "cluster":
                infos = client.info("server", target_nodes=client.PRIMARIES)
                found = [i["redis_version"] for i in infos.values() if isinstance(i, dict)]
                if "redis_version" in infos:
                    found = [infos["redis_version"]]
                return min(found, key=_version_key, default="")
            return str(client.info("server").get("redis_version", ""))
        except self._redis.exceptions.NoPermissionError:
            return ""  # INFO denied by an ACL: assume a current server

    def _refresh_cluster(self, client: Any) -> None:
        # A shard reached directly does not update the cluster client's slot
        # map; after a failover or a reshard it must be read again.
        with contextlib.suppress(self._redis.exceptions.RedisError, OSError):
            client.nodes_manager.initialize()

    def _build(self) -> Any:
        redis, s, o = self._redis, self.settings, self.settings.options
        tls: dict[str, Any] = {}
        if s.tls:
            tls.update(ssl=True, ssl_ca_certs=o.tls_ca_certs)
            if not o.tls_verify:
                tls.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        timeouts = {
            "socket_timeout": o.socket_timeout,
            "socket_connect_timeout": o.socket_connect_timeout,
        }
        if self.read_timeout is not None:
            timeouts = {
                "socket_timeout": self.read_timeout,
                "socket_connect_timeout": min(o.socket_connect_timeout, self.read_timeout),
            }
        kwargs: dict[str, Any] = {"username": s.username, "password": s.password}
        kwargs.update(timeouts, **tls)
        blocking = {} if self.read_timeout is None else {**timeouts, "protocol": 2}
        if s.mode == "cluster":
            nodes = [redis.cluster.ClusterNode(host, port) for host, port in s.nodes]
            kwargs.update(o.client_options, **blocking)
            return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
        # One retry on a connection error renews a pooled connection that a
        # server restart broke; timeouts are not retried, since the script
        # may have run and a second run would answer differently.
        kwargs["retry"] = redis.retry.Retry(
            redis.backoff.NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)
        )
        kwargs["db"] = s.db
        kwargs.update(o.client_options, **blocking)
        if s.mode == "sentinel":
            sentinel = redis.sentinel.Sentinel(
                list(s.nodes),
                sentinel_kwargs={**timeouts, **tls},
                **kwargs,
            )
            return sentinel.master_for(s.service_name)
        if s.unix_path is not None:
            return redis.Redis(unix_socket_path=s.unix_path, **kwargs)
        return redis.Redis(host=s.host, port=s.port, **kwargs)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
