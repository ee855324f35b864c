"""A small client for one memcached server, over pymemcache.

Every write waits for the server's answer (``noreply=False``), and every
pymemcache or socket error becomes a mailqueue error here and nowhere else
(:meth:`MemcachedClient._call`).

The store keeps one client per server and decides itself which server holds
what (see :mod:`mailqueue_stores.memcached.shard`). pymemcache's ``HashClient``
is not used: while a server is failing it answers reads with "not found" and
writes with "not stored" instead of raising, then moves that server's keys to
the others. For a queue both are wrong: a missing item would read as a lost
message, and counters moved to another server would start again from zero.
Here a server that does not answer is an error (:class:`StoreUnavailable`) and
keys never move.
"""

from __future__ import annotations

import dataclasses
import importlib
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


def server_name(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets: how servers are named and placed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass(frozen=True)
class Versioned:
    """An item's value and its cas token, for a write guarded by :meth:`MemcachedClient.cas`."""

    value: bytes
    cas: bytes


class MemcachedClient:
    """Connections to one memcached server; keys are ``str``, values ``bytes``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float | None,
        timeout: float | None,
    ) -> None:
        import_pymemcache()
        from pymemcache.client.base import PooledClient

        self.server = server_name(host, port)
        self._client = PooledClient(
            (host, port),
            connect_timeout=connect_timeout,
            timeout=timeout,
            default_noreply=False,
            no_delay=True,
        )

    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``, translating every failure.

        A connection the server closed while it sat in the pool (a restart, an
        idle timeout) fails on first use without the command having reached a
        live server, so it is tried once more on a fresh connection.
        """
        from pymemcache.exceptions import (
            MemcacheError,
            MemcacheServerError,
            MemcacheUnexpectedCloseError,
        )

        server = self.server
        for attempt in (1, 2):
            try:
                return fn(self._client)
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

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._call(lambda c: c.get(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = list(keys)
        if not wanted:
            return {}
        return self._call(lambda c: c.get_many(wanted))

    def gets_many(self, keys: Iterable[str]) -> dict[str, Versioned]:
        wanted = list(keys)
        if not wanted:
            return {}
        found = self._call(lambda c: c.gets_many(wanted))
        return {key: Versioned(value, cas) for key, (value, cas) in found.items()}

    def gets(self, key: str) -> Versioned | None:
        value, cas = self._call(lambda c: c.gets(key))
        return None if value is None else Versioned(value, cas)

    def clock(self) -> float:
        """The server's clock, in whole seconds (memcached's ``stats``)."""
        return float(self._call(lambda c: c.stats())[b"time"])

    def exists(self, key: str) -> bool:
        # touch answers found / not found without sending the value back; the
        # store never gives items an expiry, so touching with 0 changes nothing.
        return bool(self._call(lambda c: c.touch(key, 0, noreply=False)))

    # -- writes --------------------------------------------------------------

    def add(self, key: str, value: bytes) -> bool:
        return bool(self._call(lambda c: c.add(key, value, noreply=False)))

    def set_many(self, values: dict[str, bytes]) -> None:
        if not values:
            return
        failed = self._call(lambda c: c.set_many(values, noreply=False))
        if failed:
            raise StoreUnavailable(f"memcached {self.server} did not store {len(failed)} items")

    def cas(self, key: str, value: bytes, seen: Versioned) -> bool:
        """Write ``value`` only if the item is unchanged since it was read as ``seen``."""
        # pymemcache answers False when the item changed, None when it is gone.
        return bool(self._call(lambda c: c.cas(key, value, seen.cas, noreply=False)))

    def counter(self, key: str, delta: int) -> int:
        """Add ``delta`` (>= 0) to a counter, creating it at 0 when missing; the new value."""
        value = self._call(lambda c: c.incr(key, delta, noreply=False))
        if value is None:
            self._call(lambda c: c.add(key, b"0", noreply=False))
            value = self._call(lambda c: c.incr(key, delta, noreply=False))
        return int(value)

    def decrement(self, key: str, delta: int) -> int | None:
        value = self._call(lambda c: c.decr(key, delta, noreply=False))
        return None if value is None else int(value)

    def delete(self, key: str) -> bool:
        """True for the one caller whose delete removed the item."""
        return bool(self._call(lambda c: c.delete(key, noreply=False)))

    def delete_many(self, keys: Iterable[str | None]) -> None:
        wanted = [k for k in keys if k]
        if wanted:
            self._call(lambda c: c.delete_many(wanted, noreply=False))

    def close(self) -> None:
        self._client.close()
