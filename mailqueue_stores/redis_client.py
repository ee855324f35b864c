"""The small client the Redis store talks through: redis-py, wrapped.

It imports redis-py lazily (a friendly error names the extra to install),
builds a plain, Sentinel or Cluster client on first use, registers the Lua
scripts once (redis-py calls them by SHA and reloads them when the server
answers NOSCRIPT, as after a restart or ``SCRIPT FLUSH``), and translates
every redis-py error into the store errors in :meth:`RedisClient.translated`,
the one place where that happens.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from mailqueue_core.errors import ConfigurationError, StoreError, StoreUnavailable
from mailqueue_stores.redis_config import RedisSettings
from mailqueue_stores.redis_scripts import SCRIPTS

__all__ = ["RedisClient", "import_redis"]


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


class RedisClient:
    """One connection pool (or cluster client) and the registered scripts."""

    def __init__(self, settings: RedisSettings) -> None:
        self._redis = import_redis()
        self.settings = settings
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
            exceptions.ClusterDownError,
            exceptions.TryAgainError,
            exceptions.ReadOnlyError,
            exceptions.RedisClusterException,
            OSError,
        )
        try:
            yield
        except unreachable as exc:
            raise StoreUnavailable(f"redis store unreachable: {exc}") from exc
        except exceptions.ResponseError as exc:
            # A full server (maxmemory reached) cannot take mail: as good as down.
            # Inside a script the refusal comes without its "OOM" prefix, and
            # only at the first write, so the script changed nothing.
            if "used memory > 'maxmemory'" in str(exc):
                raise StoreUnavailable(f"redis store refused the write: {exc}") from exc
            raise StoreError(f"redis store error: {exc}") from exc
        except exceptions.RedisError as exc:
            raise StoreError(f"redis store error: {exc}") from exc

    def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of :data:`SCRIPTS` by name."""
        with self.translated():
            client = self._connection()
            return self._scripts[script](keys=keys, args=args, client=client)

    def call(self, command: str, *args: Any) -> Any:
        """Run one plain command (read-only use: PING, SCAN in tools)."""
        with self.translated():
            return self._connection().execute_command(command, *args)

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
                self._scripts = {
                    name: client.register_script(src) for name, src in SCRIPTS.items()
                }
                self._client = client
            return self._client

    def _build(self) -> Any:
        redis, s = self._redis, self.settings
        tls: dict[str, Any] = {}
        if s.tls:
            tls.update(ssl=True, ssl_ca_certs=s.tls_ca_certs)
            if not s.tls_verify:
                tls.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        timeouts = {
            "socket_timeout": s.socket_timeout,
            "socket_connect_timeout": s.socket_connect_timeout,
        }
        kwargs: dict[str, Any] = {"username": s.username, "password": s.password}
        kwargs.update(timeouts, **tls)
        if s.mode == "cluster":
            nodes = [redis.cluster.ClusterNode(host, port) for host, port in s.nodes]
            kwargs.update(s.client_options)
            return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
        # One retry on a connection error renews a pooled connection that a
        # server restart broke; timeouts are not retried, since the script
        # may have run and a second run would answer differently.
        kwargs["retry"] = redis.retry.Retry(
            redis.backoff.NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)
        )
        kwargs["db"] = s.db
        kwargs.update(s.client_options)
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
