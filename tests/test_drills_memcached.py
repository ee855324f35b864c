"""Drills on memcached: three flusher processes on one queue, and one killed mid-batch.

Real processes (the standalone ``mailqueue flush`` command), a real memcached
started by the tests, a real SMTP server on loopback.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import finish, kill, queue_numbered, start_flushers, tally

pytestmark = pytest.mark.drill


def test_three_flushers_deliver_2000_exactly_once(memcached_server, smtp):
    url = f"{memcached_server.url}?namespace={uuid.uuid4().hex}"
    queue_numbered(url, 2000)
    results = finish(start_flushers(url, smtp.port, 3), timeout=600)
    assert [code for code, _ in results] == [0, 0, 0], results
    assert tally("memcached, 3 flushers", 2000, smtp.messages) == (0, 0)
    with make_store(url) as store:
        stats = store.stats(time.time())
    assert (stats.ready, stats.in_flight, stats.dead, stats.lost) == (0, 0, 0, 0)


def test_flusher_killed_mid_batch_loses_nothing(memcached_server, smtp):
    url = f"{memcached_server.url}?namespace={uuid.uuid4().hex}"
    total = 300
    queue_numbered(url, total)
    smtp.fault("dot", action="stall", seconds=0.01)
    (process,) = start_flushers(url, smtp.port, 1)
    smtp.wait_for(40, timeout=60)
    kill(process)
    smtp.clear_faults()
    with make_store(url) as store:
        held = store.stats(time.time()).in_flight
        assert held > 0  # its claims come back when their leases expire
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
        Flusher(store, transport, clock=lambda: time.time() + 301).flush()
    lost, duplicates = tally(f"memcached, SIGKILL with {held} claimed", total, smtp.messages)
    assert lost == 0
    assert duplicates <= 1
