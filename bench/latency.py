"""Mail in a second: from ``send()`` returning to the SMTP server's reply to DATA.

    python -m bench.latency [--messages 1000] [--gap 0.05] [--stores memory,sqlite,redis]
                            [--modes wake,poll] [--interval 5] [--json FILE]

One service flusher (``Flusher.run``, as ``flush --loop`` runs it) works each store
while this process sends ``--messages`` receipts one at a time, ``--gap`` seconds
apart, through mailqueue's ``EmailBackend``. The SMTP server (aiosmtpd, in this
process) notes when each message's DATA completes; the latency of a message is that
moment minus the moment its ``send()`` returned. Two modes per store:

``wake``  the store wakes the waiting flusher (capability ``wake``);
``poll``  the same flusher with the wake-ups turned off: it looks every ``--interval``.

Beside them, cron with a one-minute line is computed, not run: a message waits for
the next minute, so its wait is uniform on [0, 60) s (p50 30 s, p99 59.4 s) plus the
send. The flusher, the sender and the SMTP server share one Python process (the GIL),
as a site's worker and its flusher thread would not, so the figures include that
contention. It starts its own redis-server on a free loopback port.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.enqueue import percentiles
from bench.servers import Redis
from bench.workload import receipt, setup_django
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Capability
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport

STORES = ("memory", "sqlite", "redis")
MODES = ("wake", "poll")
CRON_PERIOD = 60.0


def measure(url: str, mode: str, messages: int, gap: float, interval: float) -> dict[str, Any]:
    """Send ``messages`` through the backend to ``url`` with a service flusher running."""
    from django.test import override_settings

    from mailqueue_core.backend import EmailBackend

    with FaultySMTPServer() as smtp, override_settings(MAILQUEUE={"STORE": url}):
        flusher_store = make_store(url)
        if mode == "poll":
            # The same store, its wake-ups unused: what --interval polling gives.
            flusher_store.capabilities = flusher_store.capabilities - {Capability.WAKE}  # type: ignore[misc]
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
        stop = threading.Event()
        service = threading.Thread(
            target=Flusher(flusher_store, transport, batch_size=100).run,
            args=(stop,),
            kwargs={"interval": interval},
            daemon=True,
        )
        service.start()
        backend = EmailBackend()
        returned: dict[str, float] = {}
        try:
            time.sleep(min(0.5, interval))  # the service's first run found nothing
            for n in range(messages):
                message = receipt(n)
                message.subject = f"latency {n}"
                backend.send_messages([message])
                returned[f"latency {n}"] = time.time()
                time.sleep(gap)
            smtp.wait_for(messages, timeout=interval * 2 + 60)
        finally:
            stop.set()
            service.join(interval + 10)
            flusher_store.close()
        arrived = {_subject(m.data): m.arrived for m in smtp.messages}
    latencies = [arrived[s] - returned[s] for s in returned]
    return {**percentiles(latencies), "max_ms": max(latencies) * 1e3, "messages": messages}


def _subject(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"subject: "):
            return line[9:].decode()
    return ""


def cron() -> dict[str, Any]:
    """A one-minute cron line: the wait is uniform over the minute."""
    return {"p50_ms": CRON_PERIOD / 2 * 1000, "p99_ms": CRON_PERIOD * 0.99 * 1000}


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()
    results: dict[str, Any] = {"cron (computed)": cron()}
    with tempfile.TemporaryDirectory(prefix="mailqueue-latency-") as tmp:
        redis = Redis(Path(tmp)) if "redis" in args.stores else None
        if redis is not None:
            redis.__enter__()
        try:
            for name in args.stores:
                url = {
                    "memory": f"memory://latency-{time.monotonic_ns()}",
                    "sqlite": f"sqlite:///{tmp}/latency-{time.monotonic_ns()}.db",
                    "redis": f"{redis.url}?namespace=latency-{time.monotonic_ns()}"
                    if redis
                    else "",
                }[name]
                for mode in args.modes:
                    figures = measure(url, mode, args.messages, args.gap, args.interval)
                    results[f"{name} ({mode})"] = figures
                    print(
                        f"{name:<8} {mode:<5} p50 {figures['p50_ms']:8.1f} ms   "
                        f"p99 {figures['p99_ms']:8.1f} ms",
                        flush=True,
                    )
        finally:
            if redis is not None:
                redis.__exit__(None, None, None)
    return results


def table(results: dict[str, Any]) -> str:
    rows = [f"{'':<20} {'p50':>10} {'p99':>10}"]
    for name, figures in results.items():
        rows.append(f"{name:<20} {figures['p50_ms']:>8.1f}ms {figures['p99_ms']:>8.1f}ms")
    return "\n".join(rows)


def _stores(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = set(names) - set(STORES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown store(s): {', '.join(sorted(unknown))}")
    return names


def _modes(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    if set(names) - set(MODES):
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between two sends")
    parser.add_argument("--stores", type=_stores, default=list(STORES))
    parser.add_argument("--modes", type=_modes, default=list(MODES))
    parser.add_argument("--interval", type=float, default=5.0, help="the service's poll")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
