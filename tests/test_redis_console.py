"""The Redis store's console (browse, get, delete, send now, pause) beyond the contract.

The contract tests (``ConsoleContract``, run by ``TestRedisStore`` and
``TestRedisClusterStore``) prove the promises every store keeps; these prove
what the Redis layout makes hard: ties of one due time paged by rank, windows
crowded with claimed ids, dead letters merged with loss reports, keys damaged
by hand, reads that write nothing, and a delete that keeps every index clean.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.store import State
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.redis.browsing import Position
from tests.test_store_redis import scan_namespace


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


def key(store: RedisStore, name: str) -> str:
    return f"mailqueue:{{{store.namespace}}}:{name}"


def walk(store: RedisStore, state: State, now: float, limit: int, **kwargs) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = store.browse(state, now, limit=limit, cursor=cursor, **kwargs)
        assert len(page.entries) <= limit
        ids += [entry.id for entry in page.entries]
        cursor = page.cursor
        if cursor is None:
            return ids
    raise AssertionError("browse() kept returning a cursor")


def snapshot(server, store: RedisStore) -> dict[bytes, bytes]:
    """Every key of the namespace with its serialized value."""
    with server.client() as client:
        return {name: client.dump(name) for name in scan_namespace(server, store.namespace)}


# -- ties and pages ---------------------------------------------------------------


def test_ties_page_in_id_order_both_ways(store, now):
    # Ids whose byte order differs from a locale's collation ("B" < "a" < "b").
    ids = sorted(
        ["a1", "B2", "b3", "_4", "Z5", "a10", "é6", "~7"] + [f"t{i:03d}" for i in range(60)]
    )
    store.enqueue([make_record(now - 5, id=mid) for mid in ids])
    store.enqueue([make_record(now - 9, id="first"), make_record(now - 1, id="last")])
    expected = ["first", *sorted(ids, key=lambda m: m.encode()), "last"]
    for limit in (1, 7, 50):
        assert walk(store, State.READY, now, limit) == expected
        assert walk(store, State.READY, now, limit, newest_first=True) == expected[::-1]


def test_a_cursor_whose_record_left_the_ties_resumes_after_it(store, now):
    ids = [f"m{i:03d}" for i in range(40)]
    store.enqueue([make_record(now - 5, id=mid) for mid in ids])
    for newest_first, seen, rest in (
        (False, ids[:10], ids[10:]),
        (True, ids[:29:-1], ids[29::-1]),
    ):
        page = store.browse(State.READY, now, limit=10, newest_first=newest_first)
        assert [e.id for e in page.entries] == seen
        # The cursor's own record goes, and so does the next one: resuming finds
        # the place among the ties without them (bisection, not ZRANK).
        assert store.delete([seen[-1]], now) == 1
        gone_next = rest[0]
        assert store.delete([gone_next], now) == 1
        following = []
        cursor = page.cursor
        while cursor is not None:
            page = store.browse(
                State.READY, now, limit=10, cursor=cursor, newest_first=newest_first
            )
            following += [e.id for e in page.entries]
            cursor = page.cursor
        assert following == rest[1:]
        store.enqueue([make_record(now - 5, id=mid) for mid in (seen[-1], gone_next)])


def test_resuming_deep_in_ties_costs_a_few_probes(redis_server_factory, now):
    server = redis_server_factory(appendonly=False)
    with RedisStore(server.url, namespace="ties") as store, server.client() as client:
        ids = [f"m{i:05d}" for i in range(5000)]
        for start in range(0, len(ids), 1000):
            store.enqueue([make_record(now - 5, id=mid) for mid in ids[start : start + 1000]])
        cursor = Position(now - 5, "m02500").encode()
        store.delete(["m02500"], now)  # gone: no ZRANK, a bisection over 5000 ties
        client.config_resetstat()
        page = store.browse(State.READY, now, limit=50, cursor=cursor)
        assert [e.id for e in page.entries] == ids[2501:2551]
        stats = client.info("commandstats")
        # 13 probes for 5000 ties, and one ZRANGE for the page.
        assert stats["cmdstat_zrange"]["calls"] <= 15
        assert stats["cmdstat_zrange"]["calls"] >= 10


def test_a_window_crowded_with_claims_gives_short_pages_and_goes_on(store, now):
    store.enqueue([make_record(now - 200, id=f"f{i:03d}") for i in range(300)])
    assert len(store.fetch_due(now - 200, 300, 3600.0)) == 300  # in flight: `due` after now
    store.enqueue([make_record(now - 100, id=f"k{i:03d}") for i in range(300)])
    assert len(store.fetch_due(now - 100, 300, 10.0)) == 300  # stuck by now, still in `due`
    store.enqueue([make_record(now - 50 + i, id=f"r{i}") for i in range(3)])
    store.enqueue([make_record(now + 10 + i, id=f"s{i}") for i in range(3)])
    first = store.browse(State.READY, now, limit=5)
    assert first.entries == [] and first.cursor is not None  # 300 stuck examined at most
    assert walk(store, State.READY, now, 5) == ["r0", "r1", "r2"]
    assert walk(store, State.SCHEDULED, now, 5) == ["s0", "s1", "s2"]
    assert walk(store, State.SCHEDULED, now, 5, newest_first=True) == ["s2", "s1", "s0"]
    assert len(walk(store, State.STUCK, now, 100)) == 300
    assert len(walk(store, State.IN_FLIGHT, now, 100)) == 300


# -- dead letters and losses ------------------------------------------------------


def test_dead_letters_and_losses_merge_in_time_order(store, raw, now):
    store.enqueue([make_record(now - 50 + i, id=f"d{i}") for i in range(3)])
    for claim in store.fetch_due(now, 3, LEASE):
        store.bury(claim, "550", now - 30 + 10 * int(claim.id[1:]))  # buried at -30, -20, -10
    store.enqueue([make_record(now - 40, id="gone")])
    raw.delete(key(store, "m:gone"))
    assert store.fetch_due(now - 25, 1, LEASE) == []  # loss found at now - 25
    # A dead letter and a loss report of one id and one time: dead first.
    raw.zadd(key(store, "lost"), {"d1": now - 20})
    raw.hset(key(store, "l:d1"), mapping={"created": now - 60, "due": now - 60, "reason": "x"})
    expected = ["d0", "gone", "d1", "d1", "d2"]
    for limit in (1, 2, 3, 10):
        assert walk(store, State.DEAD, now, limit) == expected
        assert walk(store, State.DEAD, now, limit, newest_first=True) == expected[::-1]
    entries = store.browse(State.DEAD, now, limit=10).entries
    assert [e.lost for e in entries] == [False, True, False, True, False]
    gone = entries[1]
    assert (gone.record.data, gone.buried, gone.record.due) == (b"", now - 25, now - 40)
    assert "gone" in (gone.reason or "")
    lost = store.get("gone", now)
    assert lost is not None and lost.lost and lost.state is State.DEAD
    assert store.delete(["gone"], now) == 1
    assert store.get("gone", now) is None and raw.exists(key(store, "l:gone")) == 0


# -- damage, reads, cursors -----------------------------------------------------


def test_keys_damaged_by_hand_are_listed_with_the_damage(store, raw, now):
    store.enqueue([make_record(now - 10 + i, id=f"m{i}") for i in range(4)])
    raw.delete(key(store, "m:m0"))
    raw.delete(key(store, "m:m1"))
    raw.set(key(store, "m:m1"), b"overwritten")
    raw.hset(key(store, "m:m2"), "due", "soon")
    store.add_dead([make_record(now - 30, id="d0", last_error="550")], now)
    raw.hdel(key(store, "d:d0"), "data")
    listed = {e.id: e for e in store.browse(State.READY, now, limit=10).entries}
    assert list(listed) == ["m0", "m1", "m2", "m3"]
    assert listed["m0"].record.damage == "damaged record: its record is gone (deleted or evicted)"
    assert listed["m1"].record.damage == "damaged record: its key holds a string, not a hash"
    assert listed["m1"].record.due == now - 9 and listed["m1"].record.created == now - 9
    assert listed["m2"].record.damage == "damaged record: due is 'soon', not a time"
    assert listed["m2"].record.due == now - 8  # what the due set knew
    assert listed["m3"].record.damage is None
    (dead,) = store.browse(State.DEAD, now).entries
    assert dead.record.damage == "damaged dead letter: data is missing"
    assert dead.reason == "550 (dead letter damaged: data is missing)"
    # A claim of a damaged hash reads as held, without the due time's fallback.
    raw.hset(key(store, "m:m3"), "due", "later")
    claims = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
    assert set(claims) == {"m2", "m3"}  # m0 reported lost, m1 buried
    flying = store.get("m3", now)
    assert flying is not None and flying.state is State.IN_FLIGHT
    assert flying.record.damage == "damaged record: due is 'later', not a time"
    assert flying.record.due == 0.0


def test_reads_create_and_change_nothing(store, redis_server, now):
    for state in State:
        assert store.browse(state, now).entries == []
    assert store.get("nothing", now) is None
    assert not store.paused()
    assert scan_namespace(redis_server, store.namespace) == []
    store.enqueue([make_record(now - 10 + i, id=f"m{i}") for i in range(6)])
    store.fetch_due(now - 5, 2, 1.0)  # m0 and m1 stuck
    store.fetch_due(now, 1, LEASE)  # m2 in flight
    store.add_dead([make_record(now, id="d0", last_error="550")], now)
    before = snapshot(redis_server, store)
    for state in State:
        for newest_first in (False, True):
            store.browse(state, now, limit=1, newest_first=newest_first)
    for mid in ("m0", "m2", "m5", "d0", "nothing"):
        store.get(mid, now)
    store.paused()
    assert snapshot(redis_server, store) == before


def test_reads_work_on_a_server_that_refuses_writes(redis_server_factory, now):
    server = redis_server_factory("--min-replicas-to-write", "1", appendonly=False)
    with RedisStore(server.url, namespace="noreplicas") as store:
        assert store.browse(State.READY, now).entries == []
        assert store.get("m0", now) is None
        assert not store.paused()
        with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
            store.set_paused(True)


@pytest.mark.parametrize(
    "cursor",
    ['[1.5,"m",1]', '[1.5,"m","dead"]', '[NaN,"m"]', '[true,"m"]', '["1","m"]', "[1.5,2]", "7"],
)
def test_a_cursor_of_another_shape_says_what_it_is(store, now, cursor):
    with pytest.raises(ValueError, match="not a cursor of this redis store's browse"):
        store.browse(State.READY, now, cursor=cursor)


def test_cursors_and_limits_that_cannot_page(store, now):
    lost_cursor = Position(now, "m0", lost=True).encode()
    assert Position.decode(lost_cursor) == Position(now, "m0", lost=True)
    with pytest.raises(ValueError, match="dead letters"):
        store.browse(State.READY, now, cursor=lost_cursor)
    assert store.browse(State.DEAD, now, cursor=lost_cursor).entries == []
    with pytest.raises(ValueError, match="limit of at least 1"):
        store.browse(State.READY, now, limit=0)


# -- delete and send now ----------------------------------------------------------


def test_delete_leaves_no_index_entry_behind(store, redis_server, raw, now):
    store.enqueue([make_record(now - 40, id="flying")])
    (flying,) = store.fetch_due(now - 40, 1, 3600.0)
    store.enqueue([make_record(now - 30, id="stuck")])
    assert [c.id for c in store.fetch_due(now - 30, 1, 5.0)] == ["stuck"]
    store.enqueue([make_record(now - 1, id="ready"), make_record(now + 60, id="later")])
    store.add_dead([make_record(now, id="dead", last_error="550")], now)
    raw.set(key(store, "m:stray"), b"no index names it")
    ids = ["stuck", "ready", "later", "dead", "stray", "flying", "stuck", "unknown"]
    assert store.delete(ids, now) == 5
    left = sorted(name.decode() for name in scan_namespace(redis_server, store.namespace))
    assert left == sorted(key(store, name) for name in ("m:flying", "due", "held", "created"))
    for index in ("due", "held", "created"):
        assert [m.decode() for m in raw.zrange(key(store, index), 0, -1)] == ["flying"]
    store.ack(flying)
    assert scan_namespace(redis_server, store.namespace) == []


def test_delete_keeps_a_lease_the_server_clock_still_runs(redis_server, now):
    namespace = uuid.uuid4().hex
    with (
        RedisStore(redis_server.url, namespace=namespace) as store,
        RedisStore(redis_server.url, namespace=namespace, max_clock_skew="inf") as trusting,
    ):
        store.enqueue([make_record(now, id="m0")])
        store.fetch_due(now, 1, 300.0)
        later = now + 400  # past the lease by this clock; the server's has 300 s to go
        entry = store.get("m0", later)
        assert entry is not None and entry.state is State.STUCK
        assert store.fetch_due(later, 1, LEASE) == []  # a claim would not take it over
        assert store.delete(["m0"], later) == 0
        assert trusting.delete(["m0"], later) == 1


def test_send_now_changes_the_due_time_and_nothing_else(store, raw, now):
    store.enqueue([make_record(now + 500, id="retry", attempts=3, last_error="421")])
    store.enqueue([make_record(now + 500, id=f"m{i}") for i in range(3)])
    raw.delete(key(store, "m:m0"))
    raw.delete(key(store, "m:m1"))
    raw.set(key(store, "m:m1"), b"overwritten")
    before = raw.hgetall(key(store, "m:retry"))
    assert store.send_now(["retry", "retry", "m0", "m1", "m2"], now) == 2
    after = raw.hgetall(key(store, "m:retry"))
    assert after == {**before, b"due": repr(now).encode()}
    assert raw.zscore(key(store, "due"), "retry") == now
    assert raw.exists(key(store, "m:m0")) == 0 and raw.get(key(store, "m:m1")) == b"overwritten"
    assert raw.zscore(key(store, "due"), "m1") == now + 500
    stuck = store.fetch_due(now, 10, 1.0)  # the lease ran out by now + 50
    assert {c.id for c in stuck} == {"retry", "m2"}
    assert store.send_now(["retry", "m2"], now + 50) == 0  # stuck is still claimed


def test_many_ids_are_deleted_and_sent_in_chunks(store, now):
    store.enqueue([make_record(now + 60, id=f"m{i:04d}") for i in range(1200)])
    assert store.send_now([f"m{i:04d}" for i in range(700)], now) == 700
    assert store.delete([f"m{i:04d}" for i in range(100, 1200)], now) == 1100
    assert walk(store, State.READY, now, 500) == [f"m{i:04d}" for i in range(100)]


# -- the pause flag -----------------------------------------------------------------


def test_pause_is_one_key_that_survives_a_restart(redis_server_factory):
    server = redis_server_factory()
    with RedisStore(server.url, namespace="paused") as store:
        store.set_paused(True)
        with server.client() as client:
            assert client.get("mailqueue:{paused}:paused") == b"1"
        server.kill()  # the AOF was written before the reply: a crash of Redis alone keeps it
        server.start()
        assert store.paused()
        store.set_paused(False)
        with server.client() as client:
            assert client.exists("mailqueue:{paused}:paused") == 0


def test_a_full_server_can_still_be_paused_and_cleaned(redis_server_factory, now):
    server = redis_server_factory(appendonly=False)
    with RedisStore(server.url, namespace="full") as store:
        store.enqueue([make_record(now + 60, id=f"m{i}") for i in range(3)])
        with server.client() as client:
            client.config_set("maxmemory", "1")
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            store.enqueue([make_record(now)])
        store.set_paused(True)
        assert store.paused()
        assert store.send_now(["m0"], now) == 1
        assert store.delete(["m1"], now) == 1
        assert [e.id for e in store.browse(State.SCHEDULED, now).entries] == ["m2"]
        with server.client() as client:
            client.config_set("maxmemory", "0")
