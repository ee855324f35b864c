"""Reading a Redis store's URL and options into :class:`RedisSettings`.

Only parsing lives here: nothing in this module imports redis-py or opens a
connection, so a bad setting is reported at startup whatever the server's state.
The accepted forms are listed in :mod:`mailqueue_stores.redis`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact

__all__ = ["RedisSettings", "parse_settings"]

Mode = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
#: Options about what the store promises, read from the URL query or OPTIONS.
_PROMISE_KEYS = frozenset({"allow_eviction", "min_replicas", "replica_timeout", "max_clock_skew"})
_CONNECTION_KEYS = frozenset(
    {"namespace", "socket_timeout", "socket_connect_timeout", "tls_verify", "tls_ca_certs"}
)
_QUERY_KEYS = _CONNECTION_KEYS | _PROMISE_KEYS | {"db"}
_OPTION_KEYS = (
    _CONNECTION_KEYS | _PROMISE_KEYS | {"client_options", "sentinels", "service_name", "cluster"}
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Where and how to connect; everything the client wrapper needs."""

    mode: Mode = "single"
    host: str = "localhost"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca_certs: str | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinels (sentinel mode) or startup nodes (cluster mode)."""
    service_name: str | None = None
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0
    client_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    allow_eviction: bool = False
    """Accept a ``maxmemory-policy`` that may evict queued mail (``verify`` passes)."""
    min_replicas: int = 0
    """Enqueue returns only once this many replicas have the write (``WAIT``)."""
    replica_timeout: float = 1.0
    """How long enqueue waits for ``min_replicas`` before it is ``StoreUnavailable``."""
    max_clock_skew: float = 60.0
    """How far the server's clock may lag the caller's when a lease is taken over."""


def parse_settings(location: str, options: Mapping[str, Any]) -> tuple[str, RedisSettings]:
    """Return ``(namespace, settings)`` for a store URL and its options."""
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise ConfigurationError(f"unknown redis store options: {', '.join(unknown)}")
    url = location or "redis://"
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"redis store URL {redact(url)!r}: scheme must be one of {', '.join(_SCHEMES)}"
        )
    mode, tls = _SCHEMES[parts.scheme]
    query = _query(url, parts.query)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    fields: dict[str, Any] = {"mode": mode, "tls": tls, "username": username, "password": password}

    path = unquote(parts.path)
    if parts.scheme == "unix":
        if not path:
            raise ConfigurationError(f"redis store URL {redact(url)!r} names no socket path")
        fields["unix_path"] = path
        db_text = query.pop("db", "0")
    elif mode == "sentinel":
        service, _, db_text = path.strip("/").partition("/")
        if not service:
            raise ConfigurationError(f"redis store URL {redact(url)!r} names no service name")
        fields["service_name"] = service
        fields["nodes"] = _hosts(hostlist, 26379, url)
    else:
        db_text = path.strip("/")
        if hostlist:
            nodes = _hosts(hostlist, 6379, url)
            if mode == "single" and len(nodes) > 1:
                raise ConfigurationError(f"redis store URL {redact(url)!r} names several hosts")
            fields["host"], fields["port"] = nodes[0]
            fields["nodes"] = nodes if mode == "cluster" else ()
    if "db" in query:
        db_text = query.pop("db")
    fields["db"] = _int(db_text or "0", "db", url)

    namespace = options.get("namespace", query.pop("namespace", "default"))
    for key in ("socket_timeout", "socket_connect_timeout"):
        raw = options.get(key, query.pop(key, None))
        if raw is not None:
            fields[key] = _seconds(raw, key)
    fields["tls_verify"] = _flag(
        options.get("tls_verify", query.pop("tls_verify", True)), "tls_verify"
    )
    _read_promises(fields, options, query)
    ca = options.get("tls_ca_certs", query.pop("tls_ca_certs", None))
    if ca is not None and not isinstance(ca, str):
        raise ConfigurationError(f"redis store option tls_ca_certs must be a path, got {ca!r}")
    fields["tls_ca_certs"] = ca
    client_options = options.get("client_options", {})
    if not isinstance(client_options, Mapping):
        raise ConfigurationError("redis store option client_options must be a dict")
    fields["client_options"] = dict(client_options)
    _apply_topology(fields, options, hostlist, url)
    return namespace, RedisSettings(**fields)


def _apply_topology(
    fields: dict[str, Any], options: Mapping[str, Any], hostlist: str, url: str
) -> None:
    cluster = options.get("cluster", False)
    if not isinstance(cluster, bool):
        raise ConfigurationError(f"redis store option cluster must be a bool, got {cluster!r}")
    plain = fields["mode"] == "single" and "unix_path" not in fields
    if "sentinels" in options:
        if not plain or cluster or hostlist:
            raise ConfigurationError(
                f"redis store: sentinels are given, so the URL {redact(url)!r} must name no host"
                " and cluster must be off"
            )
        service = options.get("service_name")
        if not isinstance(service, str) or not service:
            raise ConfigurationError("redis store: sentinels need a service_name (a string)")
        fields.update(
            mode="sentinel", service_name=service, nodes=_node_list(options["sentinels"])
        )
    elif "service_name" in options:
        raise ConfigurationError("redis store option service_name is only used with sentinels")
    if cluster:
        if not plain:
            raise ConfigurationError(
                f"redis store: cluster=True needs a redis:// URL, not {redact(url)!r}"
            )
        fields.update(
            mode="cluster", nodes=((fields.get("host", "localhost"), fields.get("port", 6379)),)
        )
    if fields["mode"] == "cluster" and fields["db"] != 0:
        raise ConfigurationError("redis store: Redis Cluster has only db 0")


def _read_promises(
    fields: dict[str, Any], options: Mapping[str, Any], query: dict[str, str]
) -> None:
    def get(name: str) -> Any:
        return options.get(name, query.pop(name, None))

    allow = get("allow_eviction")
    if allow is not None:
        fields["allow_eviction"] = _flag(allow, "allow_eviction")
    replicas = get("min_replicas")
    if replicas is not None:
        fields["min_replicas"] = _count(replicas, "min_replicas")
    timeout = get("replica_timeout")
    if timeout is not None:
        fields["replica_timeout"] = _seconds(timeout, "replica_timeout")
    skew = get("max_clock_skew")
    if skew is not None:
        fields["max_clock_skew"] = _seconds(skew, "max_clock_skew", zero=True)


def _count(raw: Any, name: str) -> int:
    value = -1
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.isdigit():
        value = int(raw)
    if value < 0:
        raise ConfigurationError(
            f"redis store option {name} must be a whole number >= 0, got {raw!r}"
        )
    return value


def _node_list(value: Any) -> tuple[tuple[str, int], ...]:
    try:
        nodes = tuple((str(host), int(port)) for host, port in value)
    except (TypeError, ValueError):
        nodes = ()
    if not nodes or isinstance(value, (str, bytes)):
        raise ConfigurationError(
            f"redis store option sentinels must be a list of (host, port), got {value!r}"
        )
    return nodes


def _query(url: str, text: str) -> dict[str, str]:
    query = dict(parse_qsl(text, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ConfigurationError(
            f"redis store URL {redact(url)!r}: unknown parameters {', '.join(unknown)}"
        )
    return query


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _hosts(hostlist: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in hostlist.split(","):
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigurationError(f"redis store URL {redact(url)!r} has an empty host")
        nodes.append((host, _int(port_text, "port", url) if port_text else default_port))
    return tuple(nodes)


def _int(text: str, what: str, url: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(f"redis store URL {redact(url)!r}: bad {what} {text!r}")
    return value


def _seconds(raw: Any, name: str, *, zero: bool = False) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else -1.0
    except (TypeError, ValueError):
        value = -1.0
    if not (value >= 0 if zero else value > 0):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"redis store option {name} must be seconds {bound}, got {raw!r}")
    return value


def _flag(raw: Any, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise ConfigurationError(f"redis store option {name} must be true or false, got {raw!r}")
