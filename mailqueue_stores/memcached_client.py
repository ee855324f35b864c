"""A small memcached client for the memcached store, over pymemcache.

Every write waits for the server's answer (``noreply=False``), and every
pymemcache or socket error becomes a mailqueue error here and nowhere else
(:meth:`MemcachedClient._call`).

Several servers are addressed with pymemcache's rendezvous hash, the one its
``HashClient`` uses, so keys land where a ``HashClient`` on the same list puts
them. ``HashClient`` itself is not used: while a server is failing it answers
reads with "not found" and writes with "not stored" instead of raising, then
moves that server's keys to the others. For a queue both are wrong: a missing
item would read as a lost message, and counters moved to another server would
start again from zero. Here a server that does not answer is an error
(:class:`StoreUnavailable`) and keys never move.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mailqueue_core.errors import (
    ConfigurationError,
    MessageTooLarge,
    StoreError,
    StoreUnavailable,
)

T = TypeVar("T")

INSTALL_HINT = "pip install mailqueue[memcached]"


def import_pymemcache() -> Any:
    try:
        return importlib.import_module("pymemcache")
    except ImportError as exc:
        raise ConfigurationError(f"the memcached store needs pymemcache: {INSTALL_HINT}") from exc


class MemcachedClient:
    """Connections to one or more memcached servers; keys are ``str``, values ``bytes``."""

    def __init__(
        self,
        servers: list[tuple[str, int]],
        *,
        connect_timeout: float | None,
        timeout: float | None,
    ) -> None:
        import_pymemcache()
        from pymemcache.client.base import PooledClient
        from pymemcache.client.rendezvous import RendezvousHash

        self._clients: dict[str, Any] = {}
        for host, port in servers:
            name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self._clients[name] = PooledClient(
                (host, port),
                connect_timeout=connect_timeout,
                timeout=timeout,
                default_noreply=False,
                no_delay=True,
            )
        self._hasher = RendezvousHash(nodes=list(self._clients))

    @property
    def servers(self) -> list[str]:
        return list(self._clients)

    def node(self, key: str) -> str:
        """The server that holds ``key``."""
        return self._hasher.get_node(key)

    def _call(self, server: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` on one server, translating every failure.

        A connection the server closed while it sat in the pool (a restart, an
        idle timeout) fails on first use without the command having reached a
        live server, so it is tried once more on a fresh connection.
        """
        from pymemcache.exceptions import (
            MemcacheError,
            MemcacheServerError,
            MemcacheUnexpectedCloseError,
        )

        client = self._clients[server]
        for attempt in (1, 2):
            try:
                return fn(client)
            except (ConnectionResetError, BrokenPipeError, MemcacheUnexpectedCloseError) as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"memcached {server} closed the connection") from exc
            except OSError as exc:
                raise StoreUnavailable(f"cannot reach memcached {server}: {exc}") from exc
            except MemcacheServerError as exc:
                if "too large" in str(exc):
                    raise MessageTooLarge(
                        f"memcached {server} refused an item as too large: raise its item"
                        " size limit (memcached -I 4m) to match the max_item_size option"
                    ) from exc
                raise StoreUnavailable(f"memcached {server} failed: {exc}") from exc
            except MemcacheError as exc:
                raise StoreError(f"memcached {server} refused a command: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _by_server(self, keys: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            groups[self.node(key)].append(key)
        return groups

    # -- reads ---------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for server, group in self._by_server(keys).items():
            found.update(self._call(server, lambda c, g=group: c.get_many(g)))
        return found

    def gets_many(self, keys: Iterable[str]) -> dict[str, tuple[bytes, bytes]]:
        found: dict[str, tuple[bytes, bytes]] = {}
        for server, group in self._by_server(keys).items():
            found.update(self._call(server, lambda c, g=group: c.gets_many(g)))
        return found

    def gets(self, key: str) -> tuple[bytes | None, bytes | None]:
        return self._call(self.node(key), lambda c: c.gets(key))

    def exists(self, key: str) -> bool:
        # touch answers found / not found without sending the value back; the
        # store never gives items an expiry, so touching with 0 changes nothing.
        return bool(self._call(self.node(key), lambda c: c.touch(key, 0, noreply=False)))

    # -- writes --------------------------------------------------------------

    def add(self, key: str, value: bytes) -> bool:
        return bool(self._call(self.node(key), lambda c: c.add(key, value, noreply=False)))

    def set_many(self, values: dict[str, bytes]) -> None:
        for server, group in self._by_server(values).items():
            chunk = {k: values[k] for k in group}
            failed = self._call(server, lambda c, v=chunk: c.set_many(v, noreply=False))
            if failed:
                raise StoreUnavailable(f"memcached {server} did not store {len(failed)} items")

    def cas(self, key: str, value: bytes, token: bytes) -> bool:
        # False when the item changed since it was read, None when it is gone.
        return bool(self._call(self.node(key), lambda c: c.cas(key, value, token, noreply=False)))

    def counter(self, key: str, delta: int) -> int:
        """Add ``delta`` (>= 0) to a counter, creating it at 0 when missing; the new value."""
        server = self.node(key)
        value = self._call(server, lambda c: c.incr(key, delta, noreply=False))
        if value is None:
            self._call(server, lambda c: c.add(key, b"0", noreply=False))
            value = self._call(server, lambda c: c.incr(key, delta, noreply=False))
        return int(value)

    def decrement(self, key: str, delta: int) -> int | None:
        value = self._call(self.node(key), lambda c: c.decr(key, delta, noreply=False))
        return None if value is None else int(value)

    def delete(self, key: str) -> bool:
        """True for the one caller whose delete removed the item."""
        return bool(self._call(self.node(key), lambda c: c.delete(key, noreply=False)))

    def delete_many(self, keys: Iterable[str]) -> None:
        for server, group in self._by_server(k for k in keys if k).items():
            self._call(server, lambda c, g=group: c.delete_many(g, noreply=False))

    # -- one server at a time (the epoch markers) ------------------------------

    def get_many_on(self, server: str, keys: list[str]) -> dict[str, bytes]:
        return self._call(server, lambda c: c.get_many(keys))

    def get_on(self, server: str, key: str) -> bytes | None:
        return self._call(server, lambda c: c.get(key))

    def add_on(self, server: str, key: str, value: bytes) -> bool:
        return bool(self._call(server, lambda c: c.add(key, value, noreply=False)))

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
