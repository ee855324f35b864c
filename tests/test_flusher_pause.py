"""Pausing delivery: every flusher of the namespace holds off until resume."""

from __future__ import annotations

import logging
import threading
import uuid

from mailqueue_core.flusher import Flusher
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, record


def test_a_paused_queue_sends_nothing_until_resumed(caplog):
    clock = Clock()
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue(
        [record("a@example.com", created=clock()), record("b@example.com", created=clock())]
    )
    transport = ScriptedTransport()
    flusher = Flusher(store, transport, clock=clock)
    twin = MemoryStore(store.location)  # another process's view, as `mailqueue pause` has
    twin.set_paused(True)
    with caplog.at_level(logging.INFO, "mailqueue.flusher"):
        result = flusher.flush()
        again = flusher.flush()
    assert (result.sent, result.paused) == (0, True)
    assert "delivery is paused" in result.summary() and again.paused
    assert transport.sent == []
    assert store.stats(clock()).ready == 2
    # Said once, not at every run of a service.
    assert caplog.text.count("delivery is paused") == 1
    twin.set_paused(False)
    with caplog.at_level(logging.INFO, "mailqueue.flusher"):
        resumed = flusher.flush()
    assert (resumed.sent, resumed.paused) == (2, False)
    assert "delivery resumed" in caplog.text
    assert "paused" not in resumed.summary()


def test_a_service_holds_while_paused_and_goes_on_after(caplog):
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    store.set_paused(True)
    clock = Clock()
    store.enqueue([record("a@example.com", created=clock())])
    transport = ScriptedTransport()
    flusher = Flusher(store, transport, clock=clock)
    stop = threading.Event()
    results: list = []
    thread = threading.Thread(
        target=flusher.run, args=(stop,), kwargs={"interval": 0.01, "on_result": results.append}
    )
    thread.start()
    try:
        for _ in range(200):
            if flusher._paused:  # the service has seen the pause
                break
            stop.wait(0.01)
        assert transport.sent == []
        store.set_paused(False)
        for _ in range(500):
            if transport.sent:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert len(transport.sent) == 1


def test_a_flusher_beats_for_the_overview_every_so_often():
    from mailqueue_core.flusher.worker import BEAT_EVERY, BEAT_KEPT

    clock = Clock()
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    flusher = Flusher(store, ScriptedTransport(), clock=clock)
    flusher.flush()
    assert store.beats(clock()) == {flusher.name: clock()}
    first = clock()
    clock.advance(BEAT_EVERY / 2)
    flusher.flush()
    assert store.beats(clock()) == {flusher.name: first}  # not every run
    clock.advance(BEAT_EVERY)
    flusher.flush()
    assert store.beats(clock()) == {flusher.name: clock()}
    assert store.beats(clock() + BEAT_KEPT + 1) == {}


def test_a_heartbeat_the_store_refuses_costs_nothing():
    from mailqueue_core.errors import StoreUnavailable

    class Refusing(MemoryStore):
        def beat(self, flusher, now, expires):
            raise StoreUnavailable("read-only replica")

    clock = Clock()
    store = Refusing(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record("a@example.com", created=clock())])
    assert Flusher(store, ScriptedTransport(), clock=clock).flush().sent == 1
