"""Drills on Redis: many flusher processes on one queue, a flusher killed, Redis restarted.

Real processes (the standalone ``mailqueue flush`` command), a real
redis-server started by the tests, a real SMTP server on loopback. The figures
are printed for the issue notes (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import finish, kill, queue_numbered, start_flushers, tally

pytestmark = pytest.mark.drill

LEASE = 300


def drain_past_leases(url: str, smtp) -> None:
    """A last flush whose clock is past every lease a dead flusher held (no sleeping).

    The leases still run by the Redis server's clock, which the drill cannot
    move: this flush trusts its own clock alone (``max_clock_skew=inf``).
    """
    store = make_store(url + "&max_clock_skew=inf")
    try:
        Flusher(
            store,
            SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"),
            clock=lambda: time.time() + LEASE + 1,
        ).flush()
    finally:
        store.close()


#: 2,000 in the test command; the full drill is
#: ``MAILQUEUE_DRILL_MESSAGES=10000 python -m pytest tests/test_drills_redis.py``.
MESSAGES = int(os.environ.get("MAILQUEUE_DRILL_MESSAGES", "2000"))


def test_four_flushers_deliver_each_message_exactly_once(redis_server, smtp):
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    queue_numbered(url, MESSAGES)
    results = finish(start_flushers(url, smtp.port, 4), timeout=600)
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert tally("redis, 4 flushers", MESSAGES, smtp.messages) == (0, 0)
    stats = make_store(url).stats(time.time())
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)


def test_one_of_four_flushers_killed_loses_nothing(redis_server, smtp):
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    total = 2000
    queue_numbered(url, total)
    smtp.fault("dot", action="stall", seconds=0.005)
    victim, *others = start_flushers(url, smtp.port, 4)
    smtp.wait_for(200, timeout=120)
    kill(victim)
    smtp.clear_faults()
    assert [code for code, _ in finish(others, timeout=600)] == [0, 0, 0]
    held = make_store(url).stats(time.time()).in_flight
    assert held > 0  # what the killed flusher held comes back by lease expiry
    drain_past_leases(url, smtp)
    lost, duplicates = tally(f"redis, SIGKILL of 1 of 4 ({held} held)", total, smtp.messages)
    assert lost == 0
    assert duplicates <= 1  # only the message the killed flusher had in hand


def test_redis_restarted_between_enqueue_and_flush(redis_server_factory, smtp):
    server = redis_server_factory()  # appendonly yes, appendfsync everysec
    url = f"{server.url}?namespace=restart"
    queue_numbered(url, 500)
    server.stop()  # a clean shutdown writes the AOF out
    server.start()
    results = finish(start_flushers(url, smtp.port, 1))
    assert results[0][0] == 0, results
    assert tally("redis restarted before flush", 500, smtp.messages) == (0, 0)


def test_redis_killed_mid_flush_exits_non_zero_then_loses_nothing(redis_server_factory, smtp):
    server = redis_server_factory("--appendfsync", "always")
    url = f"{server.url}?namespace=outage"
    total = 400
    queue_numbered(url, total)
    smtp.fault("dot", action="stall", seconds=0.01)
    (flusher,) = start_flushers(url, smtp.port, 1)
    smtp.wait_for(50, timeout=60)
    server.kill()
    ((code, err),) = finish([flusher], timeout=120)
    assert code == 1
    assert "store failed during flush" in err and "Traceback" not in err
    smtp.clear_faults()
    server.start()
    drain_past_leases(url, smtp)
    lost, duplicates = tally("redis killed mid-flush, then back", total, smtp.messages)
    assert lost == 0
    assert duplicates <= 1
