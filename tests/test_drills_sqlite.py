"""Drills on the embedded default: several flusher processes, and a flusher killed mid-batch.

Real processes (the standalone ``mailqueue flush`` command), a real SQLite
file, a real SMTP server on loopback. Figures are printed for the issue notes.
"""

from __future__ import annotations

import time

from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import finish, kill, queue_numbered, start_flushers, tally


def test_four_flushers_deliver_each_of_2000_exactly_once(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/queue.db"
    queue_numbered(url, 2000)
    results = finish(start_flushers(url, smtp.port, 4))
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert tally("sqlite, 4 flushers", 2000, smtp.messages) == (0, 0)
    with make_store(url) as store:
        stats = store.stats(time.time())
    assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 0)


def test_flusher_killed_mid_batch_loses_nothing(tmp_path, smtp):
    url = f"sqlite:///{tmp_path}/queue.db"
    total = 300
    queue_numbered(url, total)
    smtp.fault("dot", action="stall", seconds=0.01)  # slow enough to be caught mid-batch
    (process,) = start_flushers(url, smtp.port, 1)
    smtp.wait_for(40, timeout=60)
    kill(process)
    smtp.clear_faults()
    before = len(smtp.messages)
    with make_store(url) as store:
        held = store.stats(time.time()).in_flight
        assert held > 0  # the killed flusher held claims: they come back by lease expiry
        # A second flush, its clock past the dead flusher's lease (300 s): no sleeping.
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
        Flusher(store, transport, clock=lambda: time.time() + 301).flush()
    label = f"sqlite, SIGKILL after {before} delivered with {held} claimed"
    lost, duplicates = tally(label, total, smtp.messages)
    assert lost == 0
    assert duplicates <= 1  # at most the one message in hand when it died
