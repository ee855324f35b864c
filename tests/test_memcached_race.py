"""The memcached store: a write whose slot a walk reaches before it is written.

Enqueue hands out a slot (``incr``) a few round trips before it writes it. A
walk in between reads the slot empty; it must never move the ring's head past
it for good, or the message would be queued and never found. The other client
runs just before a chosen client call of the writer (the ``before`` hook of
``test_memcached_servers.py``); real servers throughout.
"""

from __future__ import annotations

import uuid

import pytest
from pymemcache.client.base import Client

from mailqueue_core.errors import StoreError
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.memcached import MemcachedStore
from mailqueue_stores.memcached.buckets import bucket_of
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.options import read
from tests import test_memcached_servers
from tests.servers.memcached import FAR_CLOCK

before = test_memcached_servers.before  # the fixture


@pytest.fixture
def now(no_wall_clock) -> float:
    return FAR_CLOCK


@pytest.fixture(params=["one", "three"])
def stores(request, memcached_server_factory):
    """Two clients of one queue (one server, or three): the enqueuer and a flusher."""
    servers = [memcached_server_factory() for _ in range(1 if request.param == "one" else 3)]
    url = "memcached://" + ",".join(s.address for s in servers)
    namespace = uuid.uuid4().hex
    pair = [MemcachedStore(url, namespace=namespace) for _ in range(2)]
    yield pair
    for s in pair:
        s.close()


def slots_left(store: MemcachedStore, bucket: int) -> list[str]:
    """The slot items of ``bucket`` still on the servers (the first few numbers)."""
    wanted = [Keys(store.namespace).slot(bucket, n) for n in range(1, 10)]
    left: list[str] = []
    for host, port in read(store.location, {}).servers:
        client = Client((host, port))
        left += client.get_many(wanted)
        client.close()
    return left


def writes_data(values: dict[str, bytes]) -> bool:
    return any(":d:" in key for key in values)


def is_slot(key: str, *args: object) -> bool:
    return ":p:" in key and ":p:j" not in key


def test_a_walk_before_the_slot_is_written_does_not_lose_the_message(stores, before, now) -> None:
    site, flusher = stores
    record = make_record(now - 1)
    # The slot is handed out and the header written; the flusher walks, finds
    # the slot empty, and moves on before the enqueue writes it.
    before("set_many", lambda: flusher.fetch_due(now, 10, LEASE), when=writes_data)
    site.enqueue([record])
    (claim,) = flusher.fetch_due(now + 1, 10, LEASE)
    assert claim.id == record.id and claim.record.data == record.data
    flusher.ack(claim)
    stats = flusher.stats(now + 2)
    assert (stats.ready, stats.in_flight, stats.lost) == (0, 0, 0)
    assert flusher.dead_letters() == []
    # The walks' marks on the empty slots they passed went once their heads moved.
    assert slots_left(site, bucket_of(now - 1)) == []


def test_a_walk_between_the_slot_write_and_its_check(stores, before, now) -> None:
    """A walk that marks the slot first makes the enqueue's own write fail: it indexes again."""
    site, flusher = stores
    records = [make_record(now - 1) for _ in range(3)]
    before("add", lambda: flusher.fetch_due(now, 10, LEASE), when=is_slot)
    site.enqueue(records)
    claims = flusher.fetch_due(now + 1, 10, LEASE)
    assert sorted(c.id for c in claims) == sorted(r.id for r in records)


@pytest.fixture
def always_before_slots(monkeypatch: pytest.MonkeyPatch):
    """``always_before_slots(mid, action)``: ``action`` before each write of a slot naming mid."""
    real = MemcachedClient.add

    def arm(mid: str, action) -> None:
        def add(self, key: str, value: bytes) -> bool:
            if is_slot(key) and value == mid.encode():
                action()
            return real(self, key, value)

        monkeypatch.setattr(MemcachedClient, "add", add)

    yield arm
    monkeypatch.undo()


def test_an_enqueue_passed_over_again_and_again_fails_and_leaves_nothing(
    stores, always_before_slots, monkeypatch, now
) -> None:
    site, flusher = stores
    record = make_record(now - 1)
    always_before_slots(record.id, lambda: flusher.fetch_due(now, 10, LEASE))
    with pytest.raises(StoreError, match="passed over"):
        site.enqueue([record])
    monkeypatch.undo()
    assert flusher.fetch_due(now + 1, 10, LEASE) == []
    stats = flusher.stats(now + 2)
    assert (stats.ready, stats.in_flight, stats.lost) == (0, 0, 0)
    assert flusher.dead_letters() == []
    site.enqueue([record])  # a retry (to the fallback store, or here) is not a duplicate
    (claim,) = flusher.fetch_due(now + 3, 10, LEASE)
    assert claim.id == record.id


def test_a_requeue_passed_over_again_and_again_is_due_when_its_lease_ends(
    stores, always_before_slots, monkeypatch, now
) -> None:
    site, flusher = stores
    record = make_record(now - 1)
    site.enqueue([record])
    (claim,) = site.fetch_due(now, 10, 100.0)
    always_before_slots(record.id, lambda: flusher.stats(now + 60))
    with pytest.raises(StoreError, match="passed over"):
        site.requeue(claim, now + 60, "4xx")
    monkeypatch.undo()
    assert flusher.fetch_due(now + 60, 10, LEASE) == []  # still held
    (again,) = flusher.fetch_due(now + 101, 10, LEASE)
    assert again.id == record.id
    assert flusher.stats(now + 102).lost == 0


def test_a_walk_before_a_requeue_writes_its_new_slot(stores, before, now) -> None:
    site, flusher = stores
    record = make_record(now - 1)
    site.enqueue([record])
    (claim,) = site.fetch_due(now, 10, 1000.0)
    later = now + 60
    # stats walks every bucket up to the new one and finds the new slot empty.
    before("add", lambda: flusher.stats(later), when=is_slot)
    site.requeue(claim, later, "4xx")
    (again,) = flusher.fetch_due(later, 10, LEASE)
    assert (again.id, again.record.attempts) == (record.id, 1)


def test_a_walk_before_a_revived_message_is_indexed(stores, before, now) -> None:
    site, flusher = stores
    record = make_record(now - 1)
    site.enqueue([record])
    (claim,) = site.fetch_due(now, 10, LEASE)
    site.bury(claim, "5xx", now)
    before("add", lambda: flusher.fetch_due(now + 1, 10, LEASE), when=is_slot)
    assert site.revive([record.id], now + 1) == 1
    (again,) = flusher.fetch_due(now + 2, 10, LEASE)
    assert again.id == record.id
    assert flusher.dead_letters() == []
