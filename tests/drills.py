"""Shared pieces of the multi-process drills: queue N numbered mails, run flushers, count."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend

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
