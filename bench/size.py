"""What one queued receipt costs in each store, beside its record and its rendered size.

M receipts are queued through the backend into a fresh namespace (a fresh file
for SQLite). Redis: growth of ``used_memory`` per message, and ``MEMORY USAGE``
of one message's hash plus its share of the sorted sets; memcached: growth of
the ``bytes`` statistic; SQLite: growth of the database file after a
checkpoint folded the WAL into it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.flush import queue_backlog
from bench.workload import mean, receipt, wire_bytes
from mailqueue_core import codec, convert


def message_sizes(m: int) -> dict[str, float]:
    records, rendered = [], []
    for i in range(m):
        message = receipt(i)
        item = convert.capture(message)
        item.created = item.due = time.time()
        records.append(codec.to_record(item).size)
        rendered.append(len(wire_bytes(message)))
    return {"record": mean(records), "rendered": mean(rendered)}


def redis_size(url: str, m: int) -> dict[str, float]:
    import redis

    from mailqueue_stores.redis.keys import RedisKeys

    client = redis.Redis.from_url(url)
    before = client.info("memory")["used_memory"]
    queue_backlog(url, "size", m)
    used = (client.info("memory")["used_memory"] - before) / m
    keys = RedisKeys("size")
    sample = client.zrange(keys.due, m // 2, m // 2)[0].decode()
    hash_bytes = client.memory_usage(keys.live(sample), samples=0) or 0
    sets = sum(client.memory_usage(k, samples=0) or 0 for k in (keys.due, keys.created))
    client.close()
    return {"used_memory": used, "memory_usage": hash_bytes + sets / m}


def memcached_size(url: str, m: int) -> dict[str, float]:
    from pymemcache.client.base import Client

    host, port = url.split("//", 1)[1].split(":")
    client = Client((host, int(port)))
    before = int(client.stats()[b"bytes"])
    queue_backlog(url, "size", m)
    after = int(client.stats()[b"bytes"])
    client.close()
    return {"bytes": (after - before) / m}


def sqlite_size(directory: Path, m: int) -> dict[str, float]:
    path = directory / "size.db"
    url = f"sqlite:///{path}"
    queue_backlog(url, "size", 1)  # the schema, so that only the messages are counted
    before = _checkpointed_size(path)
    queue_backlog(url, "size2", m)
    return {"file": (_checkpointed_size(path) - before) / m}


def _checkpointed_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def all_sizes(urls: dict[str, str], directory: Path, m: int) -> dict[str, Any]:
    out: dict[str, Any] = {"message": message_sizes(min(m, 200))}
    if "redis" in urls:
        out["redis"] = redis_size(urls["redis"], m)
    if "memcached" in urls:
        out["memcached"] = memcached_size(urls["memcached"], m)
    if "sqlite" in urls:
        out["sqlite"] = sqlite_size(directory, m)
    return out
