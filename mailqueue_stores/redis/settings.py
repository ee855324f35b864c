"""Reading a Redis store's URL and options into :class:`RedisSettings`.

Only reading lives here: nothing in this module imports redis-py or opens a
connection, so a bad setting is reported at startup whatever the server's state.
The URL's structure (scheme, credentials, hosts, db path, Sentinel service,
socket path) is read by :func:`parse_location`; its query and ``OPTIONS`` by
:func:`mailqueue_core.options.read_options` against
:class:`~mailqueue_stores.redis.options.RedisOptions`. The accepted forms are
listed in :mod:`mailqueue_stores.redis`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal
from urllib.parse import unquote, urlsplit

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact
from mailqueue_core.options import read_options, split_query
from mailqueue_stores.redis.options import Nodes, RedisOptions

__all__ = ["RedisSettings", "parse_location", "read_settings"]

Mode = Literal["single", "sentinel", "cluster"]

WHAT = "redis store"

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Where and how to connect: everything the connection needs."""

    mode: Mode = "single"
    host: str = "localhost"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    nodes: Nodes = ()
    """The host the URL names (single), the Sentinels, or the Cluster's startup nodes."""
    service_name: str | None = None
    options: RedisOptions = dataclasses.field(default_factory=RedisOptions)


def read_settings(location: str, options: Mapping[str, object]) -> tuple[str, RedisSettings]:
    """``(namespace, settings)`` for a store URL and its ``OPTIONS``."""
    url, query = split_query(location or "redis://", WHAT)
    where = parse_location(url)
    namespace, declared = read_options(RedisOptions, WHAT, query, options)
    if "{" in namespace or "}" in namespace:
        raise ConfigurationError(
            f"{WHAT}: namespace must be a string without braces, got {namespace!r}"
        )
    settings = dataclasses.replace(
        where, db=where.db if declared.db is None else declared.db, options=declared
    )
    settings = _sentinels_from_options(_cluster_from_options(settings, url), url)
    if settings.mode == "cluster" and settings.db != 0:
        raise ConfigurationError(f"{WHAT}: Redis Cluster has only db 0")
    return namespace, settings


def parse_location(url: str) -> RedisSettings:
    """The structure of a URL without its query, as settings with default options."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{WHAT} URL {redact(url)!r}: scheme must be one of {', '.join(_SCHEMES)}"
        )
    mode, tls = _SCHEMES[parts.scheme]
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    base = RedisSettings(
        mode=mode,
        tls=tls,
        username=unquote(user) or None,
        password=unquote(password) if colon else None,
    )
    path = unquote(parts.path)
    if parts.scheme == "unix":
        return _unix_socket(base, path, url)
    if mode == "sentinel":
        return _sentinel(base, path, hostlist, url)
    return _hosts_and_db(base, path, hostlist, url)


def _unix_socket(base: RedisSettings, path: str, url: str) -> RedisSettings:
    if not path:
        raise ConfigurationError(f"{WHAT} URL {redact(url)!r} names no socket path")
    return dataclasses.replace(base, unix_path=path)


def _sentinel(base: RedisSettings, path: str, hostlist: str, url: str) -> RedisSettings:
    """``/service_name[/db]`` after the Sentinels' host list."""
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ConfigurationError(f"{WHAT} URL {redact(url)!r} names no service name")
    nodes = _hosts(hostlist, 26379, url)
    return dataclasses.replace(base, service_name=service, nodes=nodes, db=_db(db, url))


def _hosts_and_db(base: RedisSettings, path: str, hostlist: str, url: str) -> RedisSettings:
    """One host (or a Cluster's startup nodes), or none for the defaults, and ``/db``."""
    nodes = _hosts(hostlist, 6379, url) if hostlist else ()
    if base.mode == "single" and len(nodes) > 1:
        raise ConfigurationError(f"{WHAT} URL {redact(url)!r} names several hosts")
    base = dataclasses.replace(base, db=_db(path.strip("/"), url), nodes=nodes)
    return dataclasses.replace(base, host=nodes[0][0], port=nodes[0][1]) if nodes else base


def _plain(settings: RedisSettings) -> bool:
    """A ``redis://`` or ``rediss://`` URL: what the topology options may turn into more."""
    return settings.mode == "single" and settings.unix_path is None


def _cluster_from_options(settings: RedisSettings, url: str) -> RedisSettings:
    if not settings.options.cluster:
        return settings
    if not _plain(settings):
        raise ConfigurationError(f"{WHAT}: cluster=True needs a redis:// URL, not {redact(url)!r}")
    nodes = settings.nodes or ((settings.host, settings.port),)
    return dataclasses.replace(settings, mode="cluster", nodes=nodes)


def _sentinels_from_options(settings: RedisSettings, url: str) -> RedisSettings:
    sentinels, service = settings.options.sentinels, settings.options.service_name
    if sentinels is None:
        if service is not None:
            raise ConfigurationError(f"{WHAT} option service_name is only used with sentinels")
        return settings
    if not _plain(settings) or settings.nodes:
        raise ConfigurationError(
            f"{WHAT}: sentinels are given, so the URL {redact(url)!r} must name no host"
            " and cluster must be off"
        )
    if service is None:
        raise ConfigurationError(f"{WHAT}: sentinels need a service_name (a string)")
    return dataclasses.replace(settings, mode="sentinel", service_name=service, nodes=sentinels)


def _hosts(hostlist: str, default_port: int, url: str) -> Nodes:
    nodes = []
    for item in hostlist.split(","):
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ConfigurationError(f"{WHAT} URL {redact(url)!r} has an empty host")
        nodes.append((host, _whole(port, "port", url) if port else default_port))
    return tuple(nodes)


def _db(text: str, url: str) -> int:
    return _whole(text, "db", url) if text else 0


def _whole(text: str, what: str, url: str) -> int:
    # The text is not shown: in a URL whose password holds a "/" or a "?", what
    # reads as the port or the db is a piece of the password.
    if not (text.isascii() and text.isdigit()):
        raise ConfigurationError(f"{WHAT} URL {redact(url)!r}: the {what} is not a whole number")
    return int(text)
