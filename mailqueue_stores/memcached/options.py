"""The memcached store's URL and options: the servers it names, and what may be set.

The options are declared once, in :class:`MemcachedOptions`, and read through
:func:`mailqueue_core.options.read_options` like every store's (the URL query
and ``OPTIONS`` merged, unknown options an error listing the valid ones); the
docs' table is generated from the same declaration. The servers, from the URL
or from the ``servers`` option, are read by :func:`parse_servers`; a password
in either never reaches a message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact
from mailqueue_core.options import (
    POSITIVE_INT,
    SECONDS,
    Kind,
    option,
    optional,
    read_options,
    split_query,
)

__all__ = [
    "DEFAULT_MAX_ITEM_SIZE",
    "DEFAULT_PORT",
    "WHAT",
    "MemcachedOptions",
    "Settings",
    "parse_server",
    "parse_servers",
    "read",
]

WHAT = "memcached store"
DEFAULT_PORT = 11211
#: memcached's default item size limit (``-I 1m``) less room for the key and
#: the item's own header, so that a record of this size is still stored.
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024 - 1024


def _positive_seconds(value: object) -> float:
    seconds = SECONDS.parse(value)
    if seconds == 0:
        raise ValueError("must be seconds > 0")
    return float(seconds)


def _server_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        listed = tuple(str(s) for s in value if str(s).strip())
        if listed:
            return listed
    raise ValueError("must be a list of 'host:port' (or one string of them, comma-separated)")


#: A socket timeout: 0 would make pymemcache's sockets non-blocking.
POSITIVE_SECONDS = Kind("seconds > 0", _positive_seconds)
SERVER_LIST = Kind("list of host:port", _server_list)


@dataclasses.dataclass(frozen=True)
class MemcachedOptions:
    """The memcached store's options: one declaration for the parser, the errors and the docs."""

    servers: tuple[str, ...] | None = option(
        None,
        optional(SERVER_LIST),
        "The servers (``host:port``, ``[v6addr]:port``; the port defaults to 11211), "
        "instead of listing them in the URL; one string may list several, comma-separated.",
    )
    connect_timeout: float | None = option(
        None,
        optional(POSITIVE_SECONDS),
        "Seconds to wait for a connection (pymemcache's default: none); a timeout "
        "raises ``StoreUnavailable``.",
    )
    timeout: float | None = option(
        None,
        optional(POSITIVE_SECONDS),
        "Seconds to wait for an answer (pymemcache's default: none); a timeout raises "
        "``StoreUnavailable``.",
    )
    max_item_size: int = option(
        DEFAULT_MAX_ITEM_SIZE,
        POSITIVE_INT,
        "The largest record accepted, in bytes (1 MiB - 1024: memcached's default "
        "``-I 1m`` less room for the key and the item's own header); raise it together "
        "with the server's ``-I`` (see `Size limit`_).",
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a location and its options make of a store."""

    servers: list[tuple[str, int]]
    namespace: str
    options: MemcachedOptions


def _shown(spec: str) -> str:
    """A server as given, for an error message: a ``user:password@`` in it is masked."""
    return redact(f"memcached://{spec}").removeprefix("memcached://")


def parse_server(spec: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6addr]:port``."""
    text = spec.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"bad memcached server {_shown(spec)!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host or any(c in host for c in " /@?#"):
        raise ConfigurationError(f"bad memcached server {_shown(spec)!r}: expected host:port")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"bad port in memcached server {_shown(spec)!r}")
    return host, int(port_text)


def parse_servers(in_url: str, listed: tuple[str, ...] | None) -> list[tuple[str, int]]:
    """The servers named in the URL (``h1:p1,h2:p2``) or by the ``servers`` option, not both."""
    servers = [parse_server(s) for s in in_url.split(",") if s.strip()]
    if listed is not None:
        if servers:
            raise ConfigurationError(
                "give memcached servers in the URL or in the 'servers' option, not both"
            )
        servers = [parse_server(s) for s in listed]
    return servers


def _netloc(location: str) -> str:
    """What the URL gives after ``memcached://``: the servers, and nothing else."""
    shown = redact(location)
    try:
        parts = urlsplit(location)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse memcached URL {shown!r}: {exc}") from None
    if parts.scheme.lower() != "memcached":
        raise ConfigurationError(
            f"memcached store URL must start with memcached://, got {shown!r}"
        )
    if parts.path not in ("", "/") or parts.fragment or "@" in parts.netloc:
        raise ConfigurationError(
            f"memcached URL {shown!r} takes only servers and ?options"
            " (no user or password): memcached://host:port,host:port?namespace=NAME"
        )
    return parts.netloc


def read(location: str, options: Mapping[str, object]) -> Settings:
    """Settings from ``memcached://h1:p1,h2:p2?namespace=...`` and keyword options."""
    netloc = _netloc(location)
    _, query = split_query(location, WHAT)
    namespace, declared = read_options(MemcachedOptions, WHAT, query, options)
    servers = parse_servers(netloc, declared.servers)
    if not servers:
        raise ConfigurationError(f"memcached URL {redact(location)!r} names no server")
    return Settings(servers, namespace, declared)
