"""Cursors for :meth:`mailqueue_core.store.Store.browse`: where a page ended.

Most stores order a state by a time and then an id, so a cursor is that pair,
written as compact JSON: a store can use these two functions and needs no
format of its own. The text is opaque to callers; a cursor that does not
parse raises :class:`ValueError`, as the contract asks.
"""

from __future__ import annotations

import json
import math

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(key: float, record_id: str) -> str:
    """The cursor after the record ``record_id`` sorted at ``key``."""
    return json.dumps([key, record_id], separators=(",", ":"))


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(key, record_id)`` of a cursor made by :func:`encode_cursor`."""
    try:
        key, record_id = json.loads(cursor)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cursor of this queue: {cursor[:80]!r}") from exc
    if (
        not isinstance(key, (int, float))
        or isinstance(key, bool)
        or not math.isfinite(key)
        or not isinstance(record_id, str)
    ):
        raise ValueError(f"not a cursor of this queue: {cursor[:80]!r}")
    return float(key), record_id
