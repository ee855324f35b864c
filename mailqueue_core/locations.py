"""Store and transport locations: their URLs parsed (``redis://host/0``) and redacted.

The scheme names the plugin: its entry-point name, or that name followed by
``+variant`` (``redis+sentinel://``). Everything after the scheme belongs to
the plugin, which reads it with :func:`parse_url`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mailqueue_core.errors import ConfigurationError

__all__ = [
    "SECRET_NAMES",
    "URL",
    "parse_bool",
    "parse_url",
    "plugin_name",
    "redact",
    "redact_value",
]

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


SECRET_NAMES = re.compile(r"API|AUTH|TOKEN|KEY|SECRET|PASS|PWD|SIGNATURE|CREDENTIAL", re.I)
"""Names whose values are secrets: Django's list (``SafeExceptionReporterFilter``), and more."""

# A host[:port] list, then what may close a quoted URL in a message ("...@host'],").
_HOSTS = re.compile(r"[\w.\-~%\[\]:,]*['\")\]}>;,.:]*")
_PATH = re.compile(r"[/?#]")
_QUERY_SECRET = re.compile(r"(?<=[?&;])([^=&;#\s?]+)=([^&;#\s\'\"]+)")


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``, for messages and logs.

    ``text`` is a URL (``redis://:pw@host/0`` -> ``redis://:***@host/0``) or a message
    holding URLs. Robust to passwords that were not percent-encoded (holding ``/``,
    ``@``, ``:``, ``?`` or ``#``): the userinfo runs to the last ``@`` that a host list
    follows, so a doubtful URL loses more than its password rather than leaking it.
    Query parameters with a secret's name (``?password=``, ``&api_key=``) are hidden too.
    """
    tokens = re.split(r"(\s+)", text)
    return _QUERY_SECRET.sub(_query_value, "".join(_redact_token(t) for t in tokens))


def _redact_token(token: str) -> str:
    start = token.find("://")
    if start < 0:
        return token
    head, rest = token[: start + 3], token[start + 3 :]
    tail = ""
    following = rest.find("://")
    if following >= 0:  # another URL in the same token: it is redacted on its own
        cut = following
        while cut > 0 and (rest[cut - 1].isalnum() or rest[cut - 1] in "+.-"):
            cut -= 1
        rest, tail = rest[:cut], rest[cut:]
    return head + _redact_authority(rest) + _redact_token(tail)


def _redact_authority(rest: str) -> str:
    """``user:password@hosts/...`` with the password hidden; anything else as it is."""
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        user, _, password = rest[:at].partition(":")
        hosts = _PATH.split(rest[at + 1 :], maxsplit=1)[0]
        if _PATH.search(user) or not _HOSTS.fullmatch(hosts):
            continue  # this @ is in a path or a query, not after a userinfo
        if not password.strip("*"):  # none, or hidden already (by us or Django's stars)
            return rest
        return f"{user}:***@{rest[at + 1 :]}"
    return rest


def _query_value(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if SECRET_NAMES.search(name) and value.strip("*"):
        return f"{name}=***"
    return match.group(0)


def redact_value(value: Any) -> Any:
    """A settings value (str, dict, list, tuple) with its secrets hidden, for display.

    Strings are :func:`redact`-ed; dict entries whose key has a secret's name
    (``"password"``, ``"PASSWORD"``) become ``"***"``; other values are left as they are.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: "***" if isinstance(k, str) and SECRET_NAMES.search(k) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def parse_bool(value: object, name: str) -> bool:
    """A boolean given as a bool or as text, read as every declared option is
    (:data:`mailqueue_core.options.BOOLEAN`: the empty string is not a boolean)."""
    from mailqueue_core.options import BOOLEAN

    try:
        return bool(BOOLEAN.parse(value))
    except ValueError as exc:
        raise ConfigurationError(f"option {name!r} {exc}, got {value!r}") from None
