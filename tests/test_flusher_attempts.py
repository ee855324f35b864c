"""A dead letter's ``attempts`` counts the attempt that buried it, whole or split.

A message refused whole is buried by the store (``bury`` adds the burying attempt);
the refused recipients of a message the server partly took become a dead letter of
their own (the flusher gives the part ``attempts + 1``). Both must say the same: here
through the flusher, a real SMTP server and each kind of store.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailqueue_core import codec
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.policy import RetryPolicy
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import Clock, record

POLICY = RetryPolicy(first=60, factor=2, max=3600, jitter=0, max_age=86400)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    redis_server = request.getfixturevalue("redis_server")
    return f"{redis_server.url}?namespace={uuid.uuid4().hex}"


@pytest.mark.parametrize("deferred_first", [0, 1], ids=["first-attempt", "after-a-451"])
def test_whole_and_split_dead_letters_count_attempts_alike(store_url, smtp, deferred_first):
    clock = Clock(time.time())
    store = make_store(store_url)
    whole = record("gone@example.com", created=clock.now, subject="whole")
    split = record("kept@example.com", "gone@example.com", created=clock.now, subject="split")
    store.enqueue([whole, split])
    transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
    flusher = Flusher(store, transport, policy=POLICY, clock=clock)
    for _ in range(deferred_first):
        busy = smtp.fault("rcpt", "451 4.2.1 Mailbox busy")
        assert flusher.flush().deferred == 2
        smtp.clear_faults()
        assert busy.fired == 3
        clock.advance(POLICY.first + 1)
    smtp.fault("rcpt", "550 5.1.1 No such user", recipients=["gone@example.com"])
    result = flusher.flush()
    assert (result.sent, result.buried) == (1, 2)
    letters = {codec.decode(d.record).subject: d.record.attempts for d in store.dead_letters()}
    store.close()
    assert letters == {"whole": deferred_first + 1, "split": deferred_first + 1}
