"""The spool's file names and file format (see :mod:`mailqueue_spool.store` for the layout).

A message's state is in its file *name*, so that listing a directory tells
the state of every message without opening any file, and so that a change
of state is one ``os.rename``::

    w,<due>,<stamp>,<created>,<id>          waiting: claimable once due <= now
    c,<expires>,<token>,<created>,<id>      claimed: claimable again once expires <= now
    d,<buried>,<stamp>,<id>                 a dead letter (in ``dead/``)

Times are written with ``repr(float)``, which reads back to the same float,
so a name rebuilt from a :class:`~mailqueue_core.store.Claim` matches the
name the claim was made under. Ids are percent-encoded (they may hold any
character); commas never appear in an encoded id nor in a float's repr.

The stamp (and a token's first 20 digits) orders messages that have the
same due time by arrival, as a FIFO queue would, instead of by their random
ids. It is the clock in nanoseconds, made strictly increasing within a
process; it only breaks ties, it never decides what is due.

A file holds one line of JSON (the record's fields, and for a dead letter its
reason and burial time) followed by the record's data, byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote, unquote

from mailqueue_core.store import Record

__all__ = [
    "MAX_ID_LENGTH",
    "Entry",
    "claimed_name",
    "dead_name",
    "encode_id",
    "header",
    "namespace_dir",
    "new_token",
    "parse_dead_name",
    "parse_queue_name",
    "read",
    "stamp",
    "sync_dir",
    "waiting_name",
    "write_temp",
]

#: Longest percent-encoded id: keeps the longest name (a claim) under the
#: 255 bytes that common filesystems allow.
MAX_ID_LENGTH = 120

_SEP = ","
_VERSION = 1


def _num(value: float) -> str:
    return repr(float(value))


def encode_id(mid: str) -> str:
    """``mid`` as a file-name part; ValueError when it is too long for one."""
    encoded = quote(mid, safe="")
    if not encoded or len(encoded) > MAX_ID_LENGTH:
        raise ValueError(
            f"spool store ids must be 1 to {MAX_ID_LENGTH} characters once percent-encoded, "
            f"got {mid!r}"
        )
    return encoded


def namespace_dir(namespace: str) -> str:
    """A directory name for ``namespace`` that is never ``.``, ``..`` nor a path."""
    encoded = quote(namespace, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


_last_stamp = 0
_stamp_lock = threading.Lock()


def stamp() -> str:
    """An arrival stamp: 20 digits, strictly increasing within this process."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return f"{_last_stamp:020d}"


def new_token() -> str:
    """A claim token: unguessable, and ordered by arrival like a stamp."""
    return f"{stamp()}-{uuid.uuid4().hex[:16]}"


def waiting_name(due: float, created: float, mid: str) -> str:
    return _SEP.join(("w", _num(due), stamp(), _num(created), encode_id(mid)))


def claimed_name(expires: float, token: str, created: float, mid: str) -> str:
    return _SEP.join(("c", _num(expires), token, _num(created), encode_id(mid)))


def dead_name(buried: float, mid: str) -> str:
    return _SEP.join(("d", _num(buried), stamp(), encode_id(mid)))


@dataclasses.dataclass(frozen=True)
class Entry:
    """What a queue file's name says about its message."""

    name: str
    claimed: bool
    at: float
    """When the message can be claimed: its due time, or its lease's expiry."""
    order: str
    """Arrival order among messages with the same ``at``."""
    created: float
    id: str


def parse_queue_name(name: str) -> Entry | None:
    """The entry a queue file name describes; None for a name that is not ours."""
    parts = name.split(_SEP)
    if len(parts) != 5 or parts[0] not in ("w", "c"):
        return None
    try:
        at, created = float(parts[1]), float(parts[3])
    except ValueError:
        return None
    return Entry(name, parts[0] == "c", at, parts[2], created, unquote(parts[4]))


def parse_dead_name(name: str) -> tuple[float, str, str] | None:
    """(burial time, stamp, id) from a dead letter's file name; None for a name not ours."""
    parts = name.split(_SEP)
    if len(parts) != 4 or parts[0] != "d":
        return None
    try:
        return float(parts[1]), parts[2], unquote(parts[3])
    except ValueError:
        return None


def header(record: Record, **extra: Any) -> dict[str, Any]:
    return {
        "v": _VERSION,
        "id": record.id,
        "created": float(record.created),
        "due": float(record.due),
        "attempts": record.attempts,
        "last_error": record.last_error,
        **extra,
    }


def write_temp(directory: str, fields: dict[str, Any], data: bytes, *, fsync: bool) -> str:
    """Write a complete file under a hidden temporary name in ``directory``; return its path.

    Hidden names (a leading dot) are never listed as messages, so the file
    only becomes a message when it is renamed, which is atomic.
    """
    path = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(fields).encode() + b"\n")
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


def read(path: str) -> tuple[Record, dict[str, Any]]:
    """The record in the file at ``path``, and the file's JSON fields.

    Raises ``FileNotFoundError`` when the file is gone, ``ValueError`` when it
    is not a spool file.
    """
    with open(path, "rb") as f:
        raw = f.read()
    line, _, data = raw.partition(b"\n")
    fields = json.loads(line)
    if not isinstance(fields, dict) or fields.get("v") != _VERSION:
        raise ValueError("not a spool file of this version")
    try:
        record = Record(
            id=str(fields["id"]),
            data=data,
            created=float(fields["created"]),
            due=float(fields["due"]),
            attempts=int(fields["attempts"]),
            last_error=fields["last_error"],
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or malformed field: {exc}") from exc
    return record, fields


def sync_dir(directory: str) -> None:
    """Make the renames in ``directory`` durable (POSIX: fsync the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
