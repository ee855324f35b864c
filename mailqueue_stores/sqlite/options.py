"""The SQLite store's URL and options: the file a ``sqlite:///`` URL names, and what it may set.

The options are declared once, in :class:`SQLiteOptions`, and read through
:func:`mailqueue_core.options.read_options` like every store's; the docs'
table is generated from the same declaration. The path is read by
:func:`parse_location`, which refuses every shape of URL but the two that
SQLAlchemy and dj-database-url read (four slashes: absolute; three: relative)
and shows them, since the others (``sqlite:/x.db``, ``sqlite://x.db``) would
otherwise name a file the user did not mean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from urllib.parse import unquote

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.locations import redact
from mailqueue_core.options import (
    BOOLEAN,
    COUNT,
    SECONDS,
    TEXT,
    Kind,
    choice,
    option,
    optional,
    read_options,
    split_query,
)

__all__ = ["WHAT", "FileLocation", "Permissions", "SQLiteOptions", "parse_location", "read"]

WHAT = "sqlite store"


class Permissions(int):
    """File permissions, shown in octal (``0o600``) in messages and the docs."""

    def __repr__(self) -> str:
        return oct(self)

    __str__ = __repr__


def _number(value: object) -> int | None:
    """An int, or octal text (``0660``, ``0o660``, ``660``); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.lower().removeprefix("0o"), 8)
    return None


def _permissions(value: object) -> Permissions:
    mode = _number(value)
    if mode is None or not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise ValueError(
            "must be file permissions that let the owner read and write, like 0o600 or '0660'"
        )
    if mode & 0o007:
        raise ValueError(
            f"must not give other users access ({oct(mode)}): queued mail holds "
            "password-reset links and the like; share it with a group (0o660) instead"
        )
    return Permissions(mode)


PERMISSIONS = Kind("octal file mode", _permissions)
ALIAS = Kind("Django database alias", TEXT.parse)


@dataclasses.dataclass(frozen=True)
class SQLiteOptions:
    """The SQLite store's options: one declaration for the parser, the errors and the docs."""

    timeout: float = option(
        10.0,
        SECONDS,
        "Seconds a call waits for another process's write lock before it raises "
        "``StoreUnavailable``. Writes take milliseconds, so a wait this long means "
        "something holds the file (a stuck process, an open transaction in the "
        "``sqlite3`` shell).",
    )
    synchronous: str = option(
        "FULL",
        choice("FULL", "NORMAL"),
        "``FULL`` syncs the WAL to disk at every commit; ``NORMAL`` only at checkpoints: "
        "faster, safe against a crash of any process, not of the machine (see `Durability: "
        "what a crash can lose`_).",
    )
    mode: int = option(
        Permissions(0o600),
        PERMISSIONS,
        "The permissions of the queue file and its ``-wal``, ``-shm`` and ``-reserve`` "
        "when the store creates them, whatever the umask; ``0o660`` (``0660`` in a URL) "
        "shares the queue with a group. A mode that gives other users access is refused "
        "(see `Permissions`_).",
    )
    reserve: int = option(
        8 << 20,
        COUNT,
        "Bytes kept free in ``<file>-reserve`` so that flushers can drain a full disk "
        "(8 MiB); ``0`` keeps none (see `A full disk`_).",
    )
    django_database: str | None = option(
        None,
        optional(ALIAS),
        "The alias of the site's own SQLite database when the queue lives in that same "
        "file: enqueues then join the request's transaction (see :doc:`/on-commit`).",
    )
    create: bool = option(
        True,
        BOOLEAN,
        "Create the file and its tables on first use. ``false``: open an existing queue "
        "only, and raise ``StoreUnavailable`` naming the path when there is none (for "
        "commands and monitors that only read, so that a typo never looks like an empty "
        "queue).",
    )


@dataclasses.dataclass(frozen=True)
class FileLocation:
    """The absolute path of the queue file, and how the URL gave it."""

    path: str
    relative: str | None
    """The path as the URL gave it when it was relative (three slashes), else None."""

    @property
    def shown(self) -> str:
        """The path for messages; a relative URL path says what it was resolved against."""
        if self.relative is None:
            return self.path
        return (
            f"{self.path} (the URL's relative path {self.relative!r}, resolved against the "
            "working directory of the process)"
        )


def _after_slashes(location: str) -> str:
    """What follows ``sqlite:///``; any other shape is refused with the two right ones."""
    scheme, colon, rest = location.partition(":")
    if not colon or scheme.lower() != "sqlite":
        raise ConfigurationError(
            f"{WHAT} URL must start with 'sqlite:///', got {redact(location)!r}"
        )
    if "#" in location:
        raise ConfigurationError(
            f"{WHAT} URL {redact(location)!r} holds '#': write it %23 in a file name"
        )
    rest = rest.partition("?")[0]
    if rest.startswith("///"):
        return rest[3:]
    name = rest.lstrip("/")
    if "@" in name.partition("/")[0]:
        name = ""  # a user and host: SQLite has none, and the name may hold a password
    raise ConfigurationError(f"{WHAT} URL {redact(location)!r} is malformed: {_forms(name)}")


def _forms(name: str) -> str:
    """The two right URLs for ``name`` (a placeholder file when it names none)."""
    name = name.lstrip("/")
    if not name:
        name = "path/to/queue.db"
    elif name.endswith("/"):
        name += "queue.db"
    return (
        f"write sqlite:////{name} (four slashes) for the absolute path /{name}, "
        f"or sqlite:///{name} (three) for {name} in the working directory"
    )


def parse_location(location: str) -> tuple[FileLocation, dict[str, str]]:
    """The queue file a ``sqlite:///`` URL names, and the options in its query string."""
    name = unquote(_after_slashes(location))
    if not name or name.endswith("/"):
        raise ConfigurationError(f"{WHAT} URL {redact(location)!r} names no file: {_forms(name)}")
    if name == ":memory:":
        raise ConfigurationError(
            "an in-memory sqlite database is neither shared nor durable: use the memory store"
        )
    _, query = split_query(location, WHAT)
    relative = None if os.path.isabs(name) else name
    return FileLocation(os.path.abspath(name), relative), query


def read(location: str, options: Mapping[str, object]) -> tuple[FileLocation, str, SQLiteOptions]:
    """``(file, namespace, options)`` from a store's location and keyword options."""
    where, query = parse_location(location)
    namespace, declared = read_options(SQLiteOptions, WHAT, query, options)
    return where, namespace, declared
