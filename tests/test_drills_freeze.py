"""Freeze drill: a flusher frozen (SIGSTOP) mid-send past its lease, its claims taken by
another flusher, then resumed (SIGCONT).

The frozen flusher runs with a 2-second lease (from a settings module in the test's
directory). The SMTP server holds it in the middle of one message with a stall at the
final dot, and it is frozen there. Once its lease has run out by the real clock (the one
real wait of these tests: the lease is the thing under test), an in-process flusher takes
the whole queue. Resumed, the frozen flusher finds its ack (or requeue, when the stalled
reply is a 451) refused, and sends nothing more: the engine checks the lease before each
send.

Expected: every message delivered; only the one in hand when it froze twice (the server
had it before the freeze, and the other flusher could not know); nothing sent on the
frozen flusher's connection after it resumed.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import delivered_counts, queue_numbered
from tests.drills_kill import Flushers, closing_store, wait_until, write_settings

pytestmark = pytest.mark.drill

MESSAGES = 40
LEASE = 2  # seconds: short, so that the frozen flusher's lease runs out in real time
BATCH = 5  # the frozen flusher holds one message in hand and four more claims
STALL = 1.5  # seconds the server holds the reply to the dot: the freeze lands inside it
FROZEN_CONNECTION = 0  # the frozen flusher is the first client of the test's server
FAR = 301  # the other flusher's clock is this far ahead: past any lease


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    redis_server = request.getfixturevalue("redis_server")
    return f"{redis_server.url}?namespace={uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        (None, "delivered but its lease had been taken over"),  # its stale ack
        ("451 4.3.0 Try again later", "could not be requeued: its lease was taken over"),
    ],
    ids=["stale-ack", "stale-requeue"],
)
def test_frozen_flusher_resumed_after_its_lease_sends_nothing_twice(
    store_url: str, tmp_path: Path, smtp: FaultySMTPServer, reply: str | None, refused: str
) -> None:
    queue_numbered(store_url, MESSAGES)
    module = write_settings(
        tmp_path,
        {
            "STORE": store_url,
            "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}?timeout=30",
            "LEASE": LEASE,
            "BATCH_SIZE": BATCH,
        },
    )
    held = smtp.fault("dot", reply, action="stall", seconds=STALL, times=1)
    with Flushers(tmp_path, module) as flushers, closing_store(make_store(store_url)) as store:
        frozen = flushers.start()
        wait_until(lambda: held.fired == 1, "the flusher to reach the final dot")
        frozen.signal(signal.SIGSTOP)  # inside the stall: the message is in hand
        in_hand = sorted(delivered_counts(smtp.messages))
        assert store.stats(time.time()).in_flight == BATCH
        # The one real wait: the frozen flusher's claims expire by the real clock.
        wait_until(lambda: store.stats(time.time()).in_flight == 0, "the lease to run out", 10)

        result = Flusher(
            store,
            SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"),
            clock=lambda: time.time() + FAR,
        ).flush()
        assert result.sent == MESSAGES
        before_resume = len(smtp.messages)

        frozen.signal(signal.SIGCONT)
        assert frozen.wait(timeout=30) == 0, frozen.stderr()
        log = frozen.stderr()
        stats = store.stats(time.time() + FAR)

    assert refused in log
    assert "is running out before it could be sent" in log  # the four it still held
    assert len(smtp.messages) == before_resume  # nothing sent after it resumed
    counts = delivered_counts(smtp.messages)
    twice = sorted(n for n, c in counts.items() if c == 2)
    assert sorted(counts) == list(range(MESSAGES))  # none lost
    assert max(counts.values()) <= 2
    assert twice == in_hand  # the message in hand when it froze, if the server took it
    assert len(in_hand) == (1 if reply is None else 0)
    on_frozen = [m for m in smtp.messages if m.connection == FROZEN_CONNECTION]
    assert len(on_frozen) == len(in_hand)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)
    print(
        f"\nfrozen flusher ({store_url.split(':')[0]}, {'ack' if reply is None else '451'}): "
        f"{MESSAGES} messages, {len(counts)} delivered, 0 lost, "
        f"{sum(counts.values()) - len(counts)} duplicated, 0 sent after resuming"
    )
