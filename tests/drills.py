"""Shared pieces of the multi-process drills: queue N numbered mails, run flushers (one
of them with its clock off), count.

``python -m tests.drills STORE_URL SMTP_PORT SKEW`` is the skewed flusher
(:func:`start_skewed_flusher`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store, make_transport

REPO = str(Path(__file__).resolve().parents[1])
SUBJECT = re.compile(rb"^Subject: drill (\d+)\r?$", re.MULTILINE)


def queue_numbered(
    store_url: str, count: int, *, namespace: str = "default", start: int = 0
) -> None:
    """Queue ``count`` mails through the real backend, subjects 'drill START'.. on."""
    with override_settings(MAILQUEUE={"STORE": store_url, "NAMESPACE": namespace}):
        backend = EmailBackend()
        batch = 500
        for first in range(start, start + count, batch):
            messages = [
                EmailMessage(f"drill {i}", "body", "site@example.com", [f"r{i}@example.com"])
                for i in range(first, min(start + count, first + batch))
            ]
            assert backend.send_messages(messages) == len(messages)


def delivered_counts(received: Sequence) -> collections.Counter:
    """How many times each numbered mail reached the SMTP server."""
    counts: collections.Counter = collections.Counter()
    for message in received:
        match = SUBJECT.search(message.data)
        assert match, "a drill mail without its numbered subject"
        counts[int(match.group(1))] += 1
    return counts


def tally(label: str, total: int, received: Sequence) -> tuple[int, int]:
    """(lost, duplicated) among ``total`` numbered mails; printed for the issue notes."""
    counts = delivered_counts(received)
    duplicates = sum(n - 1 for n in counts.values())
    lost = total - len(counts)
    print(
        f"\n{label}: {total} messages, {len(counts)} delivered, "
        f"{duplicates} duplicates, {lost} lost"
    )
    return lost, duplicates


def flusher_command(store_url: str, smtp_port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mailqueue_core.cli",
        "flush",
        "--store",
        store_url,
        "--transport",
        f"smtp://127.0.0.1:{smtp_port}?timeout=10",
        "--quiet",
        *extra,
    ]


def start_flushers(store_url: str, smtp_port: int, n: int, *extra: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return [
        subprocess.Popen(
            flusher_command(store_url, smtp_port, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(n)
    ]


def finish(processes: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        _, err = process.communicate(timeout=timeout)
        results.append((process.returncode, err.decode()))
    return results


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


# -- a flusher whose clock is off --------------------------------------------------------


def start_skewed_flusher(
    store_url: str, smtp_port: int, skew: float, log: Path
) -> subprocess.Popen[str]:
    """A flusher process whose clock is ``skew`` seconds off (``Flusher(clock=...)``).

    It sets itself up, then waits for a line on its stdin before it claims
    anything, so that a drill decides when it joins in (``communicate("go")``).
    Its result is one JSON line on stdout; its log goes to ``log``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), REPO])}
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.drills", store_url, str(smtp_port), str(skew)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )


def _skewed_flush(store_url: str, smtp_port: int, skew: float) -> None:
    settings.configure()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    store = make_store(store_url)
    transport = make_transport(f"smtp://127.0.0.1:{smtp_port}?timeout=10")
    flusher = Flusher(store, transport, clock=lambda: time.time() + skew)
    sys.stdin.readline()
    try:
        result = flusher.flush()
    finally:
        store.close()
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    _skewed_flush(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
