"""The Redis store's options, declared once: what settings accept and the docs' table show.

Read through :func:`mailqueue_core.options.read_options` (the URL query and
``OPTIONS`` merged, ``namespace`` taken out, unknown names listed). The URL's
own structure (scheme, hosts, credentials, db path, sentinel service, socket
path) is read by :func:`mailqueue_stores.redis.settings.parse_location`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from mailqueue_core.options import (
    BOOLEAN,
    COUNT,
    MAPPING,
    SECONDS,
    TEXT,
    Kind,
    option,
    optional,
)

__all__ = ["Nodes", "RedisOptions"]

Nodes = tuple[tuple[str, int], ...]


def _positive_seconds(value: object) -> float:
    seconds: float = SECONDS.parse(value)
    if seconds == 0:
        raise ValueError("must be seconds > 0")
    return seconds


def _seconds_or_inf(value: object) -> float:
    # The one bound that may be infinite: ``inf`` turns the server-clock check off.
    if value == math.inf or (
        isinstance(value, str) and value.strip().lower().lstrip("+") in ("inf", "infinity")
    ):
        return math.inf
    seconds: float = SECONDS.parse(value)
    return seconds


def _nodes(value: object) -> Nodes:
    wanted = "must be a non-empty list of (host, port)"
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(wanted)
    try:
        return tuple(map(_node, value))
    except (TypeError, ValueError):
        raise ValueError(wanted) from None


def _node(item: object) -> tuple[str, int]:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise ValueError("not a (host, port) pair")
    host, port = item
    return str(host), int(port)


POSITIVE_SECONDS = Kind("seconds > 0", _positive_seconds)
SECONDS_OR_INF = Kind("seconds >= 0, or inf", _seconds_or_inf)
NODES = Kind("list of (host, port)", _nodes, in_url=False)


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """Every option of the Redis store but ``namespace`` (a string without braces)."""

    db: int | None = option(
        None, optional(COUNT), "database number; overrides the URL's ``/db`` (Cluster: only 0)"
    )
    socket_timeout: float = option(5.0, POSITIVE_SECONDS, "seconds to wait for a reply")
    socket_connect_timeout: float = option(
        5.0, POSITIVE_SECONDS, "seconds to wait for a connection"
    )
    tls_verify: bool = option(
        True,
        BOOLEAN,
        "with ``rediss``: verify the server's certificate and host name; "
        "false only for a test server",
    )
    tls_ca_certs: str | None = option(
        None, optional(TEXT), "CA file for ``rediss`` (none: the system's trust store)"
    )
    sentinels: Nodes | None = option(
        None,
        optional(NODES),
        "find the master through these Sentinels (with ``service_name``; the URL names no host)",
    )
    service_name: str | None = option(
        None, optional(TEXT), "the master's name at the Sentinels (with ``sentinels``)"
    )
    cluster: bool = option(
        False, BOOLEAN, "the URL's host is a Redis Cluster node (as ``redis+cluster://``)"
    )
    client_options: Mapping[str, Any] = option(
        {}, MAPPING, "passed as they are to redis-py's client (``ssl_certfile``, ...)"
    )
    allow_eviction: bool = option(
        False,
        BOOLEAN,
        "let ``verify()`` pass on a server whose ``maxmemory-policy`` may evict queued mail",
    )
    min_replicas: int = option(
        0,
        COUNT,
        "enqueue returns only once this many replicas acknowledged the write (``WAIT``)",
    )
    replica_timeout: float = option(
        1.0,
        POSITIVE_SECONDS,
        "how long enqueue waits for ``min_replicas``; fewer in time is ``StoreUnavailable``",
    )
    max_clock_skew: float = option(
        60.0,
        SECONDS_OR_INF,
        "a lease is taken over only when the Redis server's clock agrees within this many "
        "seconds that it ran out (``inf``: trust the caller's clock alone)",
    )
