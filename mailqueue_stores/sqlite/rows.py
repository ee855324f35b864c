"""Rows of the SQLite store read into records, whatever an operator or a bug left in them.

SQLite is dynamically typed: a column declared ``REAL`` holds a text if
someone writes ``created = 'yesterday'``, ``attempts = '1.5'`` is stored as the
real 1.5, and a file whose schema lost its ``NOT NULL`` (an edited schema,
another tool) holds NULLs. Nothing here raises on such a row: :func:`read_record`
fills in what it can read, puts placeholders in the rest and says what is
wrong in ``Record.damage``, so that the flusher buries the message with that
reason and the rest of the batch goes on.

Text columns come back as ``str`` decoded with ``surrogateescape`` (see
:func:`decode_text`), so a column that is not valid UTF-8 cannot make
``sqlite3`` raise either; :func:`readable` cleans such a text for display.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from mailqueue_core.store import Record

__all__ = [
    "Row",
    "decode_text",
    "new_id",
    "read_dead",
    "read_record",
    "readable",
    "shown_id",
    "usable_id",
]


def decode_text(raw: bytes) -> str:
    """The ``text_factory`` of the store's connections: never raises on bad UTF-8."""
    return raw.decode("utf-8", "surrogateescape")


def _clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(text: str) -> str:
    """``text`` with bytes that were not UTF-8 shown as U+FFFD."""
    if _clean(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def usable_id(value: object) -> str | None:
    """``value`` if it can address its row again (clean text), else None."""
    if isinstance(value, str) and value and _clean(value):
        return value
    return None


def shown_id(value: object) -> str:
    """An id as read from a row, for display: readable text, whatever its type."""
    return readable(value) if isinstance(value, str) else repr(value)


def new_id() -> str:
    """An id for a row whose own cannot address it again."""
    return uuid.uuid4().hex


def _kind(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        shown = readable(value)
        return f"the text {shown[:40]!r}" if len(shown) <= 40 else f"a text of {len(shown)} chars"
    if isinstance(value, bytes):
        return f"a blob of {len(value)} bytes"
    return f"{type(value).__name__} {value!r}"


def _time(value: object) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class Row:
    """The columns of a queued message as SQLite returned them (any type, or None)."""

    id: str
    due: object
    created: object
    attempts: object
    last_error: object
    data: object


def read_record(row: Row, now: float) -> Record:
    """The record ``row`` holds; ``damage`` says which columns could not be read.

    Placeholders: ``now`` for a time, 0 attempts, no last error, ``b""`` data
    (a text ``data`` keeps its bytes, so that a revived dead letter can still
    be sent if the text was the record).
    """
    problems: list[str] = []
    created = _time(row.created)
    if created is None:
        problems.append(f"created is {_kind(row.created)}")
    due = _time(row.due)
    if due is None:
        problems.append(f"due is {_kind(row.due)}")
    attempts = row.attempts if type(row.attempts) is int else None
    if attempts is None:
        problems.append(f"attempts is {_kind(row.attempts)}")
    data: bytes
    if isinstance(row.data, bytes):
        data = row.data
    elif isinstance(row.data, str):
        data = row.data.encode("utf-8", "surrogateescape")
        problems.append("data is text, not a blob")
    else:
        data = b""
        problems.append(f"data is {_kind(row.data)}")
    last_error: str | None = None
    if isinstance(row.last_error, bytes):
        last_error = row.last_error.decode("utf-8", "replace")
    elif row.last_error is not None:  # a text: TEXT affinity turns numbers into texts
        last_error = readable(str(row.last_error))
    return Record(
        row.id,
        data,
        now if created is None else created,
        now if due is None else due,
        0 if attempts is None else attempts,
        last_error,
        damage="; ".join(problems) or None,
    )


def read_dead(columns: Sequence[object], now: float) -> tuple[Record, str, float]:
    """A dead letter's ``(record, reason, buried)`` from its columns ``id, buried,
    reason, created, due, attempts, last_error, data``, read as :func:`read_record`
    reads a queued row. A burial time that is not a number reads as 0."""
    raw_id, buried, reason, created, due, attempts, last_error, data = columns
    record = read_record(Row(shown_id(raw_id), due, created, attempts, last_error, data), now)
    when = _time(buried)
    why = readable(reason) if isinstance(reason, str) else repr(reason)
    return record, why, 0.0 if when is None else when
