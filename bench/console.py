"""The console's reads on a deep queue: pages of ``browse()`` and ``get()`` at 1,000,000 messages.

    python -m bench console [--messages 1000000] [--stores sqlite,redis] [--pages 2000]
                            [--repeats 200] [--gets 1000] [--json FILE] [--rst FILE] [--tiny]

For each store the run fills one namespace with ``--messages`` records of 2 KB in
bulk enqueues of 10,000 (as :mod:`bench.claim_depth` does): 1% scheduled, 1% dead
(buried through ``add_dead``), the rest ready, due a second apart in the past;
then it claims a hundred of the ready ones for an hour (in flight) and a hundred
with a lease that ran out long ago (stuck). It times with ``time.perf_counter``:

- the first page (50) of each state, oldest first and newest first, ``--repeats``
  times each;
- a walk of ``--pages`` consecutive pages of 50 from the start of the ready
  records, following the cursor;
- a page deep in the queue: a walk with pages of 1,000 to the middle of the
  ready records, then ``--repeats`` consecutive pages of 50 from there, each
  in turn with the next page of a walk from the start: the ratio of the two
  says what depth costs;
- ``get()`` of ``--gets`` ids drawn at random from every state;

and beside them, interleaved with them so that a slow spell of the machine falls
on both, the physical limit of one read: one Redis ``PING`` round trip; for
SQLite one ``SELECT`` of one row by its primary key on a connection of its own;
for the memory store one dict lookup. Every figure is p50 and p99, with the
ratio of its p50 to the limit's. ``--stores`` takes ``memory`` too, whose pages
sort the whole state (fine for tests, not for a million). A store that does not
declare the ``browse`` capability yet gets a row that says so.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.claim_depth import FILL_CHUNK
from bench.enqueue import percentiles as _percentiles
from bench.servers import Redis
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Capability, Page, Record, State, Store

CHOICES = ("memory", "sqlite", "redis")
PAGE = 50
DEEP_PAGE = 1_000
DATA_SIZE = 2_048
HELD = 100
"""Records in flight and stuck each: states a page may scan, kept small as in life."""
EVERY = 100
"""One record in EVERY is scheduled and one is dead."""
LEASE = 3_600.0
NAMESPACE = "console"
HEADER = ["store", "subject", "result", "compared", "note"]
LIMIT_NAMES = {
    "memory": ("dict lookup", "dict"),
    "sqlite": ("SELECT one row by key", "SELECT"),
    "redis": ("PING round trip", "PING"),
}

Row = report.Row


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench console", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="queue depth")
    parser.add_argument("--stores", default="sqlite,redis", help=f"of {', '.join(CHOICES)}")
    parser.add_argument("--pages", type=int, default=2_000, help="pages walked from the start")
    parser.add_argument("--repeats", type=int, default=200, help="timings of each first page")
    parser.add_argument("--gets", type=int, default=1_000, help="get() of random ids")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--rst", type=Path, help="write the table as a reStructuredText table")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' run (for the tests)")
    return parser


def _progress(text: str) -> None:
    print(f"bench console: {text}", file=sys.stderr, flush=True)


@dataclass
class Filled:
    """What :func:`fill` put in the store."""

    seconds: float
    ids: list[str] = field(default_factory=list)
    """Every id, whatever its state."""
    ready: list[str] = field(default_factory=list)
    """Ids enqueued ready (the claimed ones among them)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Records of each state at ``now``, as the store's ``stats()`` counts them."""


def fill(store: Store, n: int, now: float) -> Filled:
    """Fill ``store`` with ``n`` records, at ``now``, in the mix the module docstring gives."""
    data = os.urandom(DATA_SIZE // 2).hex().encode()
    first = now - n - EVERY  # due a second apart, the last one well before now
    filled = Filled(0.0)
    started = time.perf_counter()
    for start in range(0, n, FILL_CHUNK):
        queued: list[Record] = []
        dead: list[Record] = []
        for i in range(start, min(n, start + FILL_CHUNK)):
            mid = uuid.uuid4().hex
            filled.ids.append(mid)
            if i % EVERY == EVERY // 2:
                queued.append(Record(mid, data, first + i, now + 60 + i))
            elif i % EVERY == EVERY - 1:
                error = "550 5.1.1 mailbox unknown"
                dead.append(Record(mid, data, first + i, first + i, 3, error))
            else:
                queued.append(Record(mid, data, first + i, first + i))
                filled.ready.append(mid)
        store.enqueue(queued)
        if dead:
            # Burial times follow the chunks, so dead letters have an order of their own.
            store.add_dead(dead, first + start)
    held = min(HELD, n // EVERY)
    store.fetch_due(now, held, LEASE)  # the oldest ready ones, held for an hour
    # The next oldest, claimed back then with a lease that ran out long before now.
    stuck_at = first + 3 * held
    store.fetch_due(stuck_at, held, 1.0)
    filled.seconds = time.perf_counter() - started
    stats = store.stats(now)
    filled.counts = {
        State.READY.value: stats.ready,
        State.SCHEDULED.value: stats.scheduled,
        State.IN_FLIGHT.value: stats.in_flight,
        State.STUCK.value: stats.stuck,
        State.DEAD.value: stats.dead,
    }
    return filled


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 in ms; one sample is its own p50 and p99 (a tiny run walks one page)."""
    return _percentiles(seconds * 2 if len(seconds) == 1 else seconds)


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Reader:
    """Times the store's reads at one ``now``, each right after one read of the limit."""

    def __init__(self, store: Store, now: float, limit: Callable[[], object]) -> None:
        self.store, self.now, self.limit = store, now, limit
        self.limit_times: list[float] = []

    def beside(self, since: int, figures: dict[str, Any]) -> dict[str, Any]:
        """``figures`` with the limit's median over the reads made since ``since``
        (a length of :attr:`limit_times`), the moments those figures were taken in."""
        return {**figures, "limit_ms": statistics.median(self.limit_times[since:]) * 1e3}

    def page(
        self, state: State, cursor: str | None, limit: int = PAGE, newest_first: bool = False
    ) -> tuple[float, Page]:
        self.limit_times.append(_seconds(self.limit))
        started = time.perf_counter()
        page = self.store.browse(
            state, self.now, limit=limit, cursor=cursor, newest_first=newest_first
        )
        seconds = time.perf_counter() - started
        if any(entry.state is not state for entry in page.entries):
            raise AssertionError(f"browse({state.value}) listed a record of another state")
        return seconds, page

    def get(self, record_id: str) -> float:
        self.limit_times.append(_seconds(self.limit))
        started = time.perf_counter()
        entry = self.store.get(record_id, self.now)
        seconds = time.perf_counter() - started
        if entry is None:
            raise AssertionError(f"get() did not find {record_id}")
        return seconds


def measure(reader: Reader, filled: Filled, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for state, newest in itertools.product(State, (False, True)):
        since, times = len(reader.limit_times), []
        for _ in range(args.repeats):
            seconds, page = reader.page(state, None, newest_first=newest)
            times.append(seconds)
        name = f"{'newest' if newest else 'first'} page, {state.value}"
        out[name] = reader.beside(since, {**percentiles(times), "entries": len(page.entries)})
    out["walk"] = _walk(reader, args.pages)
    out["deep"], out["to the middle"] = _deep(reader, filled, args.repeats)
    rng = random.Random(args.seed)
    ids = rng.sample(filled.ids, min(args.gets, len(filled.ids)))
    since = len(reader.limit_times)
    out["get"] = reader.beside(since, percentiles([reader.get(mid) for mid in ids]))
    out["limit"] = percentiles(reader.limit_times)
    return out


def _walk(reader: Reader, pages: int) -> dict[str, Any]:
    times: list[float] = []
    cursor, walked, since = None, 0, len(reader.limit_times)
    for _ in range(pages):
        seconds, page = reader.page(State.READY, cursor)
        times.append(seconds)
        walked += len(page.entries)
        cursor = page.cursor
        if cursor is None:
            break
    return reader.beside(since, {**percentiles(times), "pages": len(times), "walked": walked})


def _deep(reader: Reader, filled: Filled, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pages of 50 from the middle of the ready records, and the walk that got there."""
    middle = filled.counts[State.READY.value] // 2
    big: list[float] = []
    cursor, walked, since = None, 0, len(reader.limit_times)
    while walked < middle:
        seconds, page = reader.page(State.READY, cursor, limit=DEEP_PAGE)
        big.append(seconds)
        walked += len(page.entries)
        cursor = page.cursor
        if cursor is None:
            raise AssertionError(f"the ready records ended at {walked:,}, before the middle")
    to_middle = {**percentiles(big), "pages": len(big), "seconds": sum(big)}
    to_middle = reader.beside(since, to_middle)
    at, since = walked, len(reader.limit_times)
    times: list[float] = []
    start: list[float] = []
    from_start: str | None = None
    for _ in range(max(2, repeats)):
        # In turn with a page of a walk from the start: both read records that no
        # page read just before (a first page read again and again sits in the
        # store's cache), and a slow spell of the machine falls on both alike.
        seconds, page = reader.page(State.READY, from_start)
        start.append(seconds)
        from_start = page.cursor
        seconds, page = reader.page(State.READY, cursor)
        times.append(seconds)
        walked += len(page.entries)
        cursor = page.cursor
        if cursor is None or from_start is None:
            break
    deep = {**percentiles(times), "at": at, "pages": len(times), "start": percentiles(start)}
    return reader.beside(since, deep), to_middle


@contextmanager
def limit_read(name: str, url: str, filled: Filled, seed: int) -> Iterator[Callable[[], object]]:
    """The physical limit of one read from the store ``name`` at ``url``."""
    rng = random.Random(seed)
    ids = itertools.cycle(rng.sample(filled.ready, min(1_000, len(filled.ready))))
    if name == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            yield client.ping
        finally:
            client.close()
    elif name == "sqlite":
        # The store's own table and primary key, on a connection of its own.
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        query = "SELECT * FROM mailqueue_queue WHERE namespace = ? AND id = ?"
        try:
            yield lambda: conn.execute(query, (NAMESPACE, next(ids))).fetchone()
        finally:
            conn.close()
    else:
        table = dict.fromkeys(filled.ids)
        yield lambda: table.get(next(ids))


def _why_not(store: Store) -> str | None:
    if Capability.BROWSE not in store.capabilities:
        return f"{type(store).__name__} does not declare the 'browse' capability (yet)"
    try:
        store.browse(State.READY, time.time(), limit=1)
    except NotImplementedError as exc:
        return f"browse() not implemented: {exc}"
    return None


def run_store(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    with make_store(url, namespace=NAMESPACE) as store:
        why = _why_not(store)
        if why is not None:
            return {"missing": why}
        now = time.time()
        _progress(f"{name}: filling {args.messages:,} records")
        filled = fill(store, args.messages, now)
        _progress(f"{name}: filled in {filled.seconds:.1f} s {filled.counts}; measuring")
        with limit_read(name, url, filled, args.seed) as limit:
            results = measure(Reader(store, now, limit), filled, args)
        results["fill"] = {"seconds": filled.seconds, "counts": filled.counts}
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.tiny:
        args.messages, args.pages, args.repeats, args.gets = 2_000, 20, 5, 50
    if args.messages < 1_000:
        raise SystemExit("--messages: at least 1000, so that every state has records")
    if min(args.pages, args.repeats, args.gets) < 1:
        raise SystemExit("--pages, --repeats and --gets: at least 1")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(stores) - set(CHOICES))
    if unknown:
        raise SystemExit(f"--stores: unknown {', '.join(unknown)}; choose from {CHOICES}")
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-") as tmp, ExitStack() as stack:
        redis_server = stack.enter_context(Redis(Path(tmp))) if "redis" in stores else None
        urls = {
            "memory": f"memory://{NAMESPACE}",
            "sqlite": f"sqlite:///{Path(tmp) / 'console.db'}",
            "redis": redis_server.url if redis_server else "",
        }
        results: dict[str, Any] = {"meta": _meta(redis_server), "stores": {}}
        for name in stores:
            results["stores"][name] = run_store(name, urls[name], args)
    return results


def _meta(redis_server: Redis | None) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "redis": redis_server.version() if redis_server else "-",
        "nproc": os.cpu_count() or 1,
        "cpu": cpu,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _ms(got: dict[str, Any]) -> str:
    return f"p50 {got['p50_ms']:.3f} ms  p99 {got['p99_ms']:.3f} ms"


def store_rows(name: str, got: dict[str, Any]) -> list[Row]:
    if "missing" in got:
        return [[name, "all", got["missing"], "", ""]]
    long_name, short = LIMIT_NAMES[name]

    def row(subject: str, figures: dict[str, Any], note: str = "") -> Row:
        beside = figures["limit_ms"]
        ratio = figures["p50_ms"] / beside if beside else 0.0
        return [name, subject, _ms(figures), f"{ratio:,.1f}x {short}", note]

    counts = got["fill"]["counts"]
    rows = [[name, f"limit: {long_name}", _ms(got["limit"]), "", "one before every read below"]]
    for state in State:
        for which in ("first", "newest"):
            figures = got[f"{which} page, {state.value}"]
            note = f"{figures['entries']} of {counts[state.value]:,}"
            subject = "first page" if which == "first" else "first page, newest first"
            rows.append(row(f"{subject}, {state.value}", figures, note))
    walk = got["walk"]
    note = f"{walk['pages']:,} pages, {walk['walked']:,} records"
    rows.append(row(f"walk of {walk['pages']:,} pages, ready", walk, note))
    deep, start = got["deep"], got["deep"]["start"]
    depth = deep["p50_ms"] / start["p50_ms"] if start["p50_ms"] else 0.0
    where = f"{deep['pages']} pages from record {deep['at']:,}"
    note = f"{where}; {depth:.2f}x pages from the start, in turn"
    rows.append(row("deep page, ready", deep, note))
    middle = got["to the middle"]
    pages = f"{middle['pages']:,} page{'s' if middle['pages'] > 1 else ''}"
    note = f"{pages}, {middle['seconds']:.1f} s in all"
    rows.append(row(f"pages of {DEEP_PAGE:,} to the middle", middle, note))
    rows.append(row("get, random id", got["get"], f"{got['get']['n']:,} ids, every state"))
    fill_s = got["fill"]["seconds"]
    total = sum(counts.values())
    rate = f"{total / fill_s:,.0f} msg/s" if fill_s else ""
    rows.append([name, "fill", f"{fill_s:,.1f} s", "", f"{total:,} records, {rate}"])
    return rows


def table(results: dict[str, Any]) -> list[Row]:
    return [row for name, got in results["stores"].items() for row in store_rows(name, got)]


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    results = run(args)
    meta = results["meta"]
    print(
        f"mailqueue console benchmark, {meta['date']}: {meta['cpu']} x{meta['nproc']} "
        f"(load {meta['loadavg']}), Python {meta['python']}, SQLite {meta['sqlite']}, "
        f"redis-server {meta['redis']}; {args.messages:,} messages of {DATA_SIZE:,} B, "
        f"pages of {PAGE}"
    )
    rows = table(results)
    print(report.render_text(rows, HEADER))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.rst:
        args.rst.write_text(report.render_rst(rows, HEADER) + "\n")


if __name__ == "__main__":
    main()
