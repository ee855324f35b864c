"""A full Redis (``maxmemory`` reached, ``noeviction``) refuses new mail and still drains.

Issue 11, item 2. Every script that delivers or frees memory carries the Redis 7
flag ``allow-oom``; enqueue carries none, so a full server refuses it before it
runs, and the store says ``StoreUnavailable`` (the backend then uses the
fallback store, or ``fail_silently``). The drill fills a real redis-server to
its limit through the real backend and flushes it through a real SMTP server
until the queue is empty. A bigger run::

    python -m tests.test_redis_oom --maxmemory 64mb --body 8192

Before issue 11 the same drill at 2 MB made 51 flush runs and delivered 0 of 117.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.core.mail import EmailMessage, send_mail
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.errors import StoreError, StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_stores.redis import RedisStore
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import tally
from tests.servers.redis import RedisServer

MAX_FLUSH_RUNS = 10  # a drained queue needs one; a stuck one would need them all


def keep_full(server: RedisServer, margin: int = 64 * 1024) -> None:
    """Lower ``maxmemory`` just below what is used, so the server stays full.

    Right after a refusal the server may be a few bytes under its limit again
    (the refused command's buffers are freed); a test needs it full for sure.
    """
    with server.client() as client:
        used = client.info("memory")["used_memory"]
        client.config_set("maxmemory", used - margin)


def used_over_max(server: RedisServer) -> bool:
    with server.client() as client:
        info = client.info("memory")
    return info["used_memory"] > info["maxmemory"]


def fill_through_the_backend(url: str, body: int, limit: int = 1_000_000) -> int:
    """Queue numbered mails one at a time until the store refuses one; how many it took."""
    with override_settings(MAILQUEUE={"STORE": url}):
        backend = EmailBackend()
        for i in range(limit):
            message = EmailMessage(f"drill {i}", "x" * body, "site@example.com", [f"r{i}@x.org"])
            try:
                backend.send_messages([message])
            except StoreUnavailable:
                return i
    raise AssertionError(f"the store took {limit} messages without filling up")


def oom_drill(url: str, server: RedisServer, smtp: FaultySMTPServer, body: int) -> dict:
    """Fill ``url`` to OOM, then flush until the queue is empty; the figures."""
    queued = fill_through_the_backend(url, body)
    keep_full(server)
    full = used_over_max(server)
    runs = failed = 0
    store = make_store(url)
    try:
        while runs < MAX_FLUSH_RUNS:
            runs += 1
            try:
                Flusher(store, SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")).flush()
            except StoreError:  # a cron run that exits 1; the next one tries again
                failed += 1
            stats = store.stats(time.time())
            if stats.ready + stats.scheduled + stats.in_flight + stats.stuck == 0:
                break
    finally:
        store.close()
    lost, duplicates = tally(f"redis full ({queued} queued)", queued, smtp.messages)
    return {
        "queued": queued,
        "full": full,
        "runs": runs,
        "failed_runs": failed,
        "delivered": queued - lost,
        "lost": lost,
        "duplicates": duplicates,
        "left": stats.ready + stats.scheduled + stats.in_flight + stats.stuck,
        "dead": stats.dead,
    }


@pytest.fixture
def full_server(redis_server_factory):
    return redis_server_factory("--maxmemory", "2mb", appendonly=False)


def test_a_full_store_refuses_enqueue_and_keeps_every_other_verb(full_server):
    now = time.time()
    with RedisStore(full_server.url, namespace="full") as store:
        queued = 0
        with pytest.raises(StoreUnavailable, match="full"):
            while True:
                store.enqueue([make_record(now - 100, data=b"x" * 4096, attempts=1)])
                queued += 1
        keep_full(full_server)
        claims = store.fetch_due(now, 5, LEASE)
        assert len(claims) == 5
        store.requeue(claims[0], now + 60, "451 " + "later " * 100)
        store.release(claims[1])
        store.bury(claims[2], "550 no such user", now)
        store.ack(claims[3])
        store.ack(claims[4])
        store.add_dead([make_record(now, last_error="550 one recipient")], now)
        assert store.revive([claims[2].id], now) == 1
        assert store.purge(now + 1) == 1
        assert store.take_token("relay", 10.0, 5, now) == 0.0
        assert store.acquire_slot("relay", 2, LEASE, now) is not None
        stats = store.stats(now)
        assert (stats.ready, stats.scheduled, stats.dead) == (queued - 3, 1, 0)
        assert len(store.dead_letters()) == 0
        assert used_over_max(full_server)
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            store.enqueue([make_record(now)])


def test_a_full_store_refuses_a_durable_enqueue_too(full_server):
    # min_replicas sends the script and WAIT together; the refusal is the same.
    now = time.time()
    url = f"{full_server.url}?namespace=full"
    fill_through_the_backend(url, 4096)
    keep_full(full_server)
    with (
        RedisStore(url, min_replicas=1) as store,
        pytest.raises(StoreUnavailable, match="full"),
    ):
        store.enqueue([make_record(now)])


def test_a_full_store_falls_back_or_fails_silently(full_server, redis_server):
    url = f"{full_server.url}?namespace={uuid.uuid4().hex}"
    fill_through_the_backend(url, 4096)
    keep_full(full_server)
    fallback = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": url, "FALLBACK_STORE": fallback}):
        assert send_mail("s", "b", "site@example.com", ["a@example.com"]) == 1
    with make_store(fallback) as store:
        assert store.stats(time.time()).ready == 1
    with override_settings(MAILQUEUE={"STORE": url}):
        assert _send_quietly() == 0
        with pytest.raises(StoreUnavailable):
            send_mail("s", "b", "site@example.com", ["a@example.com"])


def test_drill_a_full_store_drains_to_zero(full_server, smtp):
    url = f"{full_server.url}?namespace={uuid.uuid4().hex}"
    figures = oom_drill(url, full_server, smtp, body=8192)
    print(f"redis maxmemory 2mb: {figures}")
    assert figures["full"]
    assert figures["queued"] > 50
    assert (figures["delivered"], figures["lost"], figures["duplicates"]) == (
        figures["queued"],
        0,
        0,
    )
    assert (figures["runs"], figures["failed_runs"]) == (1, 0)
    assert (figures["left"], figures["dead"]) == (0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.test_redis_oom", description=__doc__)
    parser.add_argument("--maxmemory", default="64mb")
    parser.add_argument("--body", type=int, default=8192, help="bytes of text per mail")
    args = parser.parse_args(argv)
    import django

    django.setup()
    with tempfile.TemporaryDirectory() as tmp, FaultySMTPServer() as smtp:
        server = RedisServer(
            Path(tmp), "--save", "", "--appendonly", "no", "--maxmemory", args.maxmemory
        ).start()
        try:
            url = f"{server.url}?namespace=oom-drill"
            figures = oom_drill(url, server, smtp, args.body)
        finally:
            server.stop()
    print(f"redis maxmemory {args.maxmemory}: {figures}")
    return 0 if figures["lost"] == 0 and figures["left"] == 0 else 1


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    raise SystemExit(main())


def _send_quietly() -> int:
    # fail_silently on the backend itself: Django 6.1 deprecates send_mail's argument.
    message = EmailMessage("s", "b", "site@example.com", ["a@x.org"])
    return EmailBackend(fail_silently=True).send_messages([message])
