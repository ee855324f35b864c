"""Flush throughput: a backlog drained by flusher processes, beside the raw limit.

A backlog of N receipts is queued through the queueing backend (not timed), then
W worker processes are forked, each builds its own store, SMTP transport and
:class:`~mailqueue_core.flusher.Flusher`, and all start together; the rate is N
over the wall time until the last one is done. Each worker reports its own CPU
time; the sink's CPU is read from its process over the same span.

The limit is what any flusher must do per message: render it (Django's own
rendering) and hand it to smtplib on one persistent connection, one connection
per process. The memory store cannot be shared between processes: it is flushed
in this process, by one worker.
"""

from __future__ import annotations

import multiprocessing
import smtplib
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.core.mail import get_connection

from bench.servers import MachineBusy, Sink
from bench.workload import FROM, receipt, wire_bytes
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_transports.smtp import SMTPTransport

QUEUE_BATCH = 500
_fork = multiprocessing.get_context("fork")


def queue_backlog(url: str, namespace: str, n: int) -> None:
    backend = get_connection("mailqueue_core.backend.EmailBackend", store=url, namespace=namespace)
    for start in range(0, n, QUEUE_BATCH):
        backend.send_messages([receipt(i) for i in range(start, min(n, start + QUEUE_BATCH))])


def _flusher(url: str, namespace: str, port: int) -> Callable[[], int]:
    store = make_store(url, namespace=namespace)
    transport = SMTPTransport(f"smtp://127.0.0.1:{port}?timeout=30")
    flusher = Flusher(store, transport)
    return lambda: flusher.flush().sent


def _limit(port: int, messages: list[Any]) -> Callable[[], int]:
    def send() -> int:
        connection = smtplib.SMTP("127.0.0.1", port, timeout=30)
        for message in messages:
            connection.sendmail(FROM, message.recipients(), wire_bytes(message))
        connection.quit()
        return len(messages)

    return send


def _worker(make: Callable[[], Callable[[], int]], barrier: Any, out: Any) -> None:
    work = make()
    barrier.wait()
    cpu = time.process_time()
    sent = work()
    out.put((sent, time.process_time() - cpu))


def _run(makers: list[Callable[[], Callable[[], int]]], sink: Sink) -> dict[str, Any]:
    """Run one worker process per maker, all started together; time the lot."""
    barrier = _fork.Barrier(len(makers) + 1)
    out = _fork.Queue()
    processes = [_fork.Process(target=_worker, args=(m, barrier, out)) for m in makers]
    for process in processes:
        process.start()
    barrier.wait()
    busy, sink_cpu, t0 = MachineBusy(), sink.cpu(), time.perf_counter()
    results = [out.get() for _ in processes]
    wall = time.perf_counter() - t0
    sink_cpu, busy = sink.cpu() - sink_cpu, busy.done()
    for process in processes:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"a flusher process failed with exit code {process.exitcode}")
    return result(sum(r[0] for r in results), wall, sum(r[1] for r in results), sink_cpu, busy)


def result(
    sent: int, wall: float, cpu: float, sink_cpu: float, busy: float | None = None
) -> dict[str, Any]:
    return {
        "machine_busy": busy,  # share of all cores busy, whoever used them
        "sent": sent,
        "rate": sent / wall,
        "sender_cpu": cpu / wall,  # in cores: 1.0 is one core busy the whole time
        "sink_cpu": sink_cpu / wall,
        "sender_us": cpu / sent * 1e6 if sent else 0.0,
        "sink_us": sink_cpu / sent * 1e6 if sent else 0.0,
    }


def store_flush(url: str, n: int, workers: int, sink: Sink) -> dict[str, Any]:
    namespace = f"flush-{uuid.uuid4().hex[:8]}"
    queue_backlog(url, namespace, n)
    if url.startswith("memory:"):
        work = _flusher(url, namespace, sink.port)
        busy, sink_cpu = MachineBusy(), sink.cpu()
        cpu, t0 = time.process_time(), time.perf_counter()
        sent = work()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        return result(sent, wall, cpu, sink.cpu() - sink_cpu, busy.done())
    makers = [lambda: _flusher(url, namespace, sink.port) for _ in range(workers)]
    got = _run(makers, sink)
    if got["sent"] != n:
        raise RuntimeError(f"{url}: {got['sent']} of {n} messages sent")
    return got


def limit_flush(n: int, connections: int, sink: Sink) -> dict[str, Any]:
    messages = [receipt(i) for i in range(n)]
    makers = [
        (lambda part=messages[k::connections]: _limit(sink.port, part)) for k in range(connections)
    ]
    return _run(makers, sink)
