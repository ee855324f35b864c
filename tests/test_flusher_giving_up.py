"""One give-up rule, whichever way an attempt failed.

A 451 to the message, a plugin's unexpected error, a relay that cannot be reached
(at the start of the batch or in its middle), and the recipients a server refused
with a 451 while it took the others (split off as a message of their own): each is
retried on the policy's schedule while the message is young, and once it is
``MAX_AGE`` old it is buried with the same words, ``gave up after N attempts over
S s: <error>``, counting the attempt that buried it. A session failure (a wrong
password) keeps the schedule but never buries. Memory store, scripted transport,
injected clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest

from mailqueue_core import codec
from mailqueue_core.errors import ConnectError, SessionError, TransientError
from mailqueue_core.flusher import Flusher
from mailqueue_core.message import QueuedMessage
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.text import MAX_ERROR
from mailqueue_core.transport import Delivery
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, message

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)
ATTEMPTS = 2  # before this one; the third waits 60 * 2**2 s, or is the last
NEXT = 240.0
OLD, YOUNG = 90000.0, 1000.0

KEPT, LATER = "kept@example.com", "later@example.com"


def fail_with(error: Exception) -> Callable[[QueuedMessage], Delivery]:
    def script(message: QueuedMessage) -> Delivery:
        raise error

    return script


def refuse_later(message: QueuedMessage) -> Delivery:
    return Delivery(refused={LATER: TransientError("451 4.2.1 mailbox busy", code=451)})


# path: (transport, the error the message is deferred or buried with, whether a part is split off)
PATHS: dict[str, tuple[Callable[[], ScriptedTransport], str, bool]] = {
    "451": (
        lambda: ScriptedTransport(fail_with(TransientError("451 4.7.1 try later", code=451))),
        "451 4.7.1 try later",
        False,
    ),
    "unexpected": (
        lambda: ScriptedTransport(fail_with(RuntimeError("plugin bug"))),
        "RuntimeError: plugin bug",
        False,
    ),
    "connect-at-open": (
        lambda: opening_with(ConnectError("cannot connect: refused")),
        "cannot connect: refused",
        False,
    ),
    "connect-mid-batch": (
        lambda: ScriptedTransport(fail_with(ConnectError("connection reset"))),
        "connection reset",
        False,
    ),
    "split": (
        lambda: ScriptedTransport(refuse_later),
        f"{LATER}: 451 4.2.1 mailbox busy",
        True,
    ),
}
SESSION: dict[str, Callable[[], ScriptedTransport]] = {
    "session-at-open": lambda: opening_with(SessionError("535 5.7.8 bad credentials")),
    "session-mid-batch": lambda: ScriptedTransport(
        fail_with(SessionError("535 5.7.8 bad credentials"))
    ),
}


def opening_with(error: Exception) -> ScriptedTransport:
    transport = ScriptedTransport()
    transport.open_error = error  # type: ignore[assignment]
    return transport


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def queue(store: MemoryStore, clock: Clock, age: float) -> str:
    queued = message(KEPT, LATER, created=clock.now - age)
    queued.attempts = ATTEMPTS
    store.enqueue([codec.to_record(queued)])
    return queued.id


def the_one_waiting(store: MemoryStore, clock: Clock):
    """The record that waits, due exactly NEXT seconds from now (stats() claims nothing)."""
    assert store.stats(clock.now + NEXT - 1).ready == 0
    assert store.stats(clock.now + NEXT).ready == 1
    (claim,) = store.fetch_due(clock.now + NEXT, 10, 30)
    return claim.record


@pytest.mark.parametrize("path", PATHS)
def test_an_old_message_is_given_up_in_the_same_words_whichever_way_it_failed(store, clock, path):
    make, error, split = PATHS[path]
    queued = queue(store, clock, OLD)
    result = Flusher(store, make(), policy=POLICY, clock=clock).flush()
    assert (result.sent, result.deferred, result.buried) == (int(split), 0, 1)
    (letter,) = store.dead_letters()
    assert letter.reason == f"gave up after {ATTEMPTS + 1} attempts over {OLD:.0f}s: {error}"
    assert letter.record.attempts == ATTEMPTS + 1
    dead = codec.decode(letter.record)
    assert dead.recipients == ([LATER] if split else [KEPT, LATER])
    assert (letter.record.id != queued) is split
    assert store.stats(clock.now + 86400).ready == 0


@pytest.mark.parametrize("path", PATHS)
def test_a_young_message_is_retried_on_the_same_schedule_whichever_way_it_failed(
    store, clock, path
):
    make, error, split = PATHS[path]
    queue(store, clock, YOUNG)
    result = Flusher(store, make(), policy=POLICY, clock=clock).flush()
    assert (result.sent, result.deferred, result.buried) == (int(split), 1, 0)
    waiting = the_one_waiting(store, clock)
    assert (waiting.attempts, waiting.last_error) == (ATTEMPTS + 1, error)
    assert store.dead_letters() == []


@pytest.mark.parametrize("path", SESSION)
@pytest.mark.parametrize("age", [YOUNG, OLD], ids=["young", "old"])
def test_a_session_failure_keeps_the_schedule_and_never_buries(store, clock, path, age):
    queue(store, clock, age)
    result = Flusher(store, SESSION[path](), policy=POLICY, clock=clock).flush()
    assert (result.sent, result.deferred, result.buried) == (0, 1, 0)
    waiting = the_one_waiting(store, clock)
    assert (waiting.attempts, waiting.last_error) == (ATTEMPTS + 1, "535 5.7.8 bad credentials")
    assert store.dead_letters() == []


def test_a_part_given_up_for_hundreds_of_refusals_is_cut_once(store, clock):
    refused = [f"nobody{i}@example.com" for i in range(300)]
    store.enqueue([codec.to_record(message(KEPT, *refused, created=clock.now - OLD))])
    busy = TransientError("451 4.2.1 Mailbox busy, try again later", code=451)
    transport = ScriptedTransport(lambda m: Delivery(refused=dict.fromkeys(refused, busy)))
    result = Flusher(store, transport, policy=POLICY, clock=clock).flush()
    assert (result.sent, result.buried) == (1, 1)
    (letter,) = store.dead_letters()
    assert letter.reason.startswith(f"gave up after 1 attempts over {OLD:.0f}s: nobody0@")
    assert len(letter.reason) < MAX_ERROR + 100
    assert len(re.findall(r"more characters cut", letter.reason)) == 1
