"""Enqueue through the site's own database connection (the SQLite store's ``django_database``).

When the queue lives in the site's SQLite database file, an enqueue made with
Django's connection is part of the request's transaction: mail sent inside a
transaction is stored when it commits and never when it rolls back, with no
window between the commit and the enqueue. The enqueue's wake-up joins the
same transaction, so the flushers wake when the site commits (and not for a
rollback). Everything else (claims, acks, the flusher and its waits for
mail) uses the store's own connections as usual.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_stores.sqlite import schema as sql
from mailqueue_stores.sqlite.wake_ups import WAKE

__all__ = ["enqueue_in_site_transaction"]

_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table'"
    " AND name IN ('mailqueue_queue', 'mailqueue_wakes')"
)
_WAKES_DDL = next(statement for statement in sql.DDL if "mailqueue_wakes" in statement)


def _connection(alias: str, path: str) -> Any:
    from django.db import connections

    try:
        connection = connections[alias]
    except Exception as exc:  # ConnectionDoesNotExist, or Django not configured
        raise ConfigurationError(f"sqlite store: no Django database {alias!r}: {exc}") from exc
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or os.path.abspath(name) != path:
        raise ConfigurationError(
            f"sqlite store option django_database={alias!r} needs that database to be "
            f"the SQLite file of the store ({path}); it is {connection.vendor} {name!r}"
        )
    return connection


def enqueue_in_site_transaction(
    alias: str, path: str, namespace: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (for ``schema.ENQUEUE``) with Django's connection ``alias``
    and wake the flushers of ``namespace`` when it commits."""
    import sqlite3

    from django.db import DatabaseError

    connection = _connection(alias, path)
    try:
        with connection.cursor() as cursor:
            # Looked at every time: tables created inside a transaction that
            # rolled back are gone again. CREATE joins the transaction too.
            cursor.execute(_TABLES)
            tables = {name for (name,) in cursor.fetchall()}
            if "mailqueue_queue" not in tables:
                for statement in sql.DDL:
                    cursor.execute(statement)
                cursor.execute(sql.SET_VERSION_IF_MISSING, (str(sql.SCHEMA_VERSION),))
            elif "mailqueue_wakes" not in tables:
                # A queue made before wake-ups that no store's own connection
                # opened since: only the small table, never an index of a deep
                # queue inside a request.
                cursor.execute(_WAKES_DDL)
            cursor.executemany(sql.ENQUEUE, rows)
            cursor.execute(WAKE, (namespace, namespace))
    except (DatabaseError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"sqlite store {path} (through {alias!r}): {exc}") from exc
