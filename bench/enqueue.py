"""Enqueue latency per message, p50 and p99, beside its floor and its alternatives.

Every subject sends the same prebuilt receipts one at a time through
``backend.send_messages([message])``, as a view does. The subjects measured in
this process take turns in blocks, so that a slow spell of this shared machine
falls on all of them alike. The floor of a store is what no queue can avoid:
encoding the record (``convert.capture`` + ``codec.to_record``, what the
backend does) plus one plain round trip to the same server: a Redis SET, a
memcached set, a SQLite insert and commit (WAL, ``synchronous=FULL`` as the
store), a dict insert for memory.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.mail import EmailMessage, get_connection

from bench.workload import receipt
from mailqueue_core import codec, convert
from mailqueue_core.store import Record

BLOCK = 100
WARM_UP = 50
Send = Callable[[EmailMessage], Any]


def percentiles(seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3, "n": len(seconds)}


def _record(message: EmailMessage) -> Record:
    item = convert.capture(message)
    item.created = item.due = time.time()
    return codec.to_record(item)


def floor(name: str, url: str, directory: Path, synchronous: str = "FULL") -> Send:
    """Encode the record, then one plain round trip to the store's server."""
    if name == "memory":
        table: dict[str, bytes] = {}

        def put(message: EmailMessage) -> None:
            record = _record(message)
            table[record.id] = record.data

        return put
    if name == "sqlite":
        conn = sqlite3.connect(directory / f"floor-{synchronous}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE q (id TEXT PRIMARY KEY, data BLOB, due REAL)")

        def insert(message: EmailMessage) -> None:
            record = _record(message)
            conn.execute("BEGIN")
            conn.execute("INSERT INTO q VALUES (?, ?, ?)", (record.id, record.data, record.due))
            conn.execute("COMMIT")

        return insert
    host, port = url.split("//", 1)[1].split("/")[0].split(":")
    if name == "redis":
        import redis

        client = redis.Redis(host=host, port=int(port))

        def set_redis(message: EmailMessage) -> None:
            record = _record(message)
            client.set(f"floor:{record.id}", record.data)

        return set_redis
    from pymemcache.client.base import Client

    mc = Client((host, int(port)))

    def set_memcached(message: EmailMessage) -> None:
        record = _record(message)
        mc.set(f"floor:{record.id}", record.data)

    return set_memcached


def queueing(url: str) -> Send:
    backend = get_connection("mailqueue_core.backend.EmailBackend", store=url, namespace="enq")
    return lambda message: backend.send_messages([message])


def smtp_direct(port: int) -> Send:
    """Django's SMTP backend as a view uses it: a connection per ``send_mail``."""

    def send(message: EmailMessage) -> None:
        backend = get_connection(
            "django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=port
        )
        backend.send_messages([message])

    return send


def measure(subjects: dict[str, tuple[Send, int]]) -> dict[str, dict[str, float]]:
    """Time each subject's sends, ``n`` messages each, in interleaved blocks."""
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for send, _ in subjects.values():
        for i in range(WARM_UP):
            send(receipt(i))
    total = max(n for _, n in subjects.values())
    messages = [receipt(i) for i in range(total)]
    for start in range(0, total, BLOCK):
        for name, (send, n) in subjects.items():
            for message in messages[start : min(n, start + BLOCK)]:
                t0 = time.perf_counter()
                send(message)
                times[name].append(time.perf_counter() - t0)
    return {name: percentiles(t) for name, t in times.items()}
