"""Damaged records in a real Redis never stop the queue (issue 11, item 1).

Each record is damaged as an operator, an eviction or a stray client would,
with plain commands on the server: ``DEL``, ``HDEL ... created``, ``HSET ...
attempts 1.5``, ``SET`` over the hash, an id added to the ``due`` set with no
hash at all. The key names are the documented layout (docs/stores/redis.rst).
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailqueue_core.errors import LeaseLost
from mailqueue_core.flusher import Flusher
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import queue_numbered, tally


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


@pytest.fixture
def store(redis_server):
    s = RedisStore(redis_server.url, namespace=uuid.uuid4().hex)
    yield s
    s.close()


@pytest.fixture
def raw(redis_server):
    with redis_server.client() as client:
        yield client


def key(store: RedisStore, kind: str, mid: str = "") -> str:
    return f"mailqueue:{{{store.namespace}}}:{kind}{mid}"


def test_every_kind_of_damage_in_one_batch(store, raw, now):
    records = [make_record(now - 10 + i, attempts=2) for i in range(9)]
    store.enqueue(records)
    good = {records[0].id, records[8].id}
    deleted, no_created, no_data, bad_attempts, bad_created, overwritten, listed = (
        r.id for r in records[1:8]
    )
    raw.delete(key(store, "m:", deleted))
    raw.hdel(key(store, "m:", no_created), "created")
    raw.hdel(key(store, "m:", no_data), "data")
    raw.hset(key(store, "m:", bad_attempts), "attempts", "1.5")
    raw.hset(key(store, "m:", bad_created), "created", "abc")
    raw.set(key(store, "m:", overwritten), b'{"was": "overwritten"}')
    raw.delete(key(store, "m:", listed))
    raw.zrem(key(store, "created"), listed)  # only the due set still names it

    claims = {c.id: c for c in store.fetch_due(now, 20, LEASE)}

    assert set(claims) == good | {no_created, no_data, bad_attempts, bad_created}
    for mid in good:
        assert claims[mid].record.damage is None
    damage = {mid: claims[mid].record.damage for mid in claims if mid not in good}
    assert damage == {
        no_created: "damaged record: created is missing",
        no_data: "damaged record: data is missing",
        bad_attempts: "damaged record: attempts is '1.5', not a whole number",
        bad_created: "damaged record: created is 'abc', not a time",
    }
    # What could be read is there; the rest comes from the indexes.
    assert claims[no_created].record.created == pytest.approx(now - 8)
    assert claims[no_data].record.data == b""
    assert claims[bad_attempts].record.data == records[4].data
    assert claims[bad_created].record.created == pytest.approx(now - 5)
    # Nothing was created for the ids whose hash is gone or was never one.
    for mid in (deleted, listed):
        assert not raw.exists(key(store, "m:", mid))
    assert not raw.exists(key(store, "m:", overwritten))

    for mid in good:
        store.ack(claims[mid])
    for mid, reason in damage.items():
        store.bury(claims[mid], reason, now)

    stats = store.stats(now + 10 * LEASE)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck) == (0, 0, 0, 0)
    assert (stats.dead, stats.lost) == (5, 2)
    letters = {d.record.id: d for d in store.dead_letters()}
    assert {mid for mid, d in letters.items() if d.lost} == {deleted, listed}
    assert letters[deleted].record.created == pytest.approx(now - 9)
    assert letters[listed].record.data == b""
    assert "gone" in letters[listed].reason
    assert letters[overwritten].reason == "damaged record: its key holds a string, not a hash"
    assert letters[overwritten].record.data == b'{"was": "overwritten"}'
    for mid, reason in damage.items():
        assert letters[mid].reason == reason
        assert letters[mid].record.attempts == (1 if mid == bad_attempts else 3)


def test_a_damaged_record_comes_back_whole_when_revived(store, raw, now):
    record = make_record(now)
    store.enqueue([record])
    raw.hset(key(store, "m:", record.id), mapping={"attempts": "1.5", "due": "soon"})
    (claim,) = store.fetch_due(now, 1, LEASE)
    assert claim.record.damage == (
        "damaged record: due is 'soon', not a time; attempts is '1.5', not a whole number"
    )
    assert claim.record.due == now  # the due set still knew
    store.bury(claim, claim.record.damage, now)
    assert store.revive([record.id], now + 5) == 1
    (again,) = store.fetch_due(now + 5, 1, LEASE)
    assert again.record.damage is None
    assert (again.record.data, again.record.attempts) == (record.data, 0)


@pytest.mark.parametrize(
    ("field", "value", "damage"),
    [
        ("created", "nan", "created is 'nan', not a time"),
        ("due", "inf", "due is 'inf', not a time"),
        ("due", "0x10", "due is '0x10', not a time"),
        ("attempts", "", "attempts is '', not a whole number"),
        ("attempts", "-1", "attempts is '-1', not a whole number"),
        ("created", "", "created is '', not a time"),
    ],
)
def test_values_python_would_misread_are_damage(store, raw, now, field, value, damage):
    record = make_record(now)
    store.enqueue([record])
    raw.hset(key(store, "m:", record.id), field, value)
    (claim,) = store.fetch_due(now, 1, LEASE)
    assert claim.record.damage == f"damaged record: {damage}"


def test_a_damaged_claim_can_be_released_and_requeued(store, raw, now):
    record = make_record(now - 5)
    store.enqueue([record])
    raw.hset(key(store, "m:", record.id), mapping={"due": "", "attempts": "x"})
    (claim,) = store.fetch_due(now, 1, LEASE)
    store.release(claim)
    (claim,) = store.fetch_due(now, 1, LEASE)
    assert claim.record.due == now - 5
    store.requeue(claim, now + 60, "451 later")
    (again,) = store.fetch_due(now + 60, 1, LEASE)
    assert again.record.attempts == 1
    assert again.record.damage is None  # requeue wrote every field it had


@pytest.mark.parametrize("action", ["ack", "requeue", "release", "bury"])
def test_a_key_overwritten_while_claimed_is_a_lost_lease(store, raw, now, action):
    store.enqueue([make_record(now)])
    (claim,) = store.fetch_due(now, 1, LEASE)
    raw.set(key(store, "m:", claim.id), "gone")
    with pytest.raises(LeaseLost):
        if action == "ack":
            store.ack(claim)
        elif action == "requeue":
            store.requeue(claim, now, None)
        elif action == "release":
            store.release(claim)
        else:
            store.bury(claim, "550", now)
    # The next claim past the lease finds it and buries it with the reason.
    assert store.fetch_due(now + LEASE + 1, 1, LEASE) == []
    (letter,) = store.dead_letters()
    assert "string" in letter.reason


def test_damaged_dead_letters_are_listed_not_raised(store, raw, now):
    records = [make_record(now) for _ in range(3)]
    store.add_dead(records, now)
    raw.hdel(key(store, "d:", records[0].id), "created", "attempts")
    raw.set(key(store, "d:", records[1].id), "not a hash")
    letters = {d.record.id: d for d in store.dead_letters()}
    assert set(letters) == {r.id for r in records}
    assert "created is missing" in letters[records[0].id].reason
    assert letters[records[0].id].record.created == now  # the burial time stands in
    assert letters[records[1].id].record.data == b""
    assert letters[records[2].id].reason == ""
    # A dead letter that is not a hash is not revived into the queue.
    assert store.revive(None, now) == 2
    assert store.stats(now).ready == 2


def test_loss_reports_are_purged_and_never_revived(store, raw, now):
    records = [make_record(now) for _ in range(2)]
    store.enqueue(records)
    raw.delete(key(store, "m:", records[0].id))
    (claim,) = store.fetch_due(now, 10, LEASE)
    store.bury(claim, "550", now + 10)
    assert store.revive([records[0].id], now) == 0
    assert [d.record.id for d in store.dead_letters(limit=1)] == [records[0].id]
    assert store.purge(now + 1) == 1
    assert store.stats(now).lost == 0
    assert [d.record.id for d in store.dead_letters()] == [records[1].id]
    assert store.purge(now + 11) == 1
    assert raw.keys(key(store, "*")) == [key(store, "wake").encode()]  # it expires


def test_a_flush_delivers_the_rest_of_a_damaged_batch(redis_server, raw, smtp):
    namespace = uuid.uuid4().hex
    url = f"{redis_server.url}?namespace={namespace}"
    queue_numbered(url, 20)
    ids = sorted(m.decode() for m in raw.zrange(f"mailqueue:{{{namespace}}}:due", 0, -1))
    raw.delete(f"mailqueue:{{{namespace}}}:m:{ids[0]}")
    raw.set(f"mailqueue:{{{namespace}}}:m:{ids[1]}", "overwritten")
    raw.hdel(f"mailqueue:{{{namespace}}}:m:{ids[2]}", "data")
    with RedisStore(url) as store:
        result = Flusher(store, SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")).flush()
        stats = store.stats(time.time())
        letters = store.dead_letters()
    lost, duplicates = tally("redis, 3 of 20 damaged", 20, smtp.messages)
    print(f"flush: {result.summary()}; stats {stats.as_dict()}")
    assert (lost, duplicates) == (3, 0)  # the three damaged ones, reported below
    assert (stats.ready, stats.in_flight, stats.stuck, stats.dead, stats.lost) == (0, 0, 0, 2, 1)
    assert {d.record.id for d in letters} == set(ids[:3])
