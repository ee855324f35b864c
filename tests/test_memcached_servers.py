"""The memcached store over several servers: calls that fail half-way, and races.

Another client acting between two steps, or a server failing at a chosen step,
is simulated by running an action just before a chosen client call (the same
hook as in ``test_store_memcached.py``). Real servers throughout.
"""

from __future__ import annotations

import uuid

import pytest
from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.memcached import MemcachedStore
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.keys import Keys
from tests.servers.memcached import FAR_CLOCK, raw_item


@pytest.fixture
def now(no_wall_clock) -> float:
    return FAR_CLOCK


@pytest.fixture
def three(memcached_server_factory):
    """Three servers, sorted by name: each one's witness is the next (the last's, the first)."""
    return sorted((memcached_server_factory() for _ in range(3)), key=lambda s: s.address)


@pytest.fixture
def url(three) -> str:
    return "memcached://" + ",".join(s.address for s in three) + f"?namespace={uuid.uuid4().hex}"


@pytest.fixture
def before(monkeypatch: pytest.MonkeyPatch):
    """``before(method, action, when=...)``: run ``action`` before the first matching call."""

    def arm(method: str, action, when=lambda *a: True) -> None:
        real = getattr(MemcachedClient, method)
        armed = [True]

        def wrapper(self, *args, **kwargs):
            if armed[0] and when(*args):
                armed[0] = False
                action()
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MemcachedClient, method, wrapper)

    return arm


def fail() -> None:
    raise StoreUnavailable("the server failed here")


def nth(n: int):
    """A ``when`` that matches the ``n``-th call (1-based)."""
    calls = [0]

    def when(*args) -> bool:
        calls[0] += 1
        return calls[0] == n

    return when


def home_by_hash(three, mid: str):
    """A message's home server, as the docs say: the rendezvous hash of its id."""
    node = RendezvousHash(nodes=[s.address for s in three]).get_node(mid)
    return next(s for s in three if s.address == node)


def test_enqueue_is_all_or_nothing_across_servers(url, before, now) -> None:
    records = [make_record(now) for _ in range(30)]
    with MemcachedStore(url) as store:
        # The first server's part is written whole (journal, data, slots), then
        # the second server's part fails.
        before("set_many", fail, when=nth(4))
        with pytest.raises(StoreUnavailable):
            store.enqueue(records)
        assert store.fetch_due(now, 100, LEASE) == []
        stats = store.stats(now)
        assert (stats.ready, stats.lost) == (0, 0)
        store.enqueue(records + records[:1])  # the retry, with an id given twice
        assert sorted(c.id for c in store.fetch_due(now, 100, LEASE)) == sorted(
            r.id for r in records
        )


def test_a_claim_that_fails_half_way_gives_back_what_it_took(url, before, now) -> None:
    with MemcachedStore(url) as store:
        store.enqueue([make_record(now) for _ in range(30)])
        reads = [0]

        def data_read(keys) -> bool:
            keys = list(keys)
            reads[0] += any(":d:" in k for k in keys)
            return reads[0] == 2  # the second server's data

        before("get_many", fail, when=data_read)
        with pytest.raises(StoreUnavailable):
            store.fetch_due(now, 100, LEASE)
        assert len(store.fetch_due(now, 100, LEASE)) == 30  # not held for a lease


def test_an_ack_that_cannot_reach_either_server_still_raises(three, url, now) -> None:
    with MemcachedStore(url, connect_timeout=1, timeout=1) as store:
        store.enqueue([make_record(now) for _ in range(10)])
        (claim, *_) = store.fetch_due(now, 10, LEASE)
        home = home_by_hash(three, claim.id)
        witness = three[(three.index(home) + 1) % 3]
        home.stop()
        witness.stop()
        with pytest.raises(StoreUnavailable):
            store.ack(claim)


def test_a_server_restarted_during_an_enqueue_is_not_mistaken_for_a_loss(
    three, url, before, now
) -> None:
    """The enqueue read the old epoch, then wrote its message to the new server."""
    target = make_record(now)
    home = home_by_hash(three, target.id)
    with MemcachedStore(url) as store:
        store.stats(now)  # every epoch known
        dead_key = Keys(store.namespace).dead(target.id)
        before("get_many", home.restart, when=lambda keys: dead_key in list(keys))
        store.enqueue([target])
    with MemcachedStore(url) as fresh:
        assert fresh.stats(now).lost == 0
        (claim,) = fresh.fetch_due(now, 10, LEASE)
        assert fresh.fetch_due(now, 10, LEASE) == []
        fresh.ack(claim)
        assert fresh.stats(now).lost == 0
        assert fresh.dead_letters() == []


def test_junk_in_an_epoch_marker_loses_nothing(three, url, now) -> None:
    records = [make_record(now) for _ in range(20)]
    with MemcachedStore(url) as store:
        store.enqueue(records)
        keys = Keys(store.namespace)
        for server in three:
            raw = Client(("127.0.0.1", server.port))
            try:
                raw.set(keys.epoch, b"junk")
                raw.set(keys.low, b"junk")
            finally:
                raw.close()
        assert len(store.fetch_due(now, 100, LEASE)) == 20
        assert store.stats(now).lost == 0


def test_a_server_restarted_while_it_held_nothing_reports_nothing(three, url, now) -> None:
    with MemcachedStore(url) as store:
        store.stats(now)
    three[2].restart()
    with MemcachedStore(url) as store:
        assert store.stats(now).lost == 0


def test_rewriting_the_journal_survives_a_header_changed_meanwhile(
    three, url, before, now
) -> None:
    subject, witness = three[0], three[1]
    records = [make_record(now) for _ in range(40)]
    held = {s.address: [] for s in three}
    for record in records:
        held[home_by_hash(three, record.id).address].append(record.id)
    with MemcachedStore(url) as store:
        store.enqueue(records)
        witness.restart()
        changed: list[str] = []

        def header_rewrite(key, value, *rest) -> bool:
            if key.startswith(Keys(store.namespace).prefix + "m:") and b'"j":' in value:
                changed.append(key)
                return True
            return False

        def rewrite() -> None:  # another client writes the header (its cas changes)
            raw, value = raw_item(store.location, changed[0])
            try:
                raw.set(changed[0], value)
            finally:
                raw.close()

        before("cas", rewrite, when=header_rewrite)
        store.stats(now)  # finds the witness emptied and names the subject's messages again
        assert changed
    subject.restart()
    with MemcachedStore(url) as store:
        lost = {d.record.id for d in store.dead_letters() if d.lost}
        assert lost == set(held[subject.address]) | set(held[witness.address])


def test_a_claim_whose_lease_ran_out_does_not_hide_an_earlier_message(three, url, now) -> None:
    """One server's expired claim sorts by its expiry: its later buckets are read too."""
    start = now + 200  # the start of a bucket
    ids = [uuid.uuid4().hex for _ in range(60)]
    x = home_by_hash(three, ids[0])
    on_x = [mid for mid in ids if home_by_hash(three, mid) is x]
    elsewhere = [mid for mid in ids if home_by_hash(three, mid) is not x]
    expired = make_record(start, id=on_x[0])
    earlier = make_record(start + 20, id=on_x[1])
    later = make_record(start + 25, id=elsewhere[0])
    with MemcachedStore(url) as store:
        store.enqueue([expired, earlier, later])
        (claim,) = store.fetch_due(start, 1, 30.0)  # expires at start + 30
        assert claim.id == expired.id
        (first,) = store.fetch_due(start + 40, 1, LEASE)
        assert first.id == earlier.id
