"""Where the memcached store keeps what: item keys, due-time buckets, item values.

Every key starts with ``mq:<namespace>:`` so two namespaces never share an item.
A namespace or id that is not plain ``[A-Za-z0-9_.-]`` (at most 64 characters)
is replaced by ``~`` and a SHA-256 prefix, so every key is printable ASCII
without spaces and far below memcached's 250-byte limit; ``~`` cannot occur in
a plain part, so a hashed part never collides with a plain one.

Every item of a message lives on its home server (see
:mod:`mailqueue_stores.memcached_shard`); each server holds these items for
the messages it is home to (see ``docs/stores/memcached.rst`` for the design):

``epoch``            marker whose disappearance means the server was emptied
``live``             count of queued messages (one server only: what a wipe took)
``low`` / ``top``    lowest bucket that may hold live pointers / highest bucket used
``t:<ring>``         tail counter of a ring: slots handed out so far (``incr``)
``h:<ring>``         head of a ring: every slot at or below it is finished
``p:<ring>:<n>``     slot ``n`` of a ring: a message id (time buckets, dead ring,
                     journal rings) or a loss report (lost ring)
``m:<id>``           header of a queued message (JSON, changed only by ``cas``)
``z:<id>``           header of a dead letter
``d:<id>:<gen>``     the record's data, written once; ``gen`` tells incarnations apart

and, as the witness of another server ``S`` (several servers only):

``jk:<S>``           the epochs of ``S`` whose journal rings are kept here
``p:j<S>.<epoch>:<n>``  journal: the id of every message ``S`` holds, per epoch of ``S``
``s:<id>``           a message of ``S`` delivered while ``S`` could not be told
``l:<id>``           this id was reported lost (so it is reported once)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from mailqueue_core.store import Record
from mailqueue_core.text import printable

#: Seconds of due time per bucket ring.
BUCKET_WIDTH = 10.0
#: Writers never index into a bucket older than ``wall clock - GRACE / 2``, and
#: the low cursor never passes ``wall clock - GRACE``: a write that takes less than
#: half the grace (with clocks in sync) cannot land behind the cursor.
GRACE = 120.0
DEAD_RING = "x"
LOST_RING = "y"

_PLAIN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def key_part(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def bucket_of(t: float) -> int:
    return int(t // BUCKET_WIDTH)


def place(due: float, wall: float) -> int:
    """The bucket a message due at ``due`` is indexed in, written at ``wall``."""
    return max(bucket_of(due), bucket_of(wall - GRACE / 2))


def lowest_open_bucket(wall: float) -> int:
    """The low cursor may not pass this bucket: writers may still add to it."""
    return bucket_of(wall - GRACE)


class Keys:
    def __init__(self, namespace: str) -> None:
        p = f"mq:{key_part(namespace)}:"
        self.prefix = p
        self.epoch = p + "epoch"
        self.live = p + "live"
        self.low = p + "low"
        self.top = p + "top"

    def tail(self, ring: int | str) -> str:
        return f"{self.prefix}t:{ring}"

    def head(self, ring: int | str) -> str:
        return f"{self.prefix}h:{ring}"

    def slot(self, ring: int | str, n: int) -> str:
        return f"{self.prefix}p:{ring}:{n}"

    def header(self, mid: str) -> str:
        return f"{self.prefix}m:{key_part(mid)}"

    def dead(self, mid: str) -> str:
        return f"{self.prefix}z:{key_part(mid)}"

    def data(self, mid: str, gen: str) -> str:
        return f"{self.prefix}d:{key_part(mid)}:{gen}"

    def wipe(self, server: str, token: str) -> str:
        return f"{self.prefix}w:{key_part(server)}:{token}"

    def journal_ring(self, server: str, epoch: str) -> str:
        return f"j{key_part(server)}.{key_part(epoch)}"

    def journals(self, server: str) -> str:
        return f"{self.prefix}jk:{key_part(server)}"

    def sent(self, mid: str) -> str:
        return f"{self.prefix}s:{key_part(mid)}"

    def reported(self, mid: str) -> str:
        return f"{self.prefix}l:{key_part(mid)}"


def new_gen() -> str:
    return secrets.token_hex(6)


def encode(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_or_none(raw: bytes | None) -> Any:
    """The JSON value of an item, or None when it is gone or not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def as_int(raw: bytes | None, default: int) -> int:
    """A counter or cursor item's value; ``default`` when it is gone or not a number."""
    try:
        return default if raw is None else int(raw)
    except ValueError:
        return default


def checksum(data: bytes) -> int:
    return zlib.crc32(data)


def header_for(record: Record, slot: str, gen: str, journal: str | None = None) -> dict[str, Any]:
    """A queued message's header: everything but the data, plus its claim state."""
    return {
        "id": record.id,
        "created": record.created,
        "due": record.due,
        "attempts": record.attempts,
        "err": record.last_error,
        "size": len(record.data),
        "sum": checksum(record.data),
        "gen": gen,
        "ptr": slot,  # the one slot that indexes this message
        "pend": None,  # a slot being written by a requeue in progress
        "tok": None,
        "exp": 0.0,
        "j": journal,  # its journal slot on the witness server
    }


def record_from(header: Mapping[str, Any], data: bytes, damage: str | None = None) -> Record:
    return Record(
        id=header["id"],
        data=data,
        created=header["created"],
        due=header["due"],
        attempts=header["attempts"],
        last_error=header["err"],
        damage=damage or header.get("damage"),
    )


def dead_header(fields: Mapping[str, Any], slot: str, buried: float) -> dict[str, Any]:
    """A dead letter's header from a message's header (or ``header_for``'s output)."""
    kept = ("id", "created", "due", "attempts", "err", "size", "sum", "gen", "j")
    return {**{k: fields.get(k) for k in kept}, "ptr": slot, "buried": buried}


def known_facts(header: Mapping[str, Any]) -> dict[str, Any]:
    """What a loss report keeps of a message: everything but its data."""
    return {k: header.get(k) for k in ("id", "created", "due", "attempts", "err", "size")}


# -- reading headers that may have been damaged ------------------------------------
#
# A header is written only by this store, but memcached is a shared cache: an
# operator, another program or a bug can delete, truncate or overwrite it. The
# claim path must not stop on that, so a header is checked field by field, and
# what can be read of a damaged one is kept.


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _count_or_none(v: object) -> bool:
    return v is None or _count(v)


def _text(v: object) -> bool:
    return isinstance(v, str) and v != ""


def _text_or_none(v: object) -> bool:
    return v is None or isinstance(v, str)


def _ring(v: object) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


Check = Callable[[object], bool]

_COMMON: dict[str, Check] = {
    "id": _text,
    "created": _number,
    "due": _number,
    "attempts": _count,
    "err": _text_or_none,
    "size": _count_or_none,  # None: not known (read from a damaged header)
    "gen": _text,
    "ptr": _text,
}
#: Fields every queued message's header has, and what each must hold.
LIVE_FIELDS: dict[str, Check] = {
    **_COMMON,
    "pend": _text_or_none,
    "tok": _text_or_none,
    "exp": _number,
    "ring": _ring,
}
#: Fields every dead letter's header has.
DEAD_FIELDS: dict[str, Check] = {**_COMMON, "buried": _number}
#: Fields written by some versions or some paths only.
OPTIONAL_FIELDS: dict[str, Check] = {
    "old": _text_or_none,
    "sum": _count_or_none,
    "j": _text_or_none,
    "damage": _text_or_none,
}

# A JSON scalar after a key, for reading what is left of a cut or garbled header.
_SCALAR = re.compile(
    rb'"([a-z]{1,8})":(null|true|false|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|"(?:[^"\\]|\\.)*")'
)


def _shown(value: object) -> str:
    return printable(repr(value))[:40]


def salvage(raw: bytes) -> dict[str, Any]:
    """The ``"key": scalar`` pairs that can still be read from a damaged header."""
    found: dict[str, Any] = {}
    for match in _SCALAR.finditer(raw):
        name = match.group(1).decode()
        if name not in found:
            found[name] = json.loads(match.group(2))
    return found


def check_header(
    raw: bytes, mid: str, fields: Mapping[str, Check], placeholders: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The header stored as ``raw`` for message ``mid``, and what is wrong with it.

    A whole header comes back as stored, with None. A damaged one comes back
    with every field it could read and ``placeholders`` for the others, and a
    sentence saying what is wrong.
    """
    problems: list[str] = []
    value = decode_or_none(raw)
    readable = isinstance(value, dict)
    if not readable:
        what = "not JSON" if value is None else "not a JSON object"
        problems.append(f"its header is unreadable ({what}, {len(raw)} bytes)")
        value = salvage(raw)
    header: dict[str, Any] = {}
    for name, valid in (*fields.items(), *OPTIONAL_FIELDS.items()):
        if name not in value:
            if name in fields:
                if readable:
                    problems.append(f"its header has no {name!r}")
                header[name] = placeholders.get(name)
        elif valid(value[name]):
            header[name] = value[name]
        else:
            problems.append(f"its header holds {name}={_shown(value[name])}")
            header[name] = placeholders.get(name)
    if header["id"] != mid:
        if _text(header["id"]):
            problems.append(f"its header names another message ({_shown(header['id'])})")
        header["id"] = mid
    if not problems:
        return value, None
    return header, "; ".join(problems)


def tombstone_in(raw: bytes) -> dict[str, Any] | None:
    """The tombstone a header item holds (see ``memcached_scan.tombstone``), or None."""
    value = decode_or_none(raw)
    if isinstance(value, dict) and value.get("done") is True:
        return value
    return None
