"""How the cost of claiming a batch grows with the depth of the queue.

    python -m bench.claim_depth [--depths 1000,100000,1000000] [--store redis|sqlite]
                                [--record-size 1024] [--runs 15] [--batch 100]

For each depth (smallest first) the script tops one namespace up to that many
ready messages with bulk enqueues, then claims ``--batch`` due messages
``--runs`` times, releasing them after each run so the depth stays, and reports
the median claim time and its ratio to the smallest depth. For Redis it starts
its own ``redis-server`` on a free loopback port (no persistence), reports one
PING round trip measured in the same run, and the memory each queued message
costs (``INFO`` used_memory growth per message, and ``MEMORY USAGE`` of one
message's hash plus its share of the sorted sets). For SQLite it reports the
database file's size per message.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailqueue_core.store import Record, Store

FILL_CHUNK = 10_000
LEASE = 300.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_depth", description=__doc__)
    parser.add_argument("--depths", default="1000,100000,1000000")
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    depths = sorted(int(d.replace("_", "")) for d in args.depths.split(","))
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-") as tmp:
        if args.store == "redis":
            run_redis(Path(tmp), depths, args)
        else:
            run_sqlite(Path(tmp), depths, args)


def run_redis(tmp: Path, depths: list[int], args: argparse.Namespace) -> None:
    import redis
    from mirakuru import TCPExecutor

    from mailqueue_stores.redis import RedisStore
    from mailqueue_stores.redis.keys import RedisKeys

    port = _free_port()
    command = ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(tmp), "--save", "", "--appendonly", "no"]
    executor = TCPExecutor(command, host="127.0.0.1", port=port, timeout=30)
    executor.start()
    try:
        raw = redis.Redis(host="127.0.0.1", port=port)
        store = RedisStore(f"redis://127.0.0.1:{port}/0", namespace="bench")
        keys = RedisKeys("bench")
        baseline = raw.info("memory")["used_memory"]

        def extra(depth: int, ids: list[str]) -> dict[str, Any]:
            used = raw.info("memory")["used_memory"] - baseline
            sample = ids[len(ids) // 2]
            hash_bytes = raw.memory_usage(keys.live(sample), samples=0) or 0
            sets = sum(raw.memory_usage(k, samples=5) or 0 for k in (keys.due, keys.created))
            return {
                "ping_us": _median_us(raw.ping, 200),
                "mem_per_msg": used / depth,
                "hash_plus_sets": hash_bytes + sets / depth,
            }

        rows = measure(store, depths, args, extra)
        raw.close()
        store.close()
    finally:
        executor.stop()
    print_table("redis", rows, args, ["ping_us", "mem_per_msg", "hash_plus_sets"])


def run_sqlite(tmp: Path, depths: list[int], args: argparse.Namespace) -> None:
    from mailqueue_stores.sqlite import SQLiteStore

    path = tmp / "bench.db"
    store = SQLiteStore(f"sqlite:///{path}")

    def extra(depth: int, ids: list[str]) -> dict[str, Any]:
        size = sum(p.stat().st_size for p in tmp.glob("bench.db*"))
        return {"file_per_msg": size / depth}

    rows = measure(store, depths, args, extra)
    store.close()
    print_table("sqlite", rows, args, ["file_per_msg"])


def measure(
    store: Store,
    depths: list[int],
    args: argparse.Namespace,
    extra: Callable[[int, list[str]], dict[str, Any]],
) -> list[dict[str, Any]]:
    data = os.urandom(args.record_size)
    now = time.time()
    # Due times spread over the past, oldest first, all ready now.
    first = now - 2 * depths[-1]
    ids: list[str] = []
    rows = []
    for depth in depths:
        started = time.perf_counter()
        while len(ids) < depth:
            n = min(FILL_CHUNK, depth - len(ids))
            chunk = [
                Record(uuid.uuid4().hex, data, first + len(ids) + i, first + len(ids) + i)
                for i in range(n)
            ]
            store.enqueue(chunk)
            ids.extend(r.id for r in chunk)
        fill = time.perf_counter() - started
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            claims = store.fetch_due(now, args.batch, LEASE)
            times.append(time.perf_counter() - t0)
            assert len(claims) == args.batch, "fewer due messages than a batch"
            for claim in claims:
                store.release(claim)
        stats = store.stats(now)
        assert stats.ready == depth, (stats, depth)
        rows.append({"depth": depth, "claim_ms": statistics.median(times) * 1e3, "fill_s": fill})
        rows[-1].update(extra(depth, ids))
        print(f"  depth {depth:>9,}: filled in {fill:.1f} s", flush=True)
    return rows


def print_table(
    name: str, rows: list[dict[str, Any]], args: argparse.Namespace, extra: list[str]
) -> None:
    base = rows[0]["claim_ms"]
    titles = {
        "ping_us": "PING us",
        "mem_per_msg": "used_memory B/msg",
        "hash_plus_sets": "MEMORY USAGE B/msg",
        "file_per_msg": "file B/msg",
    }
    print(
        f"\n{name}: claim {args.batch} of depth, median of {args.runs} runs, "
        f"record {args.record_size} B"
    )
    header = ["depth", f"claim {args.batch} ms", "ratio"] + [titles[k] for k in extra]
    print(" | ".join(f"{h:>18}" for h in header))
    for row in rows:
        cells = [f"{row['depth']:,}", f"{row['claim_ms']:.3f}", f"{row['claim_ms'] / base:.2f}"]
        cells += [f"{row[k]:,.1f}" for k in extra]
        print(" | ".join(f"{c:>18}" for c in cells))


def _median_us(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
