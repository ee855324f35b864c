"""The flusher as a service: store failures, Store.verify(), starting over.

On the memory store (subclassed where a store must fail on cue) with a scripted
transport and an injected clock; the same behaviours through real processes are
in tests/test_flush_command.py.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid

import pytest

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.transport import Delivery
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, record

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)


class FailingStore(MemoryStore):
    """A memory store whose claims, acks or checks fail on cue."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetch_failures = 0
        self.ack_failures = 0
        self.verify_errors: list[Exception] = []
        self.verified = 0

    def fetch_due(self, now, limit, lease):
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise StoreUnavailable("connection refused")
        return super().fetch_due(now, limit, lease)

    def ack(self, claim):
        if self.ack_failures:
            self.ack_failures -= 1
            raise StoreUnavailable("connection reset")
        super().ack(claim)

    def verify(self):
        self.verified += 1
        if self.verify_errors:
            raise self.verify_errors.pop(0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> FailingStore:
    return FailingStore(f"memory://{uuid.uuid4().hex}")


def flusher(store, transport, clock, **kwargs) -> Flusher:
    return Flusher(store, transport, policy=POLICY, clock=clock, **kwargs)


def stop_after_sent(stop: threading.Event, n: int):
    seen = []

    def on_result(result):
        seen.append(result.sent)
        if sum(seen) >= n:
            stop.set()

    return on_result


def test_a_service_outlives_store_failures_backing_off_capped(store, clock, caplog):
    caplog.set_level(logging.INFO, "mailqueue")
    store.enqueue([record(created=clock.now)])
    store.fetch_failures = 5
    stop = threading.Event()
    total = flusher(store, ScriptedTransport(), clock).run(
        stop, interval=0.001, max_backoff=0.004, on_result=stop_after_sent(stop, 1)
    )
    assert total.sent == 1
    waits = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"trying again in ([\d.]+) s", r.getMessage()))
    ]
    assert waits == [0.001, 0.002, 0.004, 0.004, 0.004]  # doubling, then capped
    assert any("the store answers again, after 5 failed tries" in m for m in caplog.messages)


def test_a_service_outlives_a_failed_ack_and_gives_the_unsent_claims_back(store, clock):
    store.enqueue([record(created=clock.now) for _ in range(3)])
    store.ack_failures = 1
    transport = ScriptedTransport()
    f = flusher(store, transport, clock)
    with pytest.raises(StoreUnavailable):
        f.flush()
    # The store stopped the worker after its first send; the two it never sent
    # went back at once, the one sent stays held until its lease runs out.
    stats = store.stats(clock.now)
    assert (len(transport.sent), stats.ready, stats.in_flight) == (1, 2, 1)
    stop = threading.Event()
    assert f.run(stop, interval=0.001, on_result=stop_after_sent(stop, 2)).sent == 2


def test_a_service_outlives_an_unexpected_error(clock, caplog):
    class Buggy(MemoryStore):
        calls = 0

        def fetch_due(self, now, limit, lease):
            Buggy.calls += 1
            if Buggy.calls == 1:
                raise TypeError("float() argument must be a string or a real number")
            return super().fetch_due(now, limit, lease)

    store = Buggy(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now)])
    stop = threading.Event()
    total = flusher(store, ScriptedTransport(), clock).run(
        stop, interval=0.001, on_result=stop_after_sent(stop, 1)
    )
    assert total.sent == 1
    (failure,) = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert failure.exc_info is not None  # logged with its traceback


def test_the_store_is_verified_at_start_and_every_verify_every_seconds(store, clock):
    f = flusher(store, ScriptedTransport(), clock, verify_every=60)
    f.flush()
    f.flush()
    assert store.verified == 1
    clock.advance(59)
    f.flush()
    assert store.verified == 1
    clock.advance(1)
    f.flush()
    assert store.verified == 2
    clock.advance(-3600)  # a clock set back: the interval is unknown, check again
    f.flush()
    assert store.verified == 3


def test_a_store_found_unfit_at_start_is_never_used(store, clock):
    store.enqueue([record(created=clock.now)])
    store.verify_errors = [ConfigurationError("maxmemory-policy is allkeys-lru")]
    transport = ScriptedTransport()
    with pytest.raises(ConfigurationError):
        flusher(store, transport, clock).flush()
    assert transport.opened == 0
    assert store.stats(clock.now).ready == 1


def test_a_service_stops_when_a_later_check_finds_the_store_unfit(store, clock):
    store.enqueue([record(created=clock.now)])
    f = flusher(store, ScriptedTransport(), clock, verify_every=60)
    stop = threading.Event()

    def on_result(result):
        store.verify_errors = [ConfigurationError("maxmemory-policy is allkeys-lru")]
        clock.advance(60)

    with pytest.raises(ConfigurationError, match="allkeys-lru"):
        f.run(stop, interval=0.001, on_result=on_result)
    assert store.verified == 2


def test_an_unreachable_store_at_a_check_is_an_outage(store, clock, caplog):
    store.enqueue([record(created=clock.now)])
    store.verify_errors = [StoreUnavailable("no route to host")] * 2
    stop = threading.Event()
    total = flusher(store, ScriptedTransport(), clock).run(
        stop, interval=0.001, on_result=stop_after_sent(stop, 1)
    )
    assert total.sent == 1
    assert sum("no route to host" in m for m in caplog.messages) == 2


def test_start_over_finishes_the_message_in_hand_gives_back_the_rest_and_checks_again(
    store, clock, caplog
):
    caplog.set_level(logging.INFO, "mailqueue")
    store.enqueue([record(created=clock.now) for _ in range(5)])
    start_over = threading.Event()
    seen_held = []

    def script(message):
        if not start_over.is_set() and len(transport.sent) == 1:
            start_over.set()  # SIGHUP while the second message is in hand
        seen_held.append(store.stats(clock.now).in_flight)
        return Delivery()

    transport = ScriptedTransport(script)
    result = flusher(store, transport, clock).flush(start_over=start_over)
    assert result.sent == 5 and len(transport.sent) == 5
    assert transport.opened == 2  # a fresh claim and a fresh session after it
    assert seen_held[:3] == [5, 4, 3]  # the three left went back, then were claimed again
    assert not start_over.is_set()
    assert store.verified == 2
    assert any(
        "starting over (SIGHUP); giving 3 message(s) of the batch back" in m
        for m in caplog.messages
    )


class SharedFailingStore(FailingStore):
    """Acks on the flusher's thread, and can refuse to give claims back too."""

    capabilities = frozenset({"shared"})
    release_fails = False

    def release(self, claim):
        if self.release_fails:
            raise StoreUnavailable("connection reset")
        super().release(claim)


def test_a_store_that_cannot_give_claims_back_either_leaves_them_to_their_lease(clock):
    store = SharedFailingStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(3)])
    store.ack_failures = 1
    store.release_fails = True
    transport = ScriptedTransport()
    with pytest.raises(StoreUnavailable):
        flusher(store, transport, clock).flush()
    assert len(transport.sent) == 1
    stats = store.stats(clock.now)
    assert (stats.ready, stats.in_flight) == (0, 3)  # back when their leases run out


def test_a_failed_ack_seen_on_a_stop_still_gives_the_rest_back(clock):
    store = SharedFailingStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(3)])
    store.ack_failures = 1
    stop = threading.Event()

    def stopping(message):
        stop.set()  # SIGTERM while the first message is in hand
        return Delivery()

    transport = ScriptedTransport(stopping)
    with pytest.raises(StoreUnavailable):
        flusher(store, transport, clock).flush(stop=stop)
    stats = store.stats(clock.now)
    assert (len(transport.sent), stats.ready, stats.in_flight) == (1, 2, 1)


def test_start_over_ends_a_backoff_at_once(store, clock, caplog):
    # A service backing off from a failing store (here a wait of an hour) tries
    # again as soon as the operator says the store is fixed (SIGHUP).
    caplog.set_level(logging.INFO, "mailqueue")
    store.enqueue([record(created=clock.now)])
    store.fetch_failures = 1
    stop, start_over = threading.Event(), threading.Event()
    service = flusher(store, ScriptedTransport(), clock)
    thread = threading.Thread(
        target=service.run,
        args=(stop,),
        kwargs={"interval": 3600, "start_over": start_over, "on_result": stop_after_sent(stop, 1)},
    )
    thread.start()
    try:
        for _ in range(500):
            if any("trying again in 3600 s" in m for m in caplog.messages):
                break
            stop.wait(0.01)
        start_over.set()
        thread.join(10)
    finally:
        stop.set()
        thread.join(10)
    assert stop.is_set() and not thread.is_alive()
    assert store.stats(clock.now).ready == 0
    assert any("starting over (SIGHUP)" in m for m in caplog.messages)


def test_a_service_wakes_for_new_mail_long_before_its_interval():
    import time

    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    transport = ScriptedTransport()
    service = Flusher(store, transport, policy=POLICY)
    stop = threading.Event()
    thread = threading.Thread(
        target=service.run, args=(stop,), kwargs={"interval": 3600, "on_result": lambda r: None}
    )
    thread.start()
    try:
        time.sleep(0.3)  # the service ran once, found nothing and waits
        queued = time.monotonic()
        store.enqueue([record(created=time.time())])
        for _ in range(1000):
            if transport.sent:
                break
            time.sleep(0.01)
        waited = time.monotonic() - queued
    finally:
        stop.set()
        thread.join(10)
    assert len(transport.sent) == 1
    assert waited < 60  # woken, not polled an hour later
    assert not thread.is_alive()  # a stop ends the wait too


def test_a_store_that_fails_while_waiting_is_left_to_the_next_run(caplog):
    class FailingWait(MemoryStore):
        waits = 0

        def wait_for_mail(self, timeout):
            FailingWait.waits += 1
            raise StoreUnavailable("connection reset")

    store = FailingWait(f"memory://{uuid.uuid4().hex}")
    stop = threading.Event()
    thread = threading.Thread(
        target=Flusher(store, ScriptedTransport()).run, args=(stop,), kwargs={"interval": 0.01}
    )
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert FailingWait.waits > 1 and not thread.is_alive()
