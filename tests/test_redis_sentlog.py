"""The Redis store's sent log and heartbeats beyond the contract.

The contract tests (``ConsoleContract``, run by ``TestRedisStore`` and
``TestRedisClusterStore``) prove what every store promises; these prove what
the Redis layout adds: TTLs so that nothing outlives its ``expires``, pages
that skip records whose hash expired before a prune, ties of one send time
paged by rank, records changed by hand, reads that write nothing, and a full
server that still prunes.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from mailqueue_core import codec
from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.sentlog import SentLog
from mailqueue_core.store import SentRecord
from mailqueue_core.transport import Delivery
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.redis.sentlog import MAX_TTL_MS, member, ttl_ms
from tests.helpers import Clock, ScriptedTransport, message
from tests.test_redis_console import key, snapshot
from tests.test_store_redis import scan_namespace

DAY = 86400.0


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


def sent(mid: str, at: float, **fields: object) -> SentRecord:
    return SentRecord(id=mid, sent=at, recipients=("to@example.com",), **fields)  # type: ignore[arg-type]


def walk(store: RedisStore, now: float, limit: int, **kwargs: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = store.sent_log(now, limit=limit, cursor=cursor, **kwargs)  # type: ignore[arg-type]
        assert len(page.entries) <= limit
        ids += [record.id for record in page.entries]
        cursor = page.cursor
        if cursor is None:
            return ids
    raise AssertionError("sent_log() kept returning a cursor")


def record_key(store: RedisStore, record: SentRecord) -> str:
    return key(store, f"s:{member(record.sent, record.id)}")


# -- what is kept, where, and for how long --------------------------------------------


def test_each_record_expires_when_it_may_go_and_the_index_with_the_last(store, raw, now):
    kept_long = sent("long", now - 10, subject="Receipt", message_id="<1@x>")
    store.log_sent([kept_long], now + 3600)
    kept_short = sent("short", now - 5)
    store.log_sent([kept_short], now + 60)
    assert raw.pttl(record_key(store, kept_long)) == pytest.approx(3_610_000, abs=5_000)
    assert raw.pttl(record_key(store, kept_short)) == pytest.approx(65_000, abs=5_000)
    # A shorter-kept record logged later does not shorten the index's life.
    assert raw.pttl(key(store, "sent")) == pytest.approx(3_610_000, abs=5_000)
    assert raw.hgetall(record_key(store, kept_long)) == {
        b"recipients": b'["to@example.com"]',
        b"subject": b"Receipt",
        b"message_id": b"<1@x>",
        b"transport": b"",
        b"attempts": b"1",
        b"created": b"0.0",
        b"data": b"",
    }
    assert raw.zscore(key(store, "sent"), member(now - 10, "long")) == now - 10


def test_ttls_have_a_floor_and_a_ceiling():
    assert ttl_ms(100.0, 100.25) == 1000  # already past: kept a second all the same
    assert ttl_ms(100.0, float("nan")) == 1000
    assert ttl_ms(100.0, 102.0001) == 2001
    assert ttl_ms(100.0, float("inf")) == MAX_TTL_MS


def test_a_record_logged_again_keeps_its_first_copy(store, now):
    store.log_sent([sent("m0", now, subject="first"), sent("m0", now, subject="again")], now + 60)
    store.log_sent([sent("m0", now, subject="later batch")], now + 60)
    store.log_sent([sent("m0", now + 1, subject="sent twice")], now + 60)  # a second delivery
    store.log_sent([sent("z", -0.0), sent("z", 0.0)], now + 60)  # one time, one record
    assert [(r.id, r.subject) for r in store.sent_log(now).entries] == [
        ("m0", "sent twice"),
        ("m0", "first"),
        ("z", ""),
    ]
    assert store.count_sent(now) == 2 and store.count_sent(-1) == 3


def test_a_flusher_logs_what_it_delivered(store, now):
    clock = Clock(now)
    msg = message("a@example.com", "b@example.com", created=now, subject="Receipt")
    queued = codec.to_record(msg)
    store.enqueue([queued])
    transport = ScriptedTransport(lambda m: Delivery(transport="relay", provider_id="p-1"))
    Flusher(store, transport, clock=clock, sent_log=SentLog(DAY, body=True)).flush()
    (logged,) = store.sent_log(now).entries
    assert (logged.id, logged.sent, logged.subject) == (msg.id, now, "Receipt")
    assert logged.recipients == ("a@example.com", "b@example.com")
    assert (logged.transport, logged.provider_id, logged.message_id) == (
        "relay",
        "p-1",
        msg.message_id,
    )
    assert logged.data == queued.data


# -- pages --------------------------------------------------------------------------


def test_ties_page_in_id_order_both_ways_and_resume_without_their_record(store, raw, now):
    ids = sorted(["a1", "B2", "b3", "_4", "Z5", "a10", "é6", "~7", "x:y"], key=str.encode)
    ids += [f"t{i:03d}" for i in range(40)]
    ids.sort(key=str.encode)
    store.log_sent([sent(mid, now - 5) for mid in ids], now + 60)
    store.log_sent([sent("first", now - 9), sent("last", now - 1)], now + 60)
    expected = ["first", *ids, "last"]
    for limit in (1, 7, 50):
        assert walk(store, now, limit, newest_first=False) == expected
        assert walk(store, now, limit) == expected[::-1]
    page = store.sent_log(now, limit=10, newest_first=False)
    assert [r.id for r in page.entries] == expected[:10]
    # The cursor's record and the next one leave the ties meanwhile (removed by hand):
    # resuming finds the place among the ties without them (bisection, not ZRANK).
    raw.zrem(key(store, "sent"), member(now - 5, expected[9]), member(now - 5, expected[10]))
    cursor = page.cursor
    rest: list[str] = []
    while cursor is not None:
        page = store.sent_log(now, limit=10, cursor=cursor, newest_first=False)
        rest += [r.id for r in page.entries]
        cursor = page.cursor
    assert rest == expected[11:]


def test_expired_records_are_skipped_and_pages_go_on(store, raw, now):
    records = [sent(f"m{i:03d}", now - 300 + i) for i in range(300)]
    store.log_sent(records, now + 3600)
    for record in records[:200]:  # as their TTL would: the hash goes, the member stays
        raw.delete(record_key(store, record))
    first = store.sent_log(now, limit=5, newest_first=False)
    # Three walks of 6, 24 and 96 members found nothing: a short page that moved on.
    assert first.entries == [] and first.cursor is not None
    second = store.sent_log(now, limit=5, cursor=first.cursor, newest_first=False)
    assert [r.id for r in second.entries] == [f"m{i:03d}" for i in range(200, 205)]
    assert walk(store, now, 7, newest_first=False) == [r.id for r in records[200:]]
    assert walk(store, now, 7) == [r.id for r in records[:199:-1]]
    # A page whose end expired: its walks reach the log's start (21 + 84 + 96 of 336).
    newest = store.sent_log(now, limit=99)
    tail = store.sent_log(now, limit=20, cursor=newest.cursor)
    assert [r.id for r in tail.entries] == ["m200"] and tail.cursor is None
    assert store.count_sent(0) == 300  # the index still names them until a prune
    assert store.prune_sent(now - 100) == 200
    assert store.count_sent(0) == 100
    assert store.sent_log(now, limit=5, newest_first=False).entries[0].id == "m200"


def test_a_record_changed_by_hand_is_left_out_and_named(store, raw, now, caplog):
    records = [sent(f"m{i}", now - 10 + i) for i in range(5)]
    store.log_sent(records, now + 60)
    raw.hset(record_key(store, records[0]), "attempts", "1.5")
    raw.hset(record_key(store, records[1]), "recipients", "not json")
    raw.hset(record_key(store, records[2]), "recipients", '{"to": "a@example.com"}')
    raw.delete(record_key(store, records[3]))
    raw.set(record_key(store, records[3]), b"overwritten")
    with caplog.at_level(logging.WARNING, logger="mailqueue"):
        assert [r.id for r in store.sent_log(now).entries] == ["m4"]
    assert "sent log record m0" in caplog.text and "not a list of addresses" in caplog.text
    assert "m3" not in caplog.text  # not a hash: as good as expired


def test_a_page_reads_no_more_records_than_it_shows(store, redis_server, raw, now):
    store.log_sent([sent(f"m{i:05d}", now - 5000 + i) for i in range(5000)], now + 60)
    page = store.sent_log(now, limit=50)
    raw.config_resetstat()
    following = store.sent_log(now, limit=50, cursor=page.cursor)
    assert [r.id for r in following.entries] == [f"m{i:05d}" for i in range(4949, 4899, -1)]
    stats = raw.info("commandstats")
    assert stats["cmdstat_hmget"]["calls"] == 51 and stats["cmdstat_zrange"]["calls"] == 1


def test_reads_create_and_change_nothing(store, redis_server, now):
    assert store.sent_log(now).entries == [] and store.count_sent(0) == 0
    assert store.beats(now) == {} and store.prune_sent(now) == 0
    assert scan_namespace(redis_server, store.namespace) == []
    store.log_sent([sent(f"m{i}", now - i) for i in range(3)], now + 60)
    store.beat("web1:1", now, now + 60)
    before = snapshot(redis_server, store)
    for newest_first in (False, True):
        store.sent_log(now, limit=1, newest_first=newest_first)
    store.count_sent(0)
    store.beats(now)
    assert snapshot(redis_server, store) == before


def test_cursors_and_limits_that_cannot_page(store, now):
    with pytest.raises(ValueError, match="not a cursor"):
        store.sent_log(now, cursor='[1.5,"m","x"]')
    with pytest.raises(ValueError, match="limit of at least 1"):
        store.sent_log(now, limit=0)
    store.log_sent([], now)  # nothing to log is no call


def test_many_records_are_pruned_in_chunks(store, redis_server, now):
    store.log_sent([sent(f"m{i:04d}", now - 2000 + i) for i in range(1200)], now + 60)
    assert store.prune_sent(now - 900) == 1100
    assert walk(store, now, 500, newest_first=False) == [f"m{i:04d}" for i in range(1100, 1200)]
    assert store.prune_sent(now + 1) == 100
    assert scan_namespace(redis_server, store.namespace) == []


def test_a_full_server_refuses_the_log_and_still_prunes_and_beats(redis_server_factory, now):
    server = redis_server_factory(appendonly=False)
    with RedisStore(server.url, namespace="full") as store:
        store.log_sent([sent(f"m{i}", now - i) for i in range(3)], now + 60)
        with server.client() as client:
            client.config_set("maxmemory", "1")
        try:
            with pytest.raises(StoreUnavailable, match="maxmemory"):
                store.log_sent([sent("late", now)], now + 60)
            store.beat("web1:1", now, now + 60)
            assert [r.id for r in store.sent_log(now).entries] == ["m0", "m1", "m2"]
            assert store.prune_sent(now - 1) == 1
            assert store.beats(now) == {"web1:1": now}
        finally:
            with server.client() as client:
                client.config_set("maxmemory", "0")


# -- heartbeats ---------------------------------------------------------------------


def test_heartbeats_expire_with_the_last_note_and_forget_old_ones(store, raw, now):
    store.beat("web1:1", now - 100, now - 50)
    store.beat("web2:2", now, now + 60)
    assert raw.hkeys(key(store, "beats")) == [b"web2:2"]  # web1's note was forgotten
    assert raw.zrange(key(store, "beats:until"), 0, -1) == [b"web2:2"]
    store.beat("web3:3", now, now + 10)
    for name in ("beats", "beats:until"):
        assert raw.pttl(key(store, name)) == pytest.approx(60_000, abs=5_000)
    assert store.beats(now + 30) == {"web2:2": now}


def test_a_heartbeat_changed_by_hand_is_left_out(store, raw, now, caplog):
    store.beat("web1:1", now, now + 60)
    store.beat("web2:2", now, now + 60)
    raw.hset(key(store, "beats"), "web1:1", "yesterday")
    raw.hdel(key(store, "beats"), "web2:2")
    with caplog.at_level(logging.WARNING, logger="mailqueue"):
        assert store.beats(now) == {}
    assert "web1:1" in caplog.text and "not a time" in caplog.text
