"""Reading the memcached store's URL and options into checked settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact

DEFAULT_PORT = 11211
#: memcached's default item size limit (``-I 1m``) less room for the key and
#: the item's own header, so that a record of this size is still stored.
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024 - 1024

KNOWN_OPTIONS = ("namespace", "servers", "connect_timeout", "timeout", "max_item_size")


@dataclasses.dataclass(frozen=True)
class Settings:
    servers: list[tuple[str, int]]
    namespace: str
    connect_timeout: float | None = None
    timeout: float | None = None
    max_item_size: int = DEFAULT_MAX_ITEM_SIZE


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


def _number(name: str, value: object, kind: type[float] | type[int]) -> float | int:
    if isinstance(value, bool):
        raise ConfigurationError(f"option {name!r} must be a number, got {value!r}")
    try:
        number = kind(value)  # type: ignore[arg-type,call-overload]
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name!r} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"option {name!r} must be positive, got {value!r}")
    return number


def parse(location: str, options: Mapping[str, object]) -> Settings:
    """Settings from ``memcached://h1:p1,h2:p2?namespace=...`` and keyword options.

    An option given as a keyword wins over the same one in the URL's query, so
    a store can be rebuilt from its location with another namespace.
    """
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
    merged: dict[str, object] = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    unknown = sorted(set(merged) - set(KNOWN_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"unknown memcached store options: {', '.join(unknown)}"
            f" (known: {', '.join(KNOWN_OPTIONS)})"
        )

    servers = [parse_server(s) for s in parts.netloc.split(",") if s.strip()]
    listed = merged.get("servers")
    if listed is not None:
        if servers:
            raise ConfigurationError(
                "give memcached servers in the URL or in the 'servers' option, not both"
            )
        if isinstance(listed, str):
            listed = listed.split(",")
        if not isinstance(listed, (list, tuple)) or not listed:
            raise ConfigurationError(
                f"option 'servers' must be a list of 'host:port', got {listed!r}"
            )
        servers = [parse_server(str(s)) for s in listed]
    if not servers:
        raise ConfigurationError(f"memcached URL {shown!r} names no server")

    namespace = merged.get("namespace", "default")
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"namespace must be a non-empty string, got {namespace!r}")
    timeouts = {
        name: None if merged.get(name) is None else float(_number(name, merged[name], float))
        for name in ("connect_timeout", "timeout")
    }
    max_item_size = int(
        _number("max_item_size", merged.get("max_item_size", DEFAULT_MAX_ITEM_SIZE), int)
    )
    return Settings(
        servers=servers,
        namespace=namespace,
        max_item_size=max_item_size,
        **timeouts,
    )
