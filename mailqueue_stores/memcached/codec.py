"""Typed values kept in memcached items as JSON objects with short keys.

A value class declares each stored field once with :func:`stored` (its JSON key,
the check its value must pass, whether every written item has it); the class
then writes itself (:meth:`Stored.encode`, keys in declaration order) and reads
itself back (:meth:`Stored.parse`), field by field.

Reading never raises: memcached is shared, and an operator, another program or
a bug can delete, cut short or overwrite an item. What cannot be read whole
comes back as the fields that could be read and a list of sentences saying what
is wrong; the value class decides what that makes (a header claimed for burial,
a loss report that still counts).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar

from mailqueue_core.text import printable

Check = Callable[[object], bool]


def number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def count_or_none(v: object) -> bool:
    return v is None or count(v)


def text(v: object) -> bool:
    return isinstance(v, str) and v != ""


def text_or_none(v: object) -> bool:
    return v is None or isinstance(v, str)


def ring_name(v: object) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def stored(key: str, check: Check, *, required: bool = True, default: Any = None) -> Any:
    """A dataclass field kept under ``key``.

    ``required``: every item written has it, so one without it is damaged; an
    optional field is written only when it is not None.
    """
    metadata = {"key": key, "check": check, "required": required}
    if required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_or_none(raw: bytes | None) -> Any:
    """The JSON value of an item, or None when it is gone or not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def as_int(raw: bytes | None) -> int | None:
    """A counter or cursor item's value; None when it is gone or not a number."""
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


# A JSON scalar after a key, for reading what is left of a cut or garbled item.
_SCALAR = re.compile(
    rb'"([a-z]{1,8})":(null|true|false|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|"(?:[^"\\]|\\.)*")'
)


def salvage(raw: bytes) -> dict[str, Any]:
    """The ``"key": scalar`` pairs that can still be read from a damaged item."""
    found: dict[str, Any] = {}
    for match in _SCALAR.finditer(raw):
        name = match.group(1).decode()
        if name not in found:
            found[name] = json.loads(match.group(2))
    return found


def shown(value: object) -> str:
    """A value read from an item, safe and short enough for a message."""
    return printable(repr(value))[:40]


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What :meth:`Stored.parse` could read: field values by attribute name."""

    fields: dict[str, Any]
    problems: list[str]


@dataclasses.dataclass(frozen=True)
class Stored:
    """Base of the value classes kept as JSON items (frozen dataclasses)."""

    #: How a damaged item of this kind is named in messages ("its header").
    called: ClassVar[str] = "it"

    @classmethod
    def _stored_fields(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if "key" in f.metadata]

    def encode(self) -> bytes:
        out: dict[str, Any] = {}
        for f in self._stored_fields():
            value = getattr(self, f.name)
            if f.metadata["required"] or value is not None:
                out[f.metadata["key"]] = value
        return dumps(out)

    @classmethod
    def parse(cls, raw: bytes) -> Parsed:
        """Every field that can be read from ``raw``, and what is wrong with it."""
        problems: list[str] = []
        value = decode_or_none(raw)
        readable = isinstance(value, dict)
        if not readable:
            what = "not JSON" if value is None else "not a JSON object"
            problems.append(f"{cls.called} is unreadable ({what}, {len(raw)} bytes)")
            value = salvage(raw)
        found: dict[str, Any] = {}
        for f in cls._stored_fields():
            key = f.metadata["key"]
            if key not in value:
                if f.metadata["required"] and readable:
                    problems.append(f"{cls.called} has no {key!r}")
            elif f.metadata["check"](value[key]):
                found[f.name] = value[key]
            else:
                problems.append(f"{cls.called} holds {key}={shown(value[key])}")
        return Parsed(found, problems)
