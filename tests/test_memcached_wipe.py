"""The wipe drill: one of three memcached servers restarts empty under running flushers.

Queue N numbered messages over three real memcached servers, let three flusher
processes deliver part of them through a real SMTP server (aiosmtpd), stop one
memcached server (the flushers stop on the error it causes) and start it again
empty, start three new flushers that never saw the old server, and drain the
rest. Then every message must be accounted for exactly once: delivered, or
reported lost (``Stats.lost``, ``dead_letters()`` with ``lost=True``), never
both, no id reported twice.

The suite runs it at a small size. The full size, for the figures in the docs::

    MAILQUEUE_WIPE_DRILL_MESSAGES=3000 .venvs/django-5.2/bin/python -m pytest \\
        -p no:cacheprovider -q -s tests/test_memcached_wipe.py
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from pymemcache.client.base import Client

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.contract import LEASE as CLAIM_LEASE
from mailqueue_core.testing.contract import make_record
from mailqueue_stores.memcached import MemcachedStore
from mailqueue_stores.memcached.keys import Keys
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import delivered_counts, finish, start_flushers
from tests.helpers import record
from tests.servers.memcached import FAR_CLOCK

LEASE = 300.0
MESSAGES = int(os.environ.get("MAILQUEUE_WIPE_DRILL_MESSAGES", "240"))


def drill_id(n: int) -> str:
    return f"drill-{n}"


@pytest.mark.drill
def test_a_server_restarted_empty_is_reported_exactly(memcached_server_factory, smtp):
    servers = [memcached_server_factory() for _ in range(3)]
    url = "memcached://" + ",".join(s.address for s in servers)
    url += f"?namespace=wipe-{uuid.uuid4().hex[:8]}"
    total = MESSAGES
    created = time.time()
    with make_store(url) as store:
        for first in range(0, total, 500):
            store.enqueue(
                [
                    record(
                        f"r{n}@example.com", created=created, subject=f"drill {n}", id=drill_id(n)
                    )
                    for n in range(first, min(total, first + 500))
                ]
            )

    # Flushers at work, slowed a little so the wipe lands mid-queue.
    smtp.fault("dot", action="stall", seconds=0.01)
    flushers = start_flushers(url, smtp.port, 3)
    smtp.wait_for(total // 4, timeout=120)
    victim = servers[1]
    victim.stop()
    first_run = finish(flushers, timeout=120)
    victim.start()  # empty
    smtp.clear_faults()

    # New flushers, which never saw the server before its restart.
    second_run = finish(start_flushers(url, smtp.port, 3), timeout=300)
    with make_store(url) as store:
        # Claims the first flushers held on the surviving servers come back
        # when their leases run out.
        later = lambda: time.time() + LEASE + 1  # noqa: E731
        Flusher(store, SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"), clock=later).flush()
        stats = store.stats(later())
        letters = [d for d in store.dead_letters() if d.lost]

    counts = delivered_counts(smtp.messages)
    delivered = {drill_id(n) for n in counts}
    duplicates = sum(n - 1 for n in counts.values())
    reported_ids = [d.record.id for d in letters if d.record.id.startswith("drill-")]
    lost = total - len(delivered)
    print(
        f"\nmemcached wipe drill: {total} messages, {len(delivered)} delivered, "
        f"{duplicates} duplicates, {lost} lost, {stats.lost} reported lost "
        f"({len(reported_ids)} by id, {len(set(reported_ids))} distinct), "
        f"{len(delivered & set(reported_ids))} delivered and reported; "
        f"first flushers exited {[code for code, _ in first_run]}, "
        f"second {[code for code, _ in second_run]}"
    )
    assert [code for code, _ in second_run] == [0, 0, 0], second_run
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck) == (0, 0, 0, 0)
    assert len(reported_ids) == len(set(reported_ids)), "an id was reported twice"
    assert not delivered & set(reported_ids), "a delivered message was reported lost"
    assert len(delivered) + stats.lost == total
    assert len(reported_ids) == stats.lost, "every loss is reported by id"
    assert duplicates <= 3


# -- the same promises, step by step ------------------------------------------------


@pytest.fixture
def now(no_wall_clock) -> float:
    return FAR_CLOCK


@pytest.fixture
def three(memcached_server_factory):
    """Three servers, sorted by name: each one's witness is the next (the last's, the first)."""
    return sorted((memcached_server_factory() for _ in range(3)), key=lambda s: s.address)


def _url(servers, namespace: str) -> str:
    return "memcached://" + ",".join(s.address for s in servers) + f"?namespace={namespace}"


def _homes(servers, namespace: str, ids) -> dict[str, list[str]]:
    """Which server holds each message's header, by server address."""
    keys = Keys(namespace)
    found: dict[str, list[str]] = {s.address: [] for s in servers}
    for server in servers:
        raw = Client(("127.0.0.1", server.port))
        try:
            held = raw.get_many([keys.header(mid) for mid in ids])
        finally:
            raw.close()
        found[server.address] = [mid for mid in ids if keys.header(mid) in held]
    return found


def _lost_ids(store) -> list[str]:
    return [d.record.id for d in store.dead_letters() if d.lost]


def test_a_wipe_no_running_process_saw_is_reported_by_id(three, now) -> None:
    url = _url(three, "unseen")
    records = [make_record(now) for _ in range(60)]
    with MemcachedStore(url) as store:
        store.enqueue(records)
    homes = _homes(three, "unseen", [r.id for r in records])
    victim = three[1]
    assert homes[victim.address], "the victim holds some of the messages"
    victim.restart()

    with MemcachedStore(url) as fresh, MemcachedStore(url) as other:
        assert fresh.stats(now).lost == len(homes[victim.address])
        assert sorted(_lost_ids(fresh)) == sorted(homes[victim.address])
        assert other.stats(now).lost == len(homes[victim.address])  # reported once
        claimed = other.fetch_due(now, 100, CLAIM_LEASE)
        assert {c.id for c in claimed} == {r.id for r in records} - set(homes[victim.address])
        assert all(c.record.damage is None for c in claimed)


def test_a_message_delivered_while_its_server_was_down_is_not_reported_lost(three, now) -> None:
    url = _url(three, "acked")
    records = [make_record(now) for _ in range(30)]
    victim = three[0]
    with MemcachedStore(url, connect_timeout=1, timeout=1) as store:
        store.enqueue(records)
        on_victim = _homes(three, "acked", [r.id for r in records])[victim.address]
        claims = {c.id: c for c in store.fetch_due(now, 30, CLAIM_LEASE)}
        delivered, held = on_victim[0], on_victim[1:]
        victim.stop()
        with pytest.raises(StoreUnavailable):
            store.ack(claims[delivered])  # sent, but its server cannot be told
        victim.start()
    with MemcachedStore(url) as fresh:
        assert fresh.stats(now).lost == len(held)
        assert sorted(_lost_ids(fresh)) == sorted(held)


def test_an_emptied_witness_loses_only_its_own_and_the_journal_is_rebuilt(three, now) -> None:
    url = _url(three, "witness")
    subject, witness = three[0], three[1]
    first = [make_record(now) for _ in range(60)]
    with MemcachedStore(url) as store:
        store.enqueue(first)
    homes = _homes(three, "witness", [r.id for r in first])
    witness.restart()
    with MemcachedStore(url) as store:
        assert sorted(_lost_ids(store)) == sorted(homes[witness.address])
        later = [make_record(now) for _ in range(30)]
        store.enqueue(later)
    subject_held = (
        homes[subject.address] + _homes(three, "witness", [r.id for r in later])[subject.address]
    )
    # The subject's journal went with its witness and was written again: emptying
    # the subject now is reported in full, old messages and new.
    subject.restart()
    with MemcachedStore(url) as store:
        assert sorted(_lost_ids(store)) == sorted(homes[witness.address] + subject_held)
        assert store.stats(now).lost == len(homes[witness.address]) + len(subject_held)


def test_an_id_reported_lost_is_not_reported_again_when_its_server_is_emptied(three, now) -> None:
    url = _url(three, "twice")
    records = [make_record(now) for _ in range(30)]
    victim = three[2]
    with MemcachedStore(url) as store:
        store.enqueue(records)
        on_victim = _homes(three, "twice", [r.id for r in records])[victim.address]
        raw = Client(("127.0.0.1", victim.port))
        try:
            raw.delete(Keys("twice").header(on_victim[0]))  # evicted, say
        finally:
            raw.close()
        assert store.stats(now).lost == 1
        assert _lost_ids(store) == [on_victim[0]]
    victim.restart()
    with MemcachedStore(url) as store:
        assert sorted(_lost_ids(store)) == sorted(on_victim)
        assert store.stats(now).lost == len(on_victim)


def test_one_server_restarted_is_reported_by_count_by_those_who_saw_it(
    memcached_server_factory, now
) -> None:
    """With one server nothing outlives a restart: a running client tells what it saw."""
    server = memcached_server_factory()
    with MemcachedStore(server.url) as seen:
        seen.enqueue([make_record(now) for _ in range(5)])
        server.restart()
        with MemcachedStore(server.url) as unseen:
            assert unseen.stats(now).lost == 0  # started after: it cannot know
        assert seen.stats(now).lost == 5
