"""Leases on the Redis store hold against flushers whose clocks are wrong (issue 11, item 6).

A lease is taken over only when the caller's clock says it ran out and the
Redis server's clock agrees within ``max_clock_skew`` (60 s by default). The
flushers here are real (``Flusher`` with an SMTP transport to a real server on
loopback) with a shifted clock, as a machine whose NTP failed would run.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailqueue_core.errors import LeaseLost
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.contract import make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import queue_numbered

LEASE = 300.0
AHEAD = 400.0


def take_over(url: str, smtp) -> tuple[int, int, int]:
    """A flusher holds 20 claims; another one 400 s ahead flushes.

    Returns (sent by the one ahead, acks the holder could still make, stolen).
    """
    queue_numbered(url, 20)
    holder = make_store(url)
    thief = make_store(url)
    try:
        claims = holder.fetch_due(time.time(), 100, LEASE)
        assert len(claims) == 20
        result = Flusher(
            thief,
            SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"),
            lease=LEASE,
            clock=lambda: time.time() + AHEAD,
        ).flush()
        acked = stolen = 0
        for claim in claims:
            try:
                holder.ack(claim)
                acked += 1
            except LeaseLost:
                stolen += 1
        return result.sent, acked, stolen
    finally:
        holder.close()
        thief.close()


def test_a_flusher_400_s_ahead_cannot_take_a_live_claim(redis_server, smtp):
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    sent, acked, stolen = take_over(url, smtp)
    print(
        f"\nredis, default: the flusher {AHEAD:.0f}s ahead sent {sent} of 20; holder acked {acked}"
    )
    assert (sent, acked, stolen) == (0, 20, 0)
    assert smtp.messages == []


def test_trusting_the_callers_clock_alone_lets_it_steal(redis_server, smtp):
    # What every flusher did before issue 11, and what max_clock_skew=inf still does.
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}&max_clock_skew=inf"
    sent, acked, stolen = take_over(url, smtp)
    print(f"\nredis, max_clock_skew=inf: the flusher ahead sent {sent} of 20; {stolen} stolen")
    assert (sent, acked, stolen) == (20, 0, 20)


@pytest.fixture
def namespace() -> str:
    return uuid.uuid4().hex


def test_a_flusher_400_s_behind_cannot_lose_its_claims(redis_server, namespace):
    behind = RedisStore(redis_server.url, namespace=namespace)
    on_time = RedisStore(redis_server.url, namespace=namespace)
    try:
        now = time.time()
        behind.enqueue([make_record(now - AHEAD)])
        (claim,) = behind.fetch_due(now - AHEAD, 10, LEASE)
        # By its own clock the holder's lease ran out 100 s ago; by the server's it runs.
        assert on_time.fetch_due(now, 10, LEASE) == []
        stats = on_time.stats(now)
        assert (stats.ready, stats.in_flight, stats.stuck) == (0, 1, 0)
        behind.ack(claim)
    finally:
        behind.close()
        on_time.close()


def test_a_lease_ends_when_both_clocks_agree(redis_server, namespace):
    with RedisStore(redis_server.url, namespace=namespace, max_clock_skew=0) as store:
        now = time.time()
        store.enqueue([make_record(now), make_record(now)])
        # A lease of 0 s has run out by the server's clock at the next call,
        # but not by the caller's until it passes `expires`...
        first = store.fetch_due(now, 2, 0.0)
        assert store.fetch_due(now - 1, 10, LEASE) == []
        assert store.stats(now - 1).in_flight == 2
        # ...and then both agree.
        assert store.stats(now + 1).stuck == 2
        again = store.fetch_due(now + 1, 2, LEASE)
        assert {c.id for c in again} == {c.id for c in first}
        # A 300 s lease is not over at +400 by the caller's clock alone.
        assert store.fetch_due(now + AHEAD, 10, LEASE) == []
        assert store.stats(now + AHEAD).in_flight == 2


def test_the_skew_allowance_is_what_a_lease_can_be_cut_short_by(redis_server, namespace):
    with RedisStore(redis_server.url, namespace=namespace, max_clock_skew=100) as store:
        now = time.time()
        store.enqueue([make_record(now)])
        store.fetch_due(now, 1, LEASE)
        assert store.fetch_due(now + LEASE + 1, 1, LEASE) == []  # 300 s early: no
        assert store.stats(now + LEASE + 1).stuck == 0
        with RedisStore(redis_server.url, namespace=namespace, max_clock_skew=LEASE) as lax:
            assert len(lax.fetch_due(now + LEASE + 1, 1, LEASE)) == 1
