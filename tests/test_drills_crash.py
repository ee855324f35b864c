"""Crash drills: one queue, a flusher process SIGKILLed at random points 20 times, then drained.

Each round starts the standalone ``mailqueue flush`` on the same queue and kills it
after a random number of deliveries or after a random delay (which may fall in its
start-up, inside a claim, or between a send and its ack). A small stall at the final
dot slows the sender so that kills land mid-batch. Afterwards an in-process flusher
whose clock is past the lease takes back what the dead ones held (no sleeping).

Expected: nothing lost; a duplicate only for a message a killed flusher had in hand,
so at most one per kill. The random points come from a seeded ``random.Random``: the
seed is in every figure line and failure, and ``MAILQUEUE_DRILL_SEED`` replays another.
Figures are printed for the notes (``-s`` shows them).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

import pytest

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import queue_numbered
from tests.drills_kill import Flushers, Tally, closing_store, kill_at_random, write_settings
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.drill

SEED = int(os.environ.get("MAILQUEUE_DRILL_SEED", "5"))
#: 8 in the test command; ``MAILQUEUE_DRILL_KILLS=20`` for the drill as first written
#: (``python -m bench.reliability`` runs the larger one).
KILLS = int(os.environ.get("MAILQUEUE_DRILL_KILLS", "8"))
MESSAGES = 1000  # far more than 20 rounds use up (about 150), so every kill finds work
BATCH = 10  # what one killed flusher can strand until its lease runs out
LEASE = 300


def crash_drill(label: str, url: str, smtp: FaultySMTPServer, directory: Path) -> None:
    rng = random.Random(SEED)
    queue_numbered(url, MESSAGES)
    module = write_settings(
        directory,
        {
            "STORE": url,
            "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}?timeout=10",
            "BATCH_SIZE": BATCH,
            "LEASE": LEASE,
        },
    )
    smtp.fault("dot", action="stall", seconds=0.005)
    kills: list[str] = []
    with Flushers(directory, module) as flushers:
        for _ in range(KILLS):
            flusher = flushers.start()
            killed, where = kill_at_random(rng, smtp, flusher, max_deliveries=20, max_delay=0.5)
            assert killed, (
                f"seed {SEED}: flusher exited before its kill {where} "
                f"(code {flusher.popen.returncode}): {flusher.stderr()}"
            )
            kills.append(where)
    smtp.clear_faults()
    by_flushers = len(smtp.messages)
    with closing_store(make_store(url)) as store:
        stranded = store.stats(time.time()).in_flight
        Flusher(
            store,
            SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"),
            clock=lambda: time.time() + LEASE + 1,
        ).flush()
        stats = store.stats(time.time() + LEASE + 1)
    tally = Tally.count(MESSAGES, smtp.messages)
    print(
        f"\n{tally.line(label, len(kills))} (seed {SEED}; {by_flushers} delivered by the "
        f"killed flushers, {stranded} stranded in their claims)"
    )
    assert tally.lost == 0, f"seed {SEED}: kills {kills}"
    assert tally.duplicated <= len(kills), f"seed {SEED}: kills {kills}"
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)


def test_sqlite_flusher_killed_again_and_again(tmp_path: Path, smtp: FaultySMTPServer) -> None:
    crash_drill(f"sqlite, {KILLS} SIGKILLs", f"sqlite:///{tmp_path}/queue.db", smtp, tmp_path)


def test_redis_flusher_killed_again_and_again(
    redis_server: RedisServer, tmp_path: Path, smtp: FaultySMTPServer
) -> None:
    # The drain moves its clock past the killed flushers' leases; the Redis
    # server's clock cannot be moved, so the caller's clock alone decides.
    url = f"{redis_server.url}?namespace={uuid.uuid4().hex}&max_clock_skew=inf"
    crash_drill(f"redis, {KILLS} SIGKILLs", url, smtp, tmp_path)
