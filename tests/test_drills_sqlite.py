"""Drills on the embedded default: several flushers, a flusher killed mid-batch, a full disk.

Real processes (the standalone ``mailqueue flush`` command), a real SQLite
file, a real SMTP server on loopback. Figures are printed for the issue notes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_store
from mailqueue_core.testing import make_record
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import finish, kill, queue_numbered, start_flushers, tally
from tests.test_sqlite_full_disk import small_tmpfs

pytestmark = pytest.mark.drill


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


# -- a full disk still drains ----------------------------------------------------


def full_disk_drill(where: Path, spare: Path, smtp: FaultySMTPServer, body: int) -> dict[str, int]:
    """Fill the queue on the (small) file system ``where`` through the site's backend
    until it refuses mail and the fallback store on ``spare`` takes it; then flush
    both with the standalone command. Returns the figures; prints them."""
    main = f"sqlite:///{where}/queue.db"
    fallback = f"sqlite:///{spare}/fallback.db"
    settings = {"STORE": main, "FALLBACK_STORE": fallback}
    text = "x" * body
    sent = 0
    with override_settings(MAILQUEUE=settings), make_store(fallback) as spill:
        backend = EmailBackend()
        # Until the fallback has taken some: the main store refused them.
        while spill.stats(time.time()).ready < 10:
            message = EmailMessage(f"drill {sent}", text, "site@example.com", ["r@example.com"])
            assert backend.send_messages([message]) == 1
            sent += 1
        spilled = spill.stats(time.time()).ready
    with make_store(main) as store:
        with pytest.raises(StoreUnavailable, match="full"):  # (a smaller one may still fit)
            store.enqueue([make_record(time.time(), data=os.urandom(2 * body))])
        queued = store.stats(time.time()).ready
    started = time.monotonic()
    results = finish(start_flushers(main, smtp.port, 1))
    drained = time.monotonic() - started
    assert results[0][0] == 0, results
    with make_store(main) as store:
        stats = store.stats(time.time())
        assert (stats.ready, stats.in_flight, stats.stuck, stats.dead) == (0, 0, 0, 0)
        reserve_back = os.path.exists(f"{where}/queue.db-reserve")
        store.enqueue([make_record(time.time())])  # the drained room takes mail again
        store.fetch_due(time.time(), 10, 300)  # (and leaves it in flight: not a drill mail)
    assert finish(start_flushers(fallback, smtp.port, 1))[0][0] == 0
    lost, duplicates = tally(
        f"sqlite on a full {where.name} tmpfs: {queued} queued before the disk refused mail, "
        f"{spilled} to the fallback; drained in {drained:.1f} s, reserve back: {reserve_back}",
        sent,
        smtp.messages,
    )
    return {
        "sent": sent,
        "queued": queued,
        "spilled": spilled,
        "lost": lost,
        "duplicates": duplicates,
        "reserve_back": int(reserve_back),
    }


def test_a_full_disk_drains_to_zero_through_smtp(tmp_path, smtp):
    with small_tmpfs("24m") as where:
        figures = full_disk_drill(where, tmp_path, smtp, body=40_000)
    assert figures["queued"] > 200
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    assert figures["spilled"] == 10
    assert figures["reserve_back"]


if __name__ == "__main__":
    # A bigger drill than the suite runs: python -m tests.test_drills_sqlite --size 256m
    import argparse
    import tempfile

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    parser = argparse.ArgumentParser(description="SQLite queue on a full tmpfs drains (root)")
    parser.add_argument("--size", default="256m", help="tmpfs size (mount -o size=)")
    parser.add_argument("--body", type=int, default=4000, help="message body in bytes")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as spare,
        FaultySMTPServer() as server,
        small_tmpfs(args.size) as where,
    ):
        print(full_disk_drill(where, Path(spare), server, args.body))
