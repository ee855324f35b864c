"""The Redis store's wake-ups beyond the contract (mailqueue_stores/redis/wakeups.py).

What wakes and what does not, several waiters, a burst, a damaged stream, and
what a server that stops, dies or is demoted does to a client blocked in ``XREAD``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from mailqueue_core.errors import StoreError, StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.redis.keys import RedisKeys
from mailqueue_stores.redis.wakeups import KEEP, MARGIN, SLICE
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import record
from tests.servers.redis import HOST


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


@pytest.fixture
def stores(redis_server) -> Iterator[Callable[..., RedisStore]]:
    """``make(**options)``: stores on one namespace of the session's server."""
    namespace = uuid.uuid4().hex
    made: list[RedisStore] = []

    def make(url: str = redis_server.url, **options: object) -> RedisStore:
        store = RedisStore(url, namespace=namespace, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def raw(redis_server) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


def waiting(store: RedisStore, timeout: float) -> Callable[[], tuple[bool | Exception, float]]:
    """Start ``store.wait_for_mail(timeout)`` in a thread; the returned call joins it
    and gives (its answer or what it raised, the seconds it took)."""
    answer: list[tuple[bool | Exception, float]] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            result: bool | Exception = store.wait_for_mail(timeout)
        except Exception as exc:
            result = exc
        answer.append((result, time.monotonic() - started))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)  # blocked in XREAD by now

    def join() -> tuple[bool | Exception, float]:
        thread.join(timeout + 10)
        (result,) = answer
        return result

    return join


def test_every_waiting_flusher_wakes_and_each_once(stores, now):
    store, first, second = stores(), stores(), stores()
    first.fetch_due(now, 10, LEASE)
    second.fetch_due(now, 10, LEASE)
    joins = [waiting(first, 10.0), waiting(second, 10.0)]
    store.enqueue([make_record(now)])
    for join in joins:
        woken, took = join()
        assert woken is True and took < 5.0
    assert first.wait_for_mail(0.1) is False
    assert second.wait_for_mail(0.1) is False


def test_a_burst_leaves_one_entry_that_expires(stores, raw, now):
    store, waiter = stores(), stores()
    waiter.fetch_due(now, 10, LEASE)
    for _ in range(50):
        store.enqueue([make_record(now)])
    wake = RedisKeys(store.namespace).wake
    assert raw.xlen(wake) == 1
    assert KEEP - 10 < raw.ttl(wake) <= KEEP
    assert waiter.wait_for_mail(1.0) is True
    assert waiter.wait_for_mail(0.1) is False  # fifty enqueues, one wake-up


def test_what_wakes_and_what_does_not(stores, now):
    store, waiter = stores(), stores()
    record = make_record(now + 600)
    store.enqueue([record, make_record(now - 1)])
    (sent,) = waiter.fetch_due(now, 10, LEASE)
    waiter.ack(sent)
    (claim,) = waiter.fetch_due(now + 700, 10, LEASE)
    assert waiter.wait_for_mail(0) is False
    store.enqueue([record])  # already queued: nothing added
    store.set_paused(True)
    assert store.send_now([record.id, "unknown"], now) == 0  # held by the claim
    waiter.bury(claim, "550 no such user", now)
    assert waiter.wait_for_mail(0.1) is False
    assert store.revive([record.id], now) == 1
    assert waiter.wait_for_mail(0) is True
    store.set_paused(False)  # a resume may let held mail go
    assert waiter.wait_for_mail(0) is True
    store.enqueue([later := make_record(now + 600)])
    assert waiter.wait_for_mail(0) is True
    assert store.send_now([later.id], now) == 1
    assert waiter.wait_for_mail(0) is True
    assert waiter.wait_for_mail(0) is False


def test_a_first_wait_without_a_claim_waits_for_what_comes_next(stores, now):
    store = stores()
    store.enqueue([make_record(now)])
    fresh = stores()
    assert fresh.wait_for_mail(0.05) is False
    join = waiting(fresh, 10.0)
    store.enqueue([make_record(now)])
    woken, took = join()
    assert woken is True and took < 5.0


def test_a_long_wait_goes_on_past_a_slice_and_ends_in_time(stores, now):
    store, waiter = stores(), stores()
    waiter.fetch_due(now, 10, LEASE)
    started = time.monotonic()
    assert waiter.wait_for_mail(SLICE * 2.5) is False
    assert SLICE * 2.5 <= time.monotonic() - started < SLICE * 2.5 + 1.0
    join = waiting(waiter, 10.0)
    time.sleep(SLICE)  # into the wait's second slice at least
    store.enqueue([make_record(now)])
    woken, took = join()
    assert woken is True and took < 5.0


def test_a_stream_damaged_by_hand_is_replaced(stores, raw, now):
    store, waiter = stores(), stores()
    wake = RedisKeys(store.namespace).wake
    raw.set(wake, b"not a stream")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        waiter.wait_for_mail(0.01)
    assert waiter.fetch_due(now, 10, LEASE) == []  # the claim clears it
    assert raw.exists(wake) == 0
    raw.set(wake, b"not a stream")
    store.enqueue([make_record(now)])  # the enqueue replaces it
    assert raw.type(wake) == b"stream"
    assert waiter.wait_for_mail(1.0) is True


@pytest.mark.skipif(
    tuple(int(p) for p in redis.__version__.split(".")[:2]) < (8, 0),
    reason="legacy_responses is a redis-py 8 option",
)
def test_wakes_whatever_shape_redis_py_gives_xread(stores, now):
    store = stores()
    store.enqueue([make_record(now)])
    waiter = stores(client_options={"legacy_responses": False})
    assert waiter.wait_for_mail(0) is False  # reads the newest entry first (XREVRANGE)
    store.enqueue([make_record(now)])
    assert waiter.wait_for_mail(1.0) is True
    assert waiter.wait_for_mail(0) is False


def test_a_service_flusher_sends_new_mail_at_once(redis_server, smtp):
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    with RedisStore(url) as web, RedisStore(url) as flushing:
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
        stop = threading.Event()
        service = threading.Thread(
            target=Flusher(flushing, transport).run, args=(stop,), kwargs={"interval": 60.0}
        )
        service.start()
        try:
            time.sleep(0.5)  # its first run found nothing; it waits for a minute
            web.enqueue([record("a@example.com", created=time.time())])
            smtp.wait_for(1, timeout=5)
        finally:
            stop.set()
            service.join(10)


# -- servers that stop answering, die, or are demoted --------------------------------


def test_a_frozen_master_cuts_a_wait_short(redis_server_factory, now):
    server = redis_server_factory(appendonly=False)
    with RedisStore(server.url, namespace="frozen") as waiter:
        waiter.fetch_due(now, 10, LEASE)
        join = waiting(waiter, 30.0)
        server.pause()
        try:
            failed, took = join()
        finally:
            server.resume()
        assert isinstance(failed, StoreUnavailable)
        assert took < SLICE + MARGIN + 0.5  # not the 30 s asked, nor socket_timeout's 5
        assert waiter.wait_for_mail(0.01) is False  # and it reconnects


def test_a_killed_master_ends_a_wait_at_once(redis_server_factory, now):
    server = redis_server_factory(appendonly=False)
    with RedisStore(server.url, namespace="killed") as waiter:
        waiter.fetch_due(now, 10, LEASE)
        join = waiting(waiter, 30.0)
        server.kill()
        failed, took = join()
        assert isinstance(failed, StoreUnavailable) and took < 2.0
        with pytest.raises(StoreUnavailable):
            waiter.wait_for_mail(0.01)
        server.start()
        assert waiter.wait_for_mail(0.01) is False


def test_a_demoted_master_ends_a_wait(redis_server_factory, now):
    master, other = (redis_server_factory(appendonly=False) for _ in range(2))
    with RedisStore(master.url, namespace="demoted") as waiter:
        waiter.fetch_due(now, 10, LEASE)
        join = waiting(waiter, 30.0)
        with master.client() as client:
            client.replicaof(HOST, other.port)
        try:
            failed, took = join()
        finally:
            with master.client() as client:
                client.replicaof("NO", "ONE")
        assert isinstance(failed, StoreUnavailable) and took < 2.0
        assert "stopped being the master" in str(failed)
