"""Parsing of store and transport URLs (``redis://host/0``, ``smtp://user@host:587``).

The scheme names the plugin: its entry-point name, or that name followed by
``+variant`` (``redis+sentinel://``). Everything after the scheme belongs to
the plugin, which reads it with :func:`parse_url`.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from mailqueue_core.errors import ConfigurationError

__all__ = ["URL", "parse_bool", "parse_url", "plugin_name", "redact"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9.\-]*)(\+[A-Za-z0-9.\-]+)?:")


def plugin_name(spec: str) -> str | None:
    """The plugin a URL names (``redis+sentinel://...`` -> ``redis``), or None."""
    match = _SCHEME.match(spec)
    return match.group(1).lower() if match else None


@dataclasses.dataclass(frozen=True)
class URL:
    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None
    path: str
    query: tuple[tuple[str, str], ...]

    def options(self) -> dict[str, str]:
        return dict(self.query)


def parse_url(url: str, *, schemes: tuple[str, ...]) -> URL:
    """Split ``url``; a scheme outside ``schemes`` or a bad port is a ConfigurationError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse URL {redact(url)!r}: {exc}") from None
    if parts.scheme.lower() not in schemes:
        raise ConfigurationError(
            f"URL {redact(url)!r} has scheme {parts.scheme!r}; expected {' or '.join(schemes)}"
        )
    return URL(
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        path=parts.path,
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: object, name: str) -> bool:
    """A boolean option given as a bool or as text (from a URL query)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigurationError(f"option {name!r} must be true or false, got {value!r}")
