"""The mailqueue benchmark: one command, one run, one table.

    python -m bench [--messages 10000] [--enqueue 5000] [--stores memory,sqlite,redis,memcached]
                    [--skip-depth] [--skip-peers] [--chart docs/_static/benchmarks.png]
                    [--json FILE] [--rst FILE] [--tiny]

It starts its own redis-server and memcached on free loopback ports and an
aiosmtpd sink in a process of its own (Postfix's smtp-sink too when installed),
then measures, in this order: enqueue latency per message beside each store's
floor, Django's SMTP backend and the peers; flush throughput of a backlog with 1
and 2 worker processes beside the render-plus-smtplib limit and the peers'
senders; scale-out on Redis with 1, 2 and 4 workers; claim cost against queue
depth (bench.claim_depth); bytes per queued message. Every comparison is a ratio
of two figures from the same run: absolute figures on shared machines swing by
up to 2x between runs. django-mailer and django-post_office are measured when
installed (``pip install mailqueue[bench]``), else their rows say so.
``--tiny`` runs everything at a size that takes seconds (the test suite does).

``python -m bench console [...]`` measures the console's reads (pages of
``browse()`` and ``get()``) on a queue of 1,000,000 messages: see :mod:`bench.console`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import enqueue, flush, report, size
from bench.servers import MachineBusy, Memcached, PostfixSink, Redis, Sink, python_path
from bench.workload import STORES, peer_missing, setup_django, store_missing

ROOT = Path(__file__).resolve().parent.parent
PEERS = {"mailer": "django-mailer", "post_office": "django-post_office"}
SCALE_WORKERS = (1, 2, 4)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="flush backlog size")
    parser.add_argument("--enqueue", type=int, default=5_000, help="messages timed per subject")
    parser.add_argument("--direct", type=int, default=1_000, help="sent by Django's SMTP backend")
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--depths", default="1000,100000,1000000")
    parser.add_argument("--depth-runs", type=int, default=15)
    parser.add_argument("--size", type=int, default=1_000, help="messages queued to measure size")
    parser.add_argument("--skip-depth", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--chart", type=Path, help="write the chart (PNG; needs matplotlib)")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--rst", type=Path, help="write the table as a reStructuredText table")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' run (for the tests)")
    return parser


def _progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _meta(redis: Redis | None, memcached: Memcached | None) -> dict[str, Any]:
    import django

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "django": django.get_version(),
        "redis": redis.version() if redis else "-",
        "memcached": memcached.version() if memcached else "-",
        "nproc": os.cpu_count() or 1,
        "cpu": cpu,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    for module, dist in (*PEERS.items(), ("aiosmtpd", "aiosmtpd")):
        meta[dist] = importlib.metadata.version(dist) if not peer_missing(module) else "-"
    return meta


def _peer(mode: str, peer: str, n: int, port: int, directory: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.peers", mode, "--peer", peer, "--n", str(n)]
    command += ["--smtp-port", str(port), "--dir", str(directory / f"{peer}-{mode}")]
    env = {**os.environ, "PYTHONPATH": python_path()}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{PEERS[peer]} {mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def _servers(stores: list[str], directory: Path) -> Iterator[dict[str, Any]]:
    with ExitStack() as stack:
        got: dict[str, Any] = {"urls": {}}
        if "memory" in stores:
            got["urls"]["memory"] = "memory://bench"
        if "sqlite" in stores:
            got["urls"]["sqlite"] = f"sqlite:///{directory / 'queue.db'}"
        got["redis"] = stack.enter_context(Redis(directory)) if "redis" in stores else None
        if got["redis"]:
            got["urls"]["redis"] = got["redis"].url
        got["memcached"] = stack.enter_context(Memcached()) if "memcached" in stores else None
        if got["memcached"]:
            got["urls"]["memcached"] = got["memcached"].url
        got["sink"] = stack.enter_context(Sink())
        got["postfix"] = stack.enter_context(PostfixSink()) if PostfixSink.available() else None
        yield got


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.tiny:
        args.messages, args.enqueue, args.direct, args.size = 200, 200, 50, 50
        args.depths, args.depth_runs = "100,1000", 3
    asked = [s.strip() for s in args.stores.split(",") if s.strip()]
    missing = {s: store_missing(s) for s in asked}
    stores = [s for s in asked if missing[s] is None]
    peers = {} if args.skip_peers else {p: p for p in PEERS if not peer_missing(p)}
    setup_django()
    with (
        tempfile.TemporaryDirectory(prefix="mailqueue-bench-") as tmp,
        _servers(stores, Path(tmp)) as servers,
    ):
        directory, urls, sink = Path(tmp), servers["urls"], servers["sink"]
        results: dict[str, Any] = {"meta": _meta(servers["redis"], servers["memcached"])}
        results["enqueue"] = _enqueue_section(args, asked, missing, urls, peers, sink, directory)
        results["flush"] = _flush_section(args, asked, missing, urls, peers, servers, directory)
        results["scale"] = _scale_section(args, urls, sink, results["flush"])
        results["depth"] = _depth_section(args, urls, directory)
        _progress("size per message")
        results["size"] = size.all_sizes(urls, directory, args.size)
        for store in ("redis", "memcached", "sqlite"):
            if store not in urls:
                results["size"][store] = {"missing": missing.get(store) or "not asked for"}
    return results


def _enqueue_section(args, asked, missing, urls, peers, sink, directory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _progress(f"enqueue: {args.enqueue} messages per subject")
    subjects: dict[str, tuple[enqueue.Send, int]] = {}
    out: dict[str, Any] = {}
    for store in asked:
        if store not in urls:
            out[store] = {"missing": missing[store] or "not asked for"}
            continue
        subjects[store] = (enqueue.queueing(urls[store]), args.enqueue)
        subjects[f"{store} floor"] = (enqueue.floor(store, urls[store], directory), args.enqueue)
        if store == "sqlite":
            # The store's faster durability setting, beside its own floor.
            normal = f"sqlite:///{directory / 'queue-normal.db'}?synchronous=NORMAL"
            subjects["sqlite NORMAL"] = (enqueue.queueing(normal), args.enqueue)
            floor = enqueue.floor("sqlite", normal, directory, synchronous="NORMAL")
            subjects["sqlite NORMAL floor"] = (floor, args.enqueue)
    direct = min(args.direct, args.enqueue)
    subjects["Django SMTP backend"] = (enqueue.smtp_direct(sink.port), direct)
    out.update(enqueue.measure(subjects))
    for peer, dist in PEERS.items():
        if peer not in peers:
            out[dist] = {"missing": "skipped" if args.skip_peers else "not installed"}
            continue
        _progress(f"enqueue: {dist}")
        times = _peer("enqueue", peer, args.enqueue, sink.port, directory)["times"]
        out[dist] = enqueue.percentiles(times)
    return out


def _flush_section(args, asked, missing, urls, peers, servers, directory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    sink, n = servers["sink"], args.messages
    out: dict[str, Any] = {}
    for connections in (1, 2):
        name = f"limit, {connections} connection{'s' if connections > 1 else ''}"
        _progress(f"flush: {name}")
        out[name] = flush.limit_flush(n, connections, sink)
        out[name]["note"] = "render + smtplib, persistent"
    for store in asked:
        if store not in urls:
            out[f"{store}, 1 worker"] = {"missing": missing[store] or "not asked for"}
            continue
        for workers in (1, 2):
            name = f"{store}, {workers} worker{'s' if workers > 1 else ''}"
            if store == "memory" and workers > 1:
                out[name] = {"missing": "n/a: one process only"}
                continue
            _progress(f"flush: {name}, {n} messages")
            out[name] = flush.store_flush(urls[store], n, workers, sink)
            if store == "memory":
                out[name]["note"] = "in-process (not shareable)"
    for peer, label in (
        ("mailer", "django-mailer send_all"),
        ("post_office", "django-post_office send_queued"),
    ):
        if peer not in peers:
            out[label] = {"missing": "skipped" if args.skip_peers else "not installed"}
            continue
        _progress(f"flush: {label}")
        before, busy = sink.cpu(), MachineBusy()
        got = _peer("flush", peer, n, sink.port, directory)
        sink_cpu, busy_share = sink.cpu() - before, busy.done()
        out[label] = flush.result(got["sent"], got["wall"], got["cpu"], sink_cpu, busy_share)
        out[label]["note"] = "its own sender, 1 process"
    postfix = servers["postfix"]
    if postfix is not None:
        for connections in (1, 2):
            name = f"smtp-sink: limit, {connections} conn."
            _progress(f"flush: {name}")
            out[name] = flush.limit_flush(n, connections, postfix)
        if "redis" in urls:
            for workers in (1, 2):
                name = f"smtp-sink: redis, {workers} worker{'s' if workers > 1 else ''}"
                _progress(f"flush: {name}")
                out[name] = flush.store_flush(urls["redis"], n, workers, postfix)
    return out


def _scale_section(args, urls, sink, flushed) -> dict[int, Any]:  # type: ignore[no-untyped-def]
    if "redis" not in urls:
        return {}
    scale = {1: flushed["redis, 1 worker"], 2: flushed["redis, 2 workers"]}
    for workers in SCALE_WORKERS:
        if workers not in scale:
            _progress(f"scale-out: redis, {workers} workers")
            scale[workers] = flush.store_flush(urls["redis"], args.messages, workers, sink)
    return scale


def _depth_section(args, urls, directory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from bench.depth import claim_costs

    depths = sorted(int(d.replace("_", "")) for d in args.depths.split(","))
    out: dict[str, Any] = {}
    for store in ("redis", "sqlite"):
        if args.skip_depth:
            out[store] = {"missing": "skipped (--skip-depth)"}
        elif store not in urls:
            out[store] = {"missing": "not available"}
        else:
            _progress(f"claim cost: {store}, depths {depths}")
            out[store] = claim_costs(store, urls[store], depths, args.depth_runs, directory)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["console"]:
        from bench import console

        console.main(argv[1:])
        return
    args = _parser().parse_args(argv)
    results = run(args)
    rows = report.table(results)
    meta = results["meta"]
    print(
        f"mailqueue benchmark, {meta['date']}: {meta['cpu']} x{meta['nproc']}, Python "
        f"{meta['python']}, Django {meta['django']}, redis-server {meta['redis']}, "
        f"memcached {meta['memcached']}; flush backlog {args.messages}, "
        f"enqueue {args.enqueue} per subject"
    )
    print(report.render_text(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.rst:
        args.rst.write_text(report.render_rst(rows) + "\n")
    if args.chart:
        from bench.chart import write_chart

        write_chart(results, args.chart)
        _progress(f"chart written to {args.chart}")


if __name__ == "__main__":
    main()
