"""A server's recipient limit: the rest go at once in new transactions (RFC 5321 3.3).

Through the real flusher, the smtp transport and the fault-injecting SMTP server. Each case
says what every recipient got: exactly one copy, or a place in the queue (deferred or
buried) of its own.
"""

from __future__ import annotations

import collections
import uuid

import pytest

from mailqueue_core import codec
from mailqueue_core.flusher import Flusher, FlushResult
from mailqueue_core.message import QueuedMessage
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.store import Claim
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_stores.memory import MemoryStore
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import Clock

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)
LIMIT = "452 4.5.3 Too many recipients"


@pytest.fixture(scope="module")
def server():
    with FaultySMTPServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(server):
    server.clear_faults()
    server.clear()
    yield
    server.clear_faults()


@pytest.fixture
def clock():
    return Clock()


class AckWatch(MemoryStore):
    """A memory store that notes how many transactions the server had taken at each ack."""

    server: FaultySMTPServer

    def ack(self, claim: Claim) -> None:
        self.taken_at_ack.append(len(self.server.messages))
        super().ack(claim)


@pytest.fixture
def store(server):
    s = AckWatch(f"memory://{uuid.uuid4().hex}")
    s.server = server
    s.taken_at_ack = []
    return s


def rcpts(n: int) -> list[str]:
    return [f"r{i}@x.com" for i in range(n)]


def queue(store, clock, recipients: list[str]) -> QueuedMessage:
    message = QueuedMessage(
        from_email="site@example.com",
        envelope_from="site@example.com",
        recipients=recipients,
        to=["list@example.com"],
        bcc=recipients,
        subject="News",
        body="Body",
        headers={"Message-ID": f"<{uuid.uuid4().hex}@example.com>"},
        id=uuid.uuid4().hex,
        created=clock.now,
        due=clock.now,
    )
    store.enqueue([codec.to_record(message)])
    return message


def flush(store, server, clock) -> FlushResult:
    transport = SMTPTransport(f"smtp://{server.host}:{server.port}", timeout=10)
    return Flusher(store, transport, policy=POLICY, clock=clock).flush()


def copies(server) -> collections.Counter[str]:
    return collections.Counter(r for m in server.messages for r in m.rcpt_tos)


def queued(store) -> dict[str, list[str]]:
    """Recipients still queued (deferred parts) and buried, each as one list."""
    later = 1e12  # past every retry
    live = [codec.decode(c.record) for c in store.fetch_due(later, 1000, 60)]
    return {
        "deferred": sorted(r for m in live for r in m.recipients),
        "buried": sorted(
            r for d in store.dead_letters() for r in codec.decode(d.record).recipients
        ),
    }


def test_ten_thousand_recipients_past_a_limit_of_a_thousand_in_one_run(store, server, clock):
    everyone = rcpts(10_000)
    queue(store, clock, everyone)
    server.fault("rcpt", LIMIT, max_recipients=1000)
    before = server.connections
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (1, 0, 0)
    got = copies(server)
    assert set(got) == set(everyone) and set(got.values()) == {1}
    assert [len(m.rcpt_tos) for m in server.messages] == [1000] * 10
    assert server.connections - before == 1  # the same session
    assert len({m.data for m in server.messages}) == 1  # the same bytes, the same Message-ID
    # Acked once, after the last transaction: never before the whole list was tried.
    assert store.taken_at_ack == [10]
    assert store.stats(clock.now).ready + store.stats(clock.now).scheduled == 0


def test_552_is_read_as_a_limit_too(store, server, clock):
    queue(store, clock, rcpts(5))
    server.fault("rcpt", "552 5.5.3 Too many recipients", max_recipients=2)
    assert flush(store, server, clock).sent == 1
    assert [m.rcpt_tos for m in server.messages] == [
        ["r0@x.com", "r1@x.com"],
        ["r2@x.com", "r3@x.com"],
        ["r4@x.com"],
    ]


def test_a_452_to_the_first_rcpt_of_a_transaction_is_a_real_refusal(store, server, clock):
    # r2's mailbox is full: the transaction ends there, and r2 is tried first in the next
    # one; refused in a transaction of its own, it alone is deferred.
    queue(store, clock, rcpts(5))
    server.fault("rcpt", "452 4.2.2 Mailbox full", recipients=["r2@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (1, 1, 0)
    assert [m.rcpt_tos for m in server.messages] == [
        ["r0@x.com", "r1@x.com"],
        ["r3@x.com", "r4@x.com"],
    ]
    left = queued(store)
    assert left == {"deferred": ["r2@x.com"], "buried": []}


def test_refusals_in_later_transactions_stay_with_their_recipients(store, server, clock):
    queue(store, clock, rcpts(7))
    server.fault("rcpt", LIMIT, max_recipients=3)
    server.fault("rcpt", "550 5.1.1 No such user", recipients=["r4@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (1, 0, 1)
    assert [m.rcpt_tos for m in server.messages] == [
        ["r0@x.com", "r1@x.com", "r2@x.com"],
        ["r3@x.com", "r5@x.com", "r6@x.com"],
    ]
    assert queued(store) == {"deferred": [], "buried": ["r4@x.com"]}


def test_a_later_transaction_refused_at_the_dot_defers_only_its_recipients(store, server, clock):
    queue(store, clock, rcpts(5))
    server.fault("rcpt", LIMIT, max_recipients=2)
    server.fault("dot", "451 4.7.1 Greylisted", times=1)
    server.fault("dot", "250 2.0.0 Queued", times=1)  # the newest fault fires first
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (1, 1, 0)
    assert [m.rcpt_tos for m in server.messages] == [["r0@x.com", "r1@x.com"], ["r4@x.com"]]
    assert queued(store) == {"deferred": ["r2@x.com", "r3@x.com"], "buried": []}


@pytest.mark.parametrize(
    ("stage", "fault"),
    [
        ("mail", {"reply": "451 4.3.0 Try later"}),
        ("mail", {"reply": "421 4.3.2 Shutting down"}),
        ("mail", {"action": "drop"}),
        ("data", {"action": "drop"}),
        ("data", {"reply": "554 5.6.0 Rejected"}),
        ("dot", {"action": "drop"}),
        ("dot", {"reply": "554 5.7.1 Spam"}),
    ],
)
def test_a_failure_after_a_delivered_transaction_never_fails_the_whole_message(
    store, server, clock, stage, fault
):
    queue(store, clock, rcpts(5))
    queue(store, clock, ["next@x.com"])
    server.fault("rcpt", LIMIT, max_recipients=2)
    server.fault(stage, times=1, **fault)
    # The newest fault fires first: the first transaction goes through untouched.
    server.fault(stage, action="stall", seconds=0, times=1)
    result = flush(store, server, clock)
    got = copies(server)
    assert got["r0@x.com"] == got["r1@x.com"] == 1
    left = queued(store)
    rest = ["r2@x.com", "r3@x.com", "r4@x.com"]
    if fault.get("reply", "").startswith("554"):
        # Refused for good, for the recipients of that transaction only; the next
        # transaction goes on.
        assert left == {"deferred": [], "buried": ["r2@x.com", "r3@x.com"]}
        assert got["r4@x.com"] == 1
    else:
        assert left == {"deferred": rest, "buried": []}
    # The next message is sent, on a new connection if this one was lost.
    assert got["next@x.com"] == 1
    assert result.sent == 2


def test_a_421_to_a_rcpt_in_a_later_transaction_defers_the_rest(store, server, clock):
    queue(store, clock, rcpts(5))
    server.fault("rcpt", LIMIT, max_recipients=2)
    server.fault("rcpt", "421 4.3.2 Going down", recipients=["r3@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.deferred) == (1, 1)
    assert [m.rcpt_tos for m in server.messages] == [["r0@x.com", "r1@x.com"]]
    assert queued(store) == {"deferred": ["r2@x.com", "r3@x.com", "r4@x.com"], "buried": []}


def test_a_first_transaction_refused_at_the_dot_is_the_message_s(store, server, clock):
    # Nothing was delivered: the message fails as a whole, as it did in one transaction.
    queue(store, clock, rcpts(5))
    server.fault("rcpt", LIMIT, max_recipients=2)
    server.fault("dot", "451 4.7.1 Greylisted", times=1)
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (0, 1, 0)
    assert server.messages == []
    clock.advance(61)
    assert flush(store, server, clock).sent == 1
    assert set(copies(server).values()) == {1} and len(copies(server)) == 5


def test_a_later_transaction_whose_recipients_are_all_refused_sends_nothing(store, server, clock):
    queue(store, clock, rcpts(4))
    server.fault("rcpt", LIMIT, max_recipients=2)
    server.fault("rcpt", "550 5.1.1 No such user", recipients=["r2@x.com", "r3@x.com"])
    queue(store, clock, ["next@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.buried) == (2, 1)
    assert [m.rcpt_tos for m in server.messages] == [["r0@x.com", "r1@x.com"], ["next@x.com"]]
    assert queued(store) == {"deferred": [], "buried": ["r2@x.com", "r3@x.com"]}


def test_a_421_to_a_rcpt_before_any_delivery_defers_the_batch_as_before(store, server, clock):
    queue(store, clock, rcpts(3))
    queue(store, clock, ["next@x.com"])
    server.fault("rcpt", "421 4.3.2 Going down", recipients=["r1@x.com"])
    result = flush(store, server, clock)
    assert (result.sent, result.deferred, result.buried) == (0, 2, 0)
    assert server.messages == []
