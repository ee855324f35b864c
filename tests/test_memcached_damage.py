"""Damaged records in the memcached store, damaged through the server as an operator would.

A header or data item deleted, cut short or overwritten with junk by a plain
pymemcache client: ``fetch_due`` never raises, the damaged record comes back as a
claim with ``record.damage`` set (and ``bury`` takes it) or is reported lost by
id, the rest of the batch goes on, and nothing is created for a message that is
not there. On one server and on two (where a message's items share a server).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from pymemcache.client.base import Client

from mailqueue_core.store import Claim, Stats
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.memcached import MemcachedStore
from mailqueue_stores.memcached.keys import Keys
from tests.servers.memcached import FAR_CLOCK, raw_item


@pytest.fixture(params=["one server", "two servers"])
def store(request, memcached_server, memcached_pair):
    if request.param == "one server":
        url = memcached_server.url
    else:
        url = "memcached://" + ",".join(s.address for s in memcached_pair)
    s = MemcachedStore(url, namespace=f"damage-{uuid.uuid4().hex}")
    yield s
    s.close()


@pytest.fixture
def now(no_wall_clock) -> float:
    return FAR_CLOCK


def _header(store: MemcachedStore, mid: str) -> tuple[Client, str, bytes]:
    key = Keys(store.namespace).header(mid)
    raw, value = raw_item(store.location, key)
    return raw, key, value


def _data_key(store: MemcachedStore, mid: str, header: bytes) -> str:
    return Keys(store.namespace).data(mid, json.loads(header)["gen"])


def _cut_after_gen(header: bytes) -> bytes:
    end = header.index(b'"gen":') + len(b'"gen":"0123456789ab"')
    return header[:end]


Damager = Callable[[Client, str, str, bytes], None]

# What was done to one record, and what must come of it: "claim" (handed out for
# burial, with ``damage`` saying ``says``) or "lost" (reported lost by id).
CASES: dict[str, tuple[Damager, str, str]] = {
    "header deleted": (lambda raw, hk, dk, h: raw.delete(hk), "lost", "header"),
    "header cut short, its data reachable": (
        lambda raw, hk, dk, h: raw.set(hk, _cut_after_gen(h)),
        "claim",
        "unreadable",
    ),
    "header cut to a stub": (lambda raw, hk, dk, h: raw.set(hk, h[:9]), "lost", "unreadable"),
    "header overwritten with junk": (
        lambda raw, hk, dk, h: raw.set(hk, b"\x00\xff junk \x1b[2J"),
        "lost",
        "unreadable",
    ),
    "header overwritten with another JSON value": (
        lambda raw, hk, dk, h: raw.set(hk, b"[1, 2]"),
        "lost",
        "not a JSON object",
    ),
    "header field of the wrong type": (
        lambda raw, hk, dk, h: raw.set(hk, json.dumps({**json.loads(h), "due": "soon"})),
        "claim",
        "due='soon'",
    ),
    "header field missing": (
        lambda raw, hk, dk, h: raw.set(
            hk, json.dumps({k: v for k, v in json.loads(h).items() if k != "created"})
        ),
        "claim",
        "no 'created'",
    ),
    "header of another message written over it": (
        lambda raw, hk, dk, h: raw.set(hk, json.dumps({**json.loads(h), "id": "x", "gen": "f0"})),
        "lost",
        "another message",
    ),
    "data deleted": (lambda raw, hk, dk, h: raw.delete(dk), "lost", "evicted"),
    "data cut short": (lambda raw, hk, dk, h: raw.set(dk, raw.get(dk)[:5]), "claim", "5 bytes"),
    "data overwritten with junk of the same size": (
        lambda raw, hk, dk, h: raw.set(dk, b"#" * len(raw.get(dk))),
        "claim",
        "checksum",
    ),
}


def _counts(stats: Stats) -> tuple[int, int, int, int]:
    return (stats.ready, stats.scheduled, stats.in_flight, stats.stuck)


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_record_never_stops_the_queue(store, now, case) -> None:
    damage, outcome, says = CASES[case]
    records = [make_record(now - 3 + i, attempts=i) for i in range(3)]
    store.enqueue(records)
    bad = records[1]
    raw, header_key, header = _header(store, bad.id)
    data_key = _data_key(store, bad.id, header)
    try:
        damage(raw, header_key, data_key, header)
        absent = [k for k in (header_key, data_key) if raw.get(k) is None]
        store.stats(now)  # counting does not raise either

        claims: dict[str, Claim] = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
        for good in (records[0], records[2]):
            assert claims[good.id].record.damage is None
            assert claims[good.id].record.data == good.data
            store.ack(claims[good.id])
        if outcome == "claim":
            claim = claims[bad.id]
            assert says in claim.record.damage
            store.bury(claim, f"damaged record: {claim.record.damage}", now)
            (letter,) = store.dead_letters()
            assert (letter.record.id, letter.lost) == (bad.id, False)
            assert says in letter.reason
            assert store.stats(now).dead == 1
        else:
            assert bad.id not in claims
            (letter,) = store.dead_letters()
            assert (letter.record.id, letter.lost, letter.record.data) == (bad.id, True, b"")
            assert says in letter.reason
            assert store.stats(now).lost == 1

        assert store.fetch_due(now + 10 * LEASE, 10, LEASE) == []
        assert _counts(store.stats(now + 10 * LEASE)) == (0, 0, 0, 0)
        # Nothing of the damaged message is left in the queue, and nothing was made.
        assert raw.get(header_key) is None
        assert [k for k in absent if raw.get(k) is not None] == []
    finally:
        raw.close()


def test_damaged_header_with_intact_data_can_be_revived_whole(store, now) -> None:
    """The data of a record whose header was garbled is kept: an operator can retry it."""
    record = make_record(now)
    store.enqueue([record])
    raw, header_key, header = _header(store, record.id)
    try:
        raw.set(header_key, json.dumps({**json.loads(header), "attempts": 1.5}))
    finally:
        raw.close()
    (claim,) = store.fetch_due(now, 10, LEASE)
    assert "attempts=1.5" in claim.record.damage
    assert claim.record.data == record.data
    store.bury(claim, claim.record.damage, now)
    assert store.revive([record.id], now + 1) == 1
    (again,) = store.fetch_due(now + 1, 10, LEASE)
    assert (again.record.damage, again.record.data) == (None, record.data)


def test_a_damaged_claim_whose_lease_ran_out_is_handed_out_again_still_damaged(store, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    raw, header_key, header = _header(store, record.id)
    try:
        raw.set(header_key, json.dumps({**json.loads(header), "tok": 7}))
    finally:
        raw.close()
    (first,) = store.fetch_due(now, 10, LEASE)
    assert "tok=7" in first.record.damage
    assert store.fetch_due(now + 1, 10, LEASE) == []  # held, like any claim
    assert store.stats(now + 1).in_flight == 1
    assert store.stats(now + LEASE + 1).stuck == 1
    (second,) = store.fetch_due(now + LEASE + 1, 10, LEASE)
    assert second.record.damage == first.record.damage
    store.release(second)
    (third,) = store.fetch_due(now + LEASE + 1, 10, LEASE)
    store.bury(third, third.record.damage, now)
    assert store.dead_letters()[0].record.attempts == 1


def test_a_missing_message_is_never_recreated(store, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, LEASE)
    raw, header_key, header = _header(store, record.id)
    data_key = _data_key(store, record.id, header)
    try:
        raw.delete(header_key)
        raw.delete(data_key)
        # Every call a flusher or an operator makes on it, stale claim and all.
        for call in (store.ack, store.release, lambda c: store.bury(c, "x", now)):
            with pytest.raises(Exception, match="no longer held"):
                call(claim)
        with pytest.raises(Exception, match="no longer held"):
            store.requeue(claim, now + 3600, "451")
        assert store.fetch_due(now + LEASE + 1, 10, LEASE) == []
        store.stats(now)
        store.dead_letters()
        assert (raw.get(header_key), raw.get(data_key)) == (None, None)
        assert [d.record.id for d in store.dead_letters() if d.lost] == [record.id]
    finally:
        raw.close()


def test_a_damaged_dead_letter_is_reported_lost(store, now) -> None:
    record = make_record(now, last_error="550 no")
    store.add_dead([record], now)
    key = Keys(store.namespace).dead(record.id)
    raw, _ = raw_item(store.location, key)
    try:
        raw.set(key, b"{not json")
    finally:
        raw.close()
    stats = store.stats(now)
    assert (stats.dead, stats.lost) == (0, 1)
    (letter,) = store.dead_letters()
    assert (letter.record.id, letter.lost) == (record.id, True)
    assert "dead letter" in letter.reason


def test_a_dead_letter_whose_data_is_gone_is_counted_lost(store, now) -> None:
    record = make_record(now, last_error="550 no")
    store.add_dead([record], now)
    key = Keys(store.namespace).dead(record.id)
    raw, header = raw_item(store.location, key)
    try:
        raw.delete(_data_key(store, record.id, header))
    finally:
        raw.close()
    stats = store.stats(now)
    assert (stats.dead, stats.lost) == (0, 1)
    assert [(d.record.id, d.lost) for d in store.dead_letters()] == [(record.id, True)]


def test_a_damaged_loss_report_still_counts(store, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    raw, header_key, _ = _header(store, record.id)
    try:
        raw.delete(header_key)
        assert store.stats(now).lost == 1
        keys = Keys(store.namespace)
        report_raw, _ = raw_item(store.location, keys.slot("y", 1))
        report_raw.set(keys.slot("y", 1), b"\x00junk")
        report_raw.close()
    finally:
        raw.close()
    assert store.stats(now).lost == 1
    (letter,) = store.dead_letters()
    assert letter.lost and "damaged" in letter.reason


def test_damaged_bookkeeping_items_are_read_as_missing(store, memcached_server, now) -> None:
    """Junk in a cursor or counter the store reads does not stop a claim."""
    store.enqueue([make_record(now)])
    keys = Keys(store.namespace)
    raw, _ = raw_item(store.location, keys.epoch)
    try:
        for key in (keys.low, keys.top):
            raw.set(key, b"junk")
    finally:
        raw.close()
    assert len(store.fetch_due(now, 10, LEASE)) == 1
