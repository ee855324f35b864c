"""After the first lost lease a flusher gives the rest of its batch back unsent.

A second flusher whose clock is 400 s ahead takes the batch over while the first
is sending (``store.fetch_due`` at the skewed time, through the public contract).
The first learns it when its ack (overlapped on a thread, or not), requeue or
bury is refused with ``LeaseLost``; from then on it sends nothing more of that
batch. The same with two real processes: tests/test_drills_skew.py.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from mailqueue_core.errors import PermanentError, TransientError
from mailqueue_core.flusher import Flusher
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.transport import Delivery
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, record

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)
SKEW = 400.0
LEASE = 300.0


class SharedMemoryStore(MemoryStore):
    """Says it is shared, so the flusher acks on its thread (as with SQLite, Redis)."""

    capabilities = frozenset({"shared"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.parametrize(
    "store_class", [MemoryStore, SharedMemoryStore], ids=["ack", "threaded-ack"]
)
@pytest.mark.parametrize("outcome", ["accepted", "451", "550"])
def test_a_lost_lease_stops_the_batch(clock, caplog, store_class, outcome):
    store = store_class(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(20)])
    taken = []

    def script(message):
        if not taken:
            # The other flusher's clock is ahead: every lease here has run out by it.
            taken.extend(store.fetch_due(clock.now + SKEW, 100, LEASE))
        if outcome == "451":
            raise TransientError("451 4.7.1 try later", code=451)
        if outcome == "550":
            raise PermanentError("550 5.1.1 no such user", code=550)
        return Delivery()

    transport = ScriptedTransport(script)
    result = Flusher(store, transport, policy=POLICY, clock=clock, lease=LEASE).flush()
    assert len(taken) == 20
    assert len(transport.attempts) == 1  # before: all 20, 19 of them the other's
    assert (result.sent, result.deferred, result.buried) == (int(outcome == "accepted"), 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lease" in m and "taken over" in m for m in warnings)
    assert any("giving 19 message(s) of the batch back unsent" in m for m in warnings)
    # The other flusher's claims stand: it delivers them (and buries nothing twice).
    for claim in taken:
        store.ack(claim)
    assert store.dead_letters() == []


def test_the_next_batch_is_claimed_afresh_after_a_lost_lease(clock):
    store = SharedMemoryStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(4)])
    taken = []

    def script(message):
        if not taken:
            # The other flusher takes two of the batch over, the first included.
            taken.extend(store.fetch_due(clock.now + SKEW, 2, LEASE))
        return Delivery()

    transport = ScriptedTransport(script)
    result = Flusher(store, transport, policy=POLICY, clock=clock, batch_size=4).flush()
    # The first went out (the duplicate the take-over made), its ack was refused,
    # the rest of the batch went back and the two the other did not take were
    # claimed again and delivered.
    assert len(taken) == 2 and len(transport.attempts) == 3
    assert result.sent == 3 and transport.opened == 2
    assert {m.id for m in transport.sent[1:]}.isdisjoint({c.id for c in taken})
