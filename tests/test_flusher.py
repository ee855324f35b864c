"""The flusher's decisions, on the memory store with a scripted transport and an injected clock."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from mailqueue_core import codec
from mailqueue_core.errors import (
    ConnectError,
    PermanentError,
    SessionError,
    StoreUnavailable,
    TransientError,
)
from mailqueue_core.flusher import Flusher, FlushListener, Listeners
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.ratelimit import LocalLimits, RateLimit, RateLimiter
from mailqueue_core.store import Record
from mailqueue_core.transport import Delivery
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, record

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def flusher(store, transport, clock, **kwargs) -> Flusher:
    return Flusher(store, transport, policy=POLICY, clock=clock, **kwargs)


def fail_with(error):
    def script(message):
        raise error

    return script


def test_delivers_everything_due_and_acks(store, clock):
    store.enqueue([record(f"r{i}@example.com", created=clock.now) for i in range(250)])
    transport = ScriptedTransport()
    result = flusher(store, transport, clock, batch_size=100).flush()
    assert (result.sent, result.deferred, result.buried) == (250, 0, 0)
    assert len(transport.sent) == 250
    assert transport.opened == 3  # one session per batch
    assert store.stats(clock.now).ready == 0


def test_limit_stops_after_n(store, clock):
    store.enqueue([record(created=clock.now) for _ in range(10)])
    result = flusher(store, ScriptedTransport(), clock, batch_size=3).flush(limit=4)
    assert result.sent == 4
    assert store.stats(clock.now).ready == 6


def test_transient_failure_backs_off_exponentially_then_buries_at_max_age(store, clock, caplog):
    created = clock.now
    store.enqueue([record("a@example.com", created=created)])
    transport = ScriptedTransport(fail_with(TransientError("451 4.7.1 greylisted", code=451)))
    f = flusher(store, transport, clock)
    dues = []
    while True:
        result = f.flush()
        if result.buried:
            break
        assert result.deferred == 1
        assert store.dead_letters() == []
        assert store.stats(clock.now).scheduled == 1
        nxt = _next_due(store, clock.now)
        dues.append(nxt - clock.now)
        clock.now = nxt
    assert dues[:7] == [60, 120, 240, 480, 960, 1920, 3600]
    assert clock.now - created >= 86400  # never buried before its last try
    assert clock.now - created < 86400 + 1
    (letter,) = store.dead_letters()
    assert "gave up after" in letter.reason and "451" in letter.reason
    assert any(
        r.levelno == logging.ERROR and "a@example.com" in r.getMessage() for r in caplog.records
    )


def _next_due(store, now) -> float:
    """When the next message becomes ready, found through stats() (it claims nothing)."""
    lo, hi = now, now + 2 * 86400
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        if store.stats(mid).ready:
            hi = mid
        else:
            lo = mid
    return float(round(hi))


def test_permanent_failure_buries_at_once(store, clock, caplog):
    store.enqueue([record("bad@example.com", created=clock.now)])
    transport = ScriptedTransport(fail_with(PermanentError("550 5.1.1 no such user", code=550)))
    result = flusher(store, transport, clock).flush()
    assert (result.sent, result.buried) == (0, 1)
    (letter,) = store.dead_letters()
    assert letter.reason == "550 5.1.1 no such user"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(letter.record.id in m and "bad@example.com" in m for m in errors)


def test_session_error_defers_batch_and_never_buries_even_old_mail(store, clock, caplog):
    old = clock.now - 2 * 86400
    store.enqueue([record(created=old) for _ in range(5)])
    transport = ScriptedTransport(fail_with(SessionError("535 5.7.8 bad credentials", code=535)))
    result = flusher(store, transport, clock).flush()
    assert (result.sent, result.deferred, result.buried) == (0, 5, 0)
    assert len(transport.attempts) == 1  # the rest of the batch was not tried
    assert store.dead_letters() == []
    assert store.stats(clock.now).scheduled == 5
    assert any(
        r.levelno == logging.ERROR and "burying none" in r.getMessage() for r in caplog.records
    )


def test_session_error_at_open_defers_batch(store, clock):
    store.enqueue([record(created=clock.now) for _ in range(3)])
    transport = ScriptedTransport()
    transport.open_error = SessionError("454 TLS not available")
    result = flusher(store, transport, clock).flush()
    assert (result.deferred, result.buried) == (3, 0)
    assert transport.attempts == []


def test_connect_error_defers_batch_under_max_age_rule(store, clock):
    store.enqueue([record(created=clock.now)])
    store.enqueue([record(created=clock.now - 90000)])
    transport = ScriptedTransport()
    transport.open_error = ConnectError("cannot connect: refused")
    result = flusher(store, transport, clock).flush()
    assert (result.deferred, result.buried) == (1, 1)


def test_unexpected_exception_is_transient_and_logged(store, clock, caplog):
    store.enqueue([record(created=clock.now)])
    result = flusher(
        store, ScriptedTransport(fail_with(RuntimeError("plugin bug"))), clock
    ).flush()
    assert result.deferred == 1
    assert any("unexpected" in r.getMessage() for r in caplog.records)


def test_unexpected_exception_at_open_defers(store, clock):
    store.enqueue([record(created=clock.now)])
    transport = ScriptedTransport()
    transport.open_error = RuntimeError("plugin bug")  # type: ignore[assignment]
    assert flusher(store, transport, clock).flush().deferred == 1


def test_undecodable_record_is_buried_and_the_rest_delivered(store, clock):
    good = record(created=clock.now)
    bad = [
        Record("trunc", good.data[:20], clock.now, clock.now),
        Record("types", b'{"v":1,"from":5,"env_from":"a","rcpts":["x@y"]}', clock.now, clock.now),
        Record("version", b'{"v":99}', clock.now, clock.now),
        Record("notobj", b"[1,2]", clock.now, clock.now),
    ]
    store.enqueue([*bad, good])
    transport = ScriptedTransport()
    result = flusher(store, transport, clock).flush()
    assert (result.sent, result.buried) == (1, 4)
    reasons = {d.record.id: d.reason for d in store.dead_letters()}
    assert "not valid JSON" in reasons["trunc"]
    assert "must be a string" in reasons["types"]
    assert "version 99" in reasons["version"]
    assert "not a JSON object" in reasons["notobj"]


def test_partial_refusal_splits_recipients(store, clock):
    rec = record("ok@x.com", "later@x.com", "never@x.com", created=clock.now)
    store.enqueue([rec])

    def script(message):
        if len(message.recipients) == 3:
            return Delivery(
                refused={
                    "later@x.com": TransientError("452 4.2.2 mailbox full", code=452),
                    "never@x.com": PermanentError("550 5.1.1 unknown", code=550),
                }
            )
        return Delivery()

    transport = ScriptedTransport(script)
    result = flusher(store, transport, clock).flush()
    assert (result.sent, result.deferred, result.buried) == (1, 1, 1)
    (letter,) = store.dead_letters()
    dead = codec.decode(letter.record)
    assert dead.recipients == ["never@x.com"]
    assert "550" in letter.reason
    clock.advance(61)
    result = flusher(store, transport, clock).flush()
    assert result.sent == 1
    retried = transport.sent[-1]
    assert retried.recipients == ["later@x.com"]
    assert retried.headers["Message-ID"] == codec.decode(rec).headers["Message-ID"]
    assert store.stats(clock.now).ready == 0


def test_lease_running_out_gives_back_the_rest(store, clock, caplog):
    store.enqueue([record(created=clock.now) for _ in range(5)])

    def slow(message):
        clock.advance(100)  # each send takes 100 s of a 300 s lease
        return Delivery()

    transport = ScriptedTransport(slow)
    result = flusher(store, transport, clock, lease=450).flush()
    # 450 s lease, 60 s margin: sends at t=0..300; at t=400 the fifth is too close to
    # its lease's end and goes back, so the next claim (at t=400, before that lease
    # would have run out) can take it again.
    assert any("is running out" in r.getMessage() for r in caplog.records)
    assert (result.sent, transport.opened) == (5, 2)
    stats = store.stats(clock.now)
    assert (stats.ready, stats.in_flight, stats.stuck) == (0, 0, 0)


def test_given_back_claims_do_not_count_towards_the_limit(store, clock):
    store.enqueue([record(created=clock.now) for _ in range(5)])

    def slow(message):
        clock.advance(100)
        return Delivery()

    result = flusher(store, ScriptedTransport(slow), clock, lease=300).flush(limit=4)
    # Sends at t=0, 100, 200; the fourth goes back at t=300 and is claimed again.
    assert result.sent == 4
    assert store.stats(clock.now).ready == 1


def test_stop_event_finishes_message_in_hand_and_releases_rest(store, clock):
    store.enqueue([record(created=clock.now) for _ in range(5)])
    stop = threading.Event()

    def stopping(message):
        stop.set()
        return Delivery()

    result = flusher(store, ScriptedTransport(stopping), clock).flush(stop=stop)
    assert result.sent == 1
    stats = store.stats(clock.now)
    assert (stats.ready, stats.in_flight) == (4, 0)


def test_store_failure_on_ack_stops_at_once(clock):
    class FailingAck(MemoryStore):
        def ack(self, claim):
            raise StoreUnavailable("connection lost")

    store = FailingAck(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(3)])
    transport = ScriptedTransport()
    with pytest.raises(StoreUnavailable):
        flusher(store, transport, clock).flush()
    assert len(transport.sent) == 1


def test_stale_ack_is_logged_not_fatal(clock, caplog):
    class StaleAck(MemoryStore):
        def ack(self, claim):
            from mailqueue_core.errors import LeaseLost

            raise LeaseLost("taken over")

    store = StaleAck(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now)])
    assert flusher(store, ScriptedTransport(), clock).flush().sent == 1
    assert any("taken over" in r.getMessage() for r in caplog.records)


def test_listener_hears_every_outcome(store, clock):
    heard = []

    class Listener(FlushListener):
        def sent(self, message_id, message, delivery):
            heard.append(("sent", message_id))

        def deferred(self, message_id, message, error, due):
            heard.append(("deferred", message_id))

        def buried(self, message_id, message, reason):
            heard.append(("buried", message_id))

    a, b, c = (record(f"{n}@x.com", created=clock.now) for n in "abc")
    store.enqueue([a, b, c])

    def script(message):
        if message.recipients == ["b@x.com"]:
            raise TransientError("451")
        if message.recipients == ["c@x.com"]:
            raise PermanentError("550")
        return Delivery()

    listener = Listeners(Listener(), FlushListener())  # several, heard as one
    flusher(store, ScriptedTransport(script), clock, listener=listener).flush()
    assert sorted(heard) == sorted([("sent", a.id), ("deferred", b.id), ("buried", c.id)])


def test_run_loops_until_stopped(store, clock):
    store.enqueue([record(created=clock.now)])
    stop = threading.Event()
    results = []

    def on_result(result):
        results.append(result)
        stop.set()

    total = flusher(store, ScriptedTransport(), clock).run(
        stop, interval=0.01, on_result=on_result
    )
    assert total.sent == 1 and len(results) == 1


def test_bad_arguments():
    s = MemoryStore()
    with pytest.raises(ValueError):
        Flusher(s, ScriptedTransport(), batch_size=0)
    with pytest.raises(ValueError):
        Flusher(s, ScriptedTransport(), lease=0)


class SlowSharedStore(MemoryStore):
    """Acks slowly, and says it is shared, so the flusher acks on its thread."""

    capabilities = frozenset({"shared"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.acked = 0

    def ack(self, claim):
        time.sleep(0.01)  # a store round trip, for the overlap to matter
        super().ack(claim)
        self.acked += 1


def test_acks_overlap_rendering_but_never_two_sends_unacked(clock):
    store = SlowSharedStore(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(20)])
    unacked_at_send = []

    def script(message):
        unacked_at_send.append(len(transport.sent) - store.acked)
        return Delivery()

    transport = ScriptedTransport(script)
    result = flusher(store, transport, clock).flush()
    assert result.sent == 20 and store.acked == 20
    assert max(unacked_at_send) == 0  # the previous ack was through before each send


def test_threaded_ack_failure_stops_before_the_next_send(clock):
    class FailingSharedAck(MemoryStore):
        capabilities = frozenset({"shared"})

        def ack(self, claim):
            raise StoreUnavailable("connection lost")

    store = FailingSharedAck(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(3)])
    transport = ScriptedTransport()
    with pytest.raises(StoreUnavailable):
        flusher(store, transport, clock).flush()
    assert len(transport.sent) == 1


def test_a_stop_while_waiting_for_a_token_gives_the_batch_back_and_ends_the_run(
    store, clock, caplog
):
    store.enqueue([record(created=clock.now) for _ in range(3)])
    stop = threading.Event()
    limiter = RateLimiter(RateLimit.from_settings({"MESSAGES": "1/m"}), LocalLimits(), clock)

    class Stopping(ScriptedTransport):
        def prepare(self, message):
            if self.sent:
                stop.set()  # SIGTERM while the second message waits a minute for its token

    transport = Stopping()
    result = flusher(store, transport, clock, limiter=limiter).flush(stop=stop)
    assert (result.sent, len(transport.attempts)) == (1, 1)
    stats = store.stats(clock.now)
    assert (stats.ready, stats.in_flight) == (2, 0)
    assert not any("back" in m for m in caplog.messages)  # a stop is no news


def test_a_store_that_cannot_take_the_batch_back_fails_the_flush(clock):
    class NoRelease(MemoryStore):
        def release(self, claim):
            raise StoreUnavailable("connection reset")

    store = NoRelease(f"memory://{uuid.uuid4().hex}")
    store.enqueue([record(created=clock.now) for _ in range(3)])
    stop = threading.Event()

    def stopping(message):
        stop.set()
        return Delivery()

    transport = ScriptedTransport(stopping)
    with pytest.raises(StoreUnavailable):
        flusher(store, transport, clock).flush(stop=stop)
    stats = store.stats(clock.now)
    assert (len(transport.sent), stats.ready, stats.in_flight) == (1, 0, 2)  # back by lease


def test_a_delivery_refusing_every_recipient_splits_them_all_off_and_sends_nothing(store, clock):
    heard = []

    class Listener(FlushListener):
        def sent(self, message_id, message, delivery):
            heard.append(message_id)

    store.enqueue([record("later@x.com", "never@x.com", created=clock.now)])
    refused = {
        "later@x.com": TransientError("452 4.2.2 mailbox full", code=452),
        "never@x.com": PermanentError("550 5.1.1 unknown", code=550),
    }
    transport = ScriptedTransport(lambda message: Delivery(refused=refused))
    result = flusher(store, transport, clock, listener=Listener()).flush()
    assert (result.sent, result.deferred, result.buried) == (0, 1, 1)
    assert heard == []
    (letter,) = store.dead_letters()
    assert codec.decode(letter.record).recipients == ["never@x.com"]
    assert store.stats(clock.now + 60).ready == 1
