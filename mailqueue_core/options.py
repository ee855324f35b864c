"""Declared options: the one way a store or transport reads its URL query and ``OPTIONS``.

A plugin declares its options once, as a frozen dataclass whose fields are
made with :func:`option` (a default, a :class:`Kind` that parses and checks the
value, and a line of documentation)::

    @dataclasses.dataclass(frozen=True)
    class SpoolOptions:
        fsync: bool = option(True, BOOLEAN, "fsync files and directories after each change")

    namespace, opts = read_options(SpoolOptions, "spool store", query, options)

:func:`read_options` merges the URL query (text) and ``OPTIONS`` (Python
values) through that table: ``namespace`` is taken out for
:class:`~mailqueue_core.store.Store`; an unknown option is a
:class:`~mailqueue_core.errors.ConfigurationError` that lists the valid ones
and suggests the nearest; a value of the wrong kind is an error naming where it
was given (a secret's value is never shown); an option given in both places is
read from ``OPTIONS``, as keyword arguments win over a URL everywhere else
(kombu's transport options, a store built again in another namespace).
The docs' option tables are generated from the same declarations
(:func:`describe`), so the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from mailqueue_core.errors import ConfigurationError

__all__ = [
    "BOOLEAN",
    "COUNT",
    "MAPPING",
    "POSITIVE_INT",
    "SECONDS",
    "TEXT",
    "Kind",
    "OptionDoc",
    "choice",
    "describe",
    "option",
    "optional",
    "read_declared",
    "read_options",
    "split_query",
]

T = TypeVar("T")

_SECRET = re.compile(r"pass|secret|token|key", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one option's value is read: ``parse`` raises ValueError saying what it wants."""

    name: str
    parse: Callable[[object], Any]
    in_url: bool = True
    """False for values a URL query cannot hold (dicts, lists): OPTIONS only."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be true or false (also 1/0, yes/no, on/off)")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _seconds(value: object) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError("must be seconds >= 0")
    return number


def _whole(value: object, least: int) -> int:
    number = _number(value)
    if number != int(number) or number < least:
        raise ValueError(f"must be a whole number >= {least}")
    return int(number)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a dict")
    return dict(value)


BOOLEAN = Kind("boolean", _boolean)
SECONDS = Kind("seconds", _seconds)
COUNT = Kind("integer >= 0", lambda v: _whole(v, 0))
POSITIVE_INT = Kind("integer >= 1", lambda v: _whole(v, 1))
TEXT = Kind("text", _text)
MAPPING = Kind("dict", _mapping, in_url=False)


def choice(*values: str) -> Kind:
    """One of ``values``, matched without regard to case, returned as declared."""
    by_lower = {v.lower(): v for v in values}

    def parse(value: object) -> str:
        if isinstance(value, str) and value.lower() in by_lower:
            return by_lower[value.lower()]
        raise ValueError(f"must be one of {', '.join(values)}")

    return Kind(" | ".join(values), parse)


def optional(kind: Kind) -> Kind:
    """``kind``, or None (given as None in OPTIONS; a URL cannot say None)."""
    return Kind(
        f"{kind.name} or None", lambda v: None if v is None else kind.parse(v), kind.in_url
    )


def option(default: Any, kind: Kind, doc: str) -> Any:
    """A dataclass field declaring one option."""
    metadata = {"kind": kind, "doc": doc}
    if isinstance(default, (dict, list, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionDoc:
    """One row of a plugin's option table, for the docs and for error messages."""

    name: str
    kind: str
    default: Any
    doc: str
    in_url: bool


def describe(declared: type[Any]) -> list[OptionDoc]:
    """The option table of a declaration class, ``namespace`` first."""
    rows = [
        OptionDoc(
            "namespace",
            "text",
            "default",
            "keeps this site's mail apart from others on the same server",
            True,
        )
    ]
    for field in dataclasses.fields(declared):
        kind: Kind = field.metadata["kind"]
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        rows.append(OptionDoc(field.name, kind.name, default, field.metadata["doc"], kind.in_url))
    return rows


def split_query(location: str, what: str) -> tuple[str, dict[str, str]]:
    """``location`` without its query, and the query as a dict (a key given twice is an error)."""
    # Cut at the "?" rather than rebuild with urlunsplit, which turns an empty
    # host into no host for schemes it does not know (sqlite:////abs -> sqlite://abs).
    bare, _, text = location.partition("?")
    first = text.split("&", 1)[0].split("=", 1)[0]
    if "@" in first or "/" in first:
        # "redis://u:pw?x@host": a "?" in the password, not a query; never echo it.
        raise ConfigurationError(
            f"{what}: the URL's user or password holds a '?': percent-encode it "
            "(urllib.parse.quote(password, safe='')) or give it in OPTIONS"
        )
    query: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in query:
            raise ConfigurationError(f"{what}: the URL gives {key!r} more than once")
        query[key] = value
    return bare, query


def _shown(name: str, value: object) -> str:
    return "'***'" if _SECRET.search(name) else repr(value)


def read_options(
    declared: type[T],
    what: str,
    query: Mapping[str, str],
    options: Mapping[str, object],
) -> tuple[str, T]:
    """``(namespace, declared(...))`` from a URL query and OPTIONS (OPTIONS win).

    For a store: ``namespace`` is valid beside the declared options and taken
    out. ``what`` names the plugin in messages ("redis store").
    """
    values = _read(declared, what, query, options, {"namespace": TEXT})
    namespace = values.pop("namespace", "default")
    return namespace, declared(**values)


def read_declared(
    declared: type[T],
    what: str,
    query: Mapping[str, str],
    options: Mapping[str, object],
) -> T:
    """``declared(...)`` from a URL query and OPTIONS (OPTIONS win), for a transport."""
    return declared(**_read(declared, what, query, options, {}))


def _read(
    declared: type[Any],
    what: str,
    query: Mapping[str, str],
    options: Mapping[str, object],
    extra: Mapping[str, Kind],
) -> dict[str, Any]:
    kinds: dict[str, Kind] = dict(extra)
    for field in dataclasses.fields(declared):
        kinds[field.name] = field.metadata["kind"]
    for source, given in (("URL", query), ("OPTIONS", options)):
        for name in given:
            if name not in kinds:
                near = difflib.get_close_matches(name, kinds, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigurationError(
                    f"{what}: unknown option {name!r} in the {source}{hint}; "
                    f"valid options: {', '.join(sorted(kinds))}"
                )
            if source == "URL" and not kinds[name].in_url:
                raise ConfigurationError(
                    f"{what}: option {name!r} cannot be given in the URL; put it in OPTIONS"
                )
    values: dict[str, Any] = {}
    for name, kind in kinds.items():
        for source, given in (("URL", query), ("OPTIONS", options)):
            if name not in given:
                continue
            try:
                values[name] = kind.parse(given[name])
            except ValueError as exc:
                raise ConfigurationError(
                    f"{what}: option {name!r} (in the {source}) {exc}, "
                    f"got {_shown(name, given[name])}"
                ) from None
    return values
