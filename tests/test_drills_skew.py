"""Skew drill: two flusher processes on one SQLite queue, one with its clock 400 s ahead.

SQLite leases are written and read on the caller's clock, so the flusher whose clock
is ahead sees the other's claims as expired and takes them over. The one behind is the
real ``mailqueue flush`` command; it claims the whole queue first and sends slowly (a
stall at each final dot). Once it has delivered two, the one ahead (a ``Flusher`` with
``clock=time.time() + 400`` in a process of its own, tests/drills.py) claims. The one
behind learns it when its next ack is refused (``LeaseLost``) and gives the rest of its
batch back unsent.

Expected: nothing lost, at most one duplicate per flusher (the message in hand when
its batch was taken over). Before the fix the flusher behind, told ``LeaseLost``, kept
sending the rest of its batch: 18 duplicates of 20. Figures are printed (``-s``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import delivered_counts, queue_numbered, start_skewed_flusher
from tests.drills_kill import (
    Flushers,
    Tally,
    closing_store,
    wait_for_deliveries,
    write_settings,
)

pytestmark = pytest.mark.drill

MESSAGES = 24
SKEW = 400.0
STALL = 0.05  # seconds at each final dot, so that the two batches overlap
BEHIND = 0  # the flusher behind is the first client of the test's server


def test_a_flusher_400s_ahead_takes_over_and_the_one_behind_stops_sending(
    tmp_path: Path, smtp: FaultySMTPServer
) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    queue_numbered(url, MESSAGES)
    module = write_settings(
        tmp_path, {"STORE": url, "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}?timeout=10"}
    )
    smtp.fault("dot", action="stall", seconds=STALL)
    ahead = start_skewed_flusher(url, smtp.port, SKEW, tmp_path / "ahead.log")
    try:
        with Flushers(tmp_path, module) as flushers:
            behind = flushers.start()
            wait_for_deliveries(smtp, 2, [behind])
            # It claims now: the whole queue, by its clock.
            out, _ = ahead.communicate("go\n", timeout=60)
            assert behind.wait(timeout=60) == 0, behind.stderr()
            log = behind.stderr()
    finally:
        if ahead.poll() is None:
            ahead.kill()
            ahead.communicate()
    assert ahead.returncode == 0, (tmp_path / "ahead.log").read_text()
    by_ahead = json.loads(out)["sent"]
    smtp.clear_faults()
    with closing_store(make_store(url)) as store:
        # Anything still held would come back after the leases of the clock ahead.
        later = time.time() + SKEW + 301
        left = Flusher(store, SMTPTransport(f"smtp://127.0.0.1:{smtp.port}"), clock=lambda: later)
        drained = left.flush().sent
        stats = store.stats(later)

    tally = Tally.count(MESSAGES, smtp.messages)
    counts_behind = delivered_counts([m for m in smtp.messages if m.connection == BEHIND])
    counts_ahead = delivered_counts([m for m in smtp.messages if m.connection != BEHIND])
    both = set(counts_behind) & set(counts_ahead)
    print(
        f"\n{tally.line('skew drill (sqlite, one flusher 400 s ahead)', 0)}; "
        f"{sum(counts_behind.values())} sent by the flusher behind, {by_ahead} by the one "
        f"ahead, {len(both)} by both, {drained} drained afterwards"
    )
    assert tally.lost == 0
    assert tally.duplicated <= 2  # at most one per flusher
    assert len(both) <= 1  # the message in hand when the batch was taken over
    assert max(counts_behind.values()) == 1 and max(counts_ahead.values()) == 1
    assert by_ahead >= MESSAGES // 2  # it did take the batch over
    assert "taken over" in log
    assert "of the batch back unsent" in log
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)
