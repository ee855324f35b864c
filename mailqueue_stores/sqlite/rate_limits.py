"""Shared rate limits for the SQLite store: token buckets and connection slots.

Each step is one ``BEGIN IMMEDIATE`` transaction, so every process on the
machine sees one bucket (see :mod:`mailqueue_core.ratelimit`).
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["SQLiteLimits"]

_BUCKET = "SELECT tokens, updated FROM mailqueue_buckets WHERE namespace = ? AND name = ?"
_SAVE_BUCKET = "INSERT OR REPLACE INTO mailqueue_buckets VALUES (?, ?, ?, ?)"
_EXPIRE_SLOTS = "DELETE FROM mailqueue_slots WHERE namespace = ? AND name = ? AND expires <= ?"
_COUNT_SLOTS = "SELECT COUNT(*) FROM mailqueue_slots WHERE namespace = ? AND name = ?"
_TAKE_SLOT = "INSERT INTO mailqueue_slots VALUES (?, ?, ?, ?)"
_FREE_SLOT = "DELETE FROM mailqueue_slots WHERE namespace = ? AND name = ? AND token = ?"


class _Transactional(Protocol):
    namespace: str

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SQLiteLimits:
    """Mixed into :class:`~mailqueue_stores.sqlite.SQLiteStore`."""

    def take_token(
        self: _Transactional, bucket: str, rate: float, burst: float, now: float
    ) -> float:
        with self._transaction() as conn:
            row = conn.execute(_BUCKET, (self.namespace, bucket)).fetchone()
            tokens, then = row if row else (burst, now)
            tokens = min(burst, tokens + max(0.0, now - then) * rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / rate
            conn.execute(_SAVE_BUCKET, (self.namespace, bucket, tokens, now))
        return wait

    def acquire_slot(
        self: _Transactional, name: str, limit: int, lease: float, now: float
    ) -> str | None:
        with self._transaction() as conn:
            conn.execute(_EXPIRE_SLOTS, (self.namespace, name, now))
            (held,) = conn.execute(_COUNT_SLOTS, (self.namespace, name)).fetchone()
            if held >= limit:
                return None
            token = uuid.uuid4().hex
            conn.execute(_TAKE_SLOT, (self.namespace, name, token, now + lease))
        return token

    def release_slot(self: _Transactional, name: str, token: str) -> None:
        with self._transaction() as conn:
            conn.execute(_FREE_SLOT, (self.namespace, name, token))
